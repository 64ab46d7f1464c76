"""Configurations of the BEATs recipes."""

from __future__ import annotations

from mmenc_audio.model import beats_config

BEATS_BASE = beats_config()
BEATS_TOKENIZER = beats_config(quantizer={"num_codes": 1024, "code_dim": 256})
_TINY = dict(dim=32, depth=2, heads=2, ffn_dim=64, patch_dim=16, conv_pos=4, conv_pos_groups=4,
             num_buckets=32, max_distance=64)
BEATS_TINY = beats_config(**_TINY)
BEATS_TOKENIZER_TINY = beats_config(**_TINY, quantizer={"num_codes": 32, "code_dim": 8})
