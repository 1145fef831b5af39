"""The online runtime: request pipeline, filters, bundle loading, and the thin gRPC edge."""
