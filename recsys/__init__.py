"""Core of the recommender: typed configuration, model bundles, the command line."""

__version__ = "0.1.0"
