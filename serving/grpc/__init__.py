"""The gRPC edge: protobuf <-> plain objects. The only place that imports protobuf."""
