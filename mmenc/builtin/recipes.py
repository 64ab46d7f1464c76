"""Configurations of the built-in recipes: a new size is one small function call."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from mmenc.builtin.image import CLIP_MEAN, CLIP_STD
from mmenc.nn import TrunkConfig

BYTE_VOCAB = 261  # 5 special tokens + 256 bytes (mmenc.builtin.text._byte_level_tokenizer)


def text_tower(dim: int, depth: int, heads: int, ffn_dim: int, vocab_size: int = BYTE_VOCAB,
               max_length: int = 128, pad_id: int = 1, eps: float = 1e-5,
               pooler: bool = False) -> dict[str, Any]:
    """A post-norm (BERT/RoBERTa) text tower with RoBERTa's padding-aware positions."""
    trunk = TrunkConfig(dim=dim, depth=depth, heads=heads, ffn_dim=ffn_dim, norm="post",
                        eps=eps, dropout=0.0, attn_dropout=0.0, final_norm=False)
    return {
        "kind": "text",
        "trunk": asdict(trunk),
        "vocab_size": vocab_size,
        "max_positions": max_length + pad_id + 1,
        "type_vocab_size": 1,
        "pad_id": pad_id,
        "position_type": "absolute",
        "padding_aware_positions": True,
        "eps": eps,
        "dropout": 0.0,
        "pooler": pooler,
    }


def vision_tower(dim: int, depth: int, heads: int, ffn_dim: int, image_size: int,
                 patch_size: int, eps: float = 1e-6, pre_norm: bool = False) -> dict[str, Any]:
    """A pre-norm ViT tower with a class token and a final LayerNorm."""
    trunk = TrunkConfig(dim=dim, depth=depth, heads=heads, ffn_dim=ffn_dim, norm="pre", eps=eps,
                        final_norm=True)
    return {
        "kind": "vision",
        "trunk": asdict(trunk),
        "image_size": image_size,
        "patch_size": patch_size,
        "in_chans": 3,
        "class_token": True,
        "pre_norm": pre_norm,
        "patch_bias": True,
    }


def text_tokenizer(max_length: int = 128) -> dict[str, Any]:
    return {"tokenizer": "text", "kind": "bytes", "max_length": max_length}


def image_tokenizer(size: int, resize: str = "shortest") -> dict[str, Any]:
    return {"tokenizer": "image", "size": size, "resize": resize, "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD), "interpolation": "bicubic"}


def towers(towers: dict[str, dict[str, Any]], tokenizers: dict[str, dict[str, Any]],
           pooling: dict[str, str], embed_dim: int | None,
           fusion: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"towers": towers, "tokenizers": tokenizers, "pooling": pooling,
            "embed_dim": embed_dim, "fusion": fusion or {"name": "dual"}}


TINY_TEXT = text_tower(32, 2, 2, 64, max_length=64)
TINY_VISION = vision_tower(32, 2, 2, 64, image_size=32, patch_size=8)

TEXT_TINY = towers({"text": TINY_TEXT}, {"text": text_tokenizer(64)}, {"text": "mean"}, 32)
VIT_TINY = towers({"image": TINY_VISION}, {"image": image_tokenizer(32)}, {"image": "cls"}, 32)
CLIP_TINY = towers({"text": TINY_TEXT, "image": TINY_VISION},
                   {"text": text_tokenizer(64), "image": image_tokenizer(32)},
                   {"text": "mean", "image": "cls"}, 32)
# a tower mmenc did not write: a timm ViT (2 layers, d32, 32 px) beside the tiny text tower
TIMM_VIT_TINY = {"kind": "timm", "model": "vit_tiny_patch16_224",
                 "options": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2,
                             "num_heads": 2}}
CLIP_TIMM_TINY = towers({"text": TINY_TEXT, "image": TIMM_VIT_TINY},
                        {"text": text_tokenizer(64),
                         "image": {**image_tokenizer(32), "mean": [0.5] * 3, "std": [0.5] * 3}},
                        {"text": "mean", "image": "pooler"}, 32)
MERGED_TINY = towers(
    {"text": text_tower(32, 1, 2, 64, max_length=64),
     "image": vision_tower(32, 1, 2, 64, image_size=32, patch_size=8)},
    {"text": text_tokenizer(64), "image": image_tokenizer(32)},
    {"text": "cls", "image": "cls"}, 32,
    fusion={"name": "merged",
            "trunk": asdict(TrunkConfig(dim=32, depth=2, heads=2, ffn_dim=64, norm="pre"))},
)

BERT = towers({"text": {**text_tower(768, 12, 12, 3072, vocab_size=30522, max_length=510,
                                     pad_id=0, eps=1e-12, pooler=True),
                        "padding_aware_positions": False, "type_vocab_size": 2,
                        "max_positions": 512}},
              {"text": text_tokenizer(512)}, {"text": "cls"}, None)
ROBERTA = towers({"text": text_tower(768, 12, 12, 3072, vocab_size=50265, max_length=512,
                                     pooler=True)},
                 {"text": text_tokenizer(512)}, {"text": "cls"}, None)
