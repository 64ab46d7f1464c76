"""Configurations of the BEATs recipes."""

from __future__ import annotations

from mmenc_audio.model import beats_config

BEATS_BASE = beats_config()
BEATS_TOKENIZER = beats_config(quantizer={"num_codes": 1024, "code_dim": 256})
_TINY = dict(dim=32, depth=2, heads=2, ffn_dim=64, patch_dim=16, conv_pos=4, conv_pos_groups=4,
             num_buckets=32, max_distance=64)
BEATS_TINY = beats_config(**_TINY)
BEATS_TOKENIZER_TINY = beats_config(**_TINY, quantizer={"num_codes": 32, "code_dim": 8})


def audio_text_config(audio: dict[str, object], text: dict[str, object],
                      embed_dim: int = 64, max_seconds: float | None = 8.0,
                      text_length: int = 64) -> dict[str, object]:
    """An ``audio-text`` configuration: ``audio`` a :func:`beats_config`, ``text`` a
    ``mmenc.builtin.recipes.text_tower``."""
    from mmenc.builtin.recipes import text_tokenizer

    tower = {"kind": "beats", **{k: v for k, v in audio.items() if k != "tokenizers"}}
    fbank = {**audio["tokenizers"]["audio"], "max_seconds": max_seconds}  # type: ignore[index]
    return {"towers": {"audio": tower, "text": text},
            "tokenizers": {"audio": fbank, "text": text_tokenizer(text_length)},
            "pooling": {"audio": "mean", "text": "mean"}, "embed_dim": embed_dim,
            "fusion": {"name": "dual"}}


def _audio_text_tiny() -> dict[str, object]:
    from mmenc.builtin.recipes import text_tower

    return audio_text_config(beats_config(**_TINY), text_tower(32, 2, 2, 64, max_length=64),
                             embed_dim=32)


AUDIO_TEXT_TINY = _audio_text_tiny()
