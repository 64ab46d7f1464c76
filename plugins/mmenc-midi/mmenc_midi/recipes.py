"""Configurations of the MIDI recipes (plain JSON; no torch needed to list them)."""

from __future__ import annotations

from typing import Any

from mmenc_midi.vocab import load_vocab


def trunk(dim: int, depth: int, heads: int, ffn_dim: int, max_positions: int,
          dropout: float = 0.1, eps: float = 1e-12, activation: str = "gelu") -> dict[str, Any]:
    """Keyword arguments of ``mmenc.nn.TrunkConfig`` for BERT with ``relative_key_query``."""
    return {"dim": dim, "depth": depth, "heads": heads, "ffn_dim": ffn_dim, "norm": "post",
            "activation": activation, "eps": eps, "dropout": dropout, "attn_dropout": dropout,
            "qkv_bias": True, "relative": "key_query", "max_positions": max_positions,
            "final_norm": False}


def midibert(scheme: str, dim: int, depth: int, heads: int, ffn_dim: int, max_len: int,
             emb_dim: int = 256, dropout: float = 0.1, pooler: bool = True,
             pooling: str = "mean", embed_dim: int | None = None,
             eps: float = 1e-12, activation: str = "gelu") -> dict[str, Any]:
    """A MIDI-BERT configuration over the ``cp`` or ``octuple`` dictionary."""
    vocab = load_vocab(scheme)
    tokenizer = "midi-cp" if scheme == "cp" else "midi-octuple"
    return {
        "scheme": scheme,
        "fields": list(vocab.fields),
        "vocab_sizes": list(vocab.sizes),
        "pad_ids": list(vocab.pad_ids),
        "mask_ids": list(vocab.mask_ids),
        "emb_dim": emb_dim,
        "trunk": trunk(dim, depth, heads, ffn_dim, max_len, dropout, eps, activation),
        "dropout": dropout,
        "pooler": pooler,
        "pooling": pooling,
        "embed_dim": embed_dim,
        "tokenizers": {"midi": {"tokenizer": tokenizer, "max_len": max_len}},
    }


MIDIBERT_CP_BASE = midibert("cp", 768, 12, 12, 3072, max_len=512)
ADV_MIDIBERT_OCTUPLE_BASE = midibert("octuple", 768, 12, 12, 3072, max_len=1024)
# tiny: no pooler (the embedding is the mean of the token states, so every weight is trained)
MIDIBERT_CP_TINY = midibert("cp", 32, 2, 2, 64, max_len=64, emb_dim=16, dropout=0.0,
                            pooler=False, embed_dim=32)
ADV_MIDIBERT_OCTUPLE_TINY = midibert("octuple", 32, 2, 2, 64, max_len=64, emb_dim=16,
                                     dropout=0.0, pooler=False, embed_dim=32)


def midi_text(midi_tower: dict[str, Any], text_tower: dict[str, Any],
              text_tokenizer: dict[str, Any], embed_dim: int | None) -> dict[str, Any]:
    """A MIDI <-> text dual encoder (a tower encoder of ``mmenc.builtin.towers`` with a ``midi``
    tower): ``midi_tower`` is a :func:`midibert` configuration (its tokenizer is the MIDI
    tokenizer), both towers are mean-pooled and projected to ``embed_dim``."""
    body = {k: v for k, v in midi_tower.items() if k != "tokenizers"}
    body.update(pooler=False, embed_dim=None, pooling="mean")
    return {"towers": {"midi": {"kind": "midi", **body}, "text": text_tower},
            "tokenizers": {"midi": dict(midi_tower["tokenizers"]["midi"]),
                           "text": text_tokenizer},
            "pooling": {"midi": "mean", "text": "mean"},
            "embed_dim": embed_dim, "fusion": {"name": "dual"}}


def _tiny_midi_text() -> dict[str, Any]:
    from mmenc.builtin.recipes import TINY_TEXT, text_tokenizer

    return midi_text(MIDIBERT_CP_TINY, TINY_TEXT, text_tokenizer(64), 32)


MIDI_TEXT_TINY = _tiny_midi_text()
