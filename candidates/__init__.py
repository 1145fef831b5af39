"""Candidate generators: each trains offline, saves into the bundle, and answers at runtime."""
