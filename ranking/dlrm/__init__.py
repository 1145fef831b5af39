"""The heavy ranker, DLRM: the model, its training, its exports and the ranker that holds them."""
