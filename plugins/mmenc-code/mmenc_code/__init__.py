"""UniXcoder on mmenc's shared trunk: code and AST modalities, tokenizers, model, converter."""
