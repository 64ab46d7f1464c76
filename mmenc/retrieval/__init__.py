"""Zero-shot retrieval: similarity, search and evaluation metrics."""
