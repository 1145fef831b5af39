"""Rankers: score a batch of candidates; cutting the list is the pipeline's decision."""
