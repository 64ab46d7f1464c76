"""Built-in modalities, tokenizers, fusions and recipes."""
