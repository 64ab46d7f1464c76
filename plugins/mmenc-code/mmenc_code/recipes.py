"""Configurations of the code recipes."""

from __future__ import annotations

from typing import Any

from mmenc.builtin.recipes import text_tower


def unixcoder_config(dim: int, depth: int, heads: int, ffn_dim: int, vocab_size: int,
                     max_length: int = 256, views: tuple[str, ...] = ("code", "text", "ast"),
                     kind: str = "bytes", embed_dim: int | None = None,
                     positions: int | None = None, type_vocab_size: int = 10,
                     pooler: bool = False) -> dict[str, Any]:
    """A UniXcoder config: RoBERTa encoder (padding-aware positions from 2, eps 1e-5,
    exact GELU) and one tokenizer per view. ``pooler``: RoBERTa's pooler, which the
    official checkpoint carries and the UniXcoder objectives never train."""
    encoder = text_tower(dim, depth, heads, ffn_dim, vocab_size=vocab_size,
                         max_length=(positions or max_length + 2) - 2, pad_id=1, pooler=pooler)
    encoder["type_vocab_size"] = type_vocab_size
    names = {"code": "unixcoder", "text": "unixcoder-text", "ast": "unixcoder-ast"}
    tokenizers = {v: {"tokenizer": names[v], "kind": kind, "mode": "<encoder-only>",
                      "max_length": max_length} for v in views}
    return {"encoder": encoder, "tokenizers": tokenizers, "embed_dim": embed_dim}


# the published microsoft/unixcoder-base: vocabulary 51416, 1026 positions, 10 token types
UNIXCODER_BASE = unixcoder_config(768, 12, 12, 3072, 51416, max_length=512, positions=1026,
                                  pooler=True)
# byte-level vocabulary (special tokens + AST markers + 256 bytes) fits in 1024 rows
UNIXCODER_TINY = unixcoder_config(32, 2, 2, 64, 1024, max_length=64)
