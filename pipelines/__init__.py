"""Data, event log, the nightly job and evaluation protocols. Orchestrates; holds no model logic."""
