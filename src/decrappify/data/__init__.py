"""Training data: crappify degradations and the (degraded, clean) pairs a model learns from."""
