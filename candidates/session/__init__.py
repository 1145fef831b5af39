"""Streaming session recommenders (seed 003): sessions, the reservoir and the sample
selection of online updates, and the session models served as generators."""
