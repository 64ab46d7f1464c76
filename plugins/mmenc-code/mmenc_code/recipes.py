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


def code_text_config(code_tower: dict[str, Any], text_tower_: dict[str, Any],
                     code_length: int, text_tokenizer: dict[str, Any],
                     embed_dim: int | None) -> dict[str, Any]:
    """A code-text dual encoder: a code tower reading UniXcoder's tokens, a text tower, both
    mean-pooled (the towers can be warm-started from another model, see ``warm_start``)."""
    from mmenc.builtin.recipes import towers

    return towers({"code": code_tower, "text": text_tower_},
                  {"code": {"tokenizer": "unixcoder", "kind": "bytes",
                            "max_length": code_length},
                   "text": text_tokenizer},
                  {"code": "mean", "text": "mean"}, embed_dim)


def _tiny_code_text() -> dict[str, Any]:
    from mmenc.builtin.recipes import TINY_TEXT, text_tokenizer

    return code_text_config(text_tower(32, 2, 2, 64, vocab_size=1024, max_length=64), TINY_TEXT,
                            64, text_tokenizer(64), 32)


CODE_TEXT_TINY = _tiny_code_text()
