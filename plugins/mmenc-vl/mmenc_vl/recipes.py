"""Configurations of the vision-text recipes."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from mmenc.builtin.recipes import image_tokenizer, text_tokenizer, text_tower
from mmenc.nn import TrunkConfig


def clip_vision_tower(dim: int, depth: int, heads: int, ffn_dim: int, image_size: int,
                      patch_size: int, eps: float = 1e-5) -> dict[str, Any]:
    """A CLIP ViT tower (ln_pre, QuickGELU, bias-free patches) without ``ln_post``, which the
    bridge fusion applies to every bridged layer."""
    trunk = TrunkConfig(dim=dim, depth=depth, heads=heads, ffn_dim=ffn_dim, norm="pre",
                        activation="quick_gelu", eps=eps, final_norm=False)
    return {"kind": "vision", "trunk": asdict(trunk), "image_size": image_size,
            "patch_size": patch_size, "in_chans": 3, "class_token": True, "pre_norm": True,
            "patch_bias": False}


def bridge(dim: int, depth: int, heads: int, ffn_dim: int, pooler: bool = True,
           eps: float = 1e-5) -> dict[str, Any]:
    return {"name": "bridge", "dim": dim, "depth": depth, "heads": heads, "ffn_dim": ffn_dim,
            "eps": eps, "activation": "gelu", "order": ["text", "image"],
            "post_norm": ["image"], "post_norm_eps": eps, "link": "add", "pooler": pooler}


def bridgetower_config(text: dict[str, Any], vision: dict[str, Any], fusion: dict[str, Any],
                       text_tok: dict[str, Any], image_tok: dict[str, Any],
                       embed_dim: int | None, mask_token_id: int | None = None,
                       special_token_ids: list[int] | None = None) -> dict[str, Any]:
    """BridgeTower (see :class:`mmenc_vl.configs.BridgeTowerConfig`). The MLM ids of the text
    tokenizer, when given, are written out; else they are read from the tokenizer."""
    config = {"towers": {"text": text, "image": vision},
              "tokenizers": {"text": text_tok, "image": image_tok},
              "pooling": {"text": "cls", "image": "cls"}, "embed_dim": embed_dim,
              "fusion": fusion}
    if mask_token_id is not None:
        config["mask_token_id"] = mask_token_id
    if special_token_ids is not None:
        config["special_token_ids"] = special_token_ids
    return config


# BridgeTower/bridgetower-base: RoBERTa-base, CLIP ViT-B/16 at 288 px, 6 cross-modal layers
BRIDGETOWER_BASE = bridgetower_config(
    {**text_tower(768, 12, 12, 3072, vocab_size=50265, max_length=512, pooler=False),
     "dropout": 0.1},
    clip_vision_tower(768, 12, 12, 3072, image_size=288, patch_size=16),
    {**bridge(768, 6, 12, 3072), "dropout": 0.1, "attn_dropout": 0.1},
    text_tokenizer(512), image_tokenizer(288), 256,
    mask_token_id=50264, special_token_ids=[0, 1, 2],  # roberta-base: <mask>; <s>, <pad>, </s>
)
# pooler-free so that every parameter takes part in embed / forward_fused (the contract checks)
BRIDGETOWER_TINY = bridgetower_config(
    text_tower(32, 3, 2, 64, max_length=64),
    clip_vision_tower(32, 3, 2, 64, image_size=32, patch_size=8),
    bridge(32, 2, 2, 64, pooler=False),
    text_tokenizer(64), image_tokenizer(32), 32,
    mask_token_id=4, special_token_ids=[0, 1, 2],  # byte-level: <mask>; <s>, <pad>, </s>
)


def albef_config(text_layers: int, fusion_layers: int, text_dim: int, heads: int, ffn_dim: int,
                 vision: dict[str, Any], embed_dim: int, vocab_size: int = 30522,
                 max_length: int = 510, text_tok: dict[str, Any] | None = None,
                 image_tok: dict[str, Any] | None = None, pretraining: bool = True,
                 queue_size: int = 65536,
                 special_ids: tuple[int, int, int] = (0, 101, 103)) -> dict[str, Any]:
    """ALBEF: BERT layers split into ``text_layers`` uni-modal and ``fusion_layers`` fusion
    layers, a timm-style ViT (eps 1e-6), projections to ``embed_dim``. ``special_ids`` are the
    pad, CLS and mask ids of the text tokenizer (bert-base-uncased: 0, 101, 103)."""
    text = {**text_tower(text_dim, text_layers, heads, ffn_dim, vocab_size=vocab_size,
                         max_length=max_length, pad_id=0, eps=1e-12),
            "padding_aware_positions": False, "type_vocab_size": 2,
            "max_positions": max_length + 2}
    size = vision["image_size"]
    return {
        "towers": {"text": text, "image": vision},
        "tokenizers": {"text": text_tok or text_tokenizer(max_length),
                       "image": image_tok or {**image_tokenizer(size), "resize": "square"}},
        "embed_dim": embed_dim,
        "fusion": {"name": "cross-attention", "depth": fusion_layers, "heads": heads,
                   "ffn_dim": ffn_dim, "query": "text", "context": "image", "norm": "post",
                   "eps": 1e-12, "activation": "gelu"},
        "pretraining": pretraining, "temp": 0.07, "queue_size": queue_size,
        "momentum": 0.995, "alpha": 0.4, "mlm_probability": 0.15,
        "pad_token_id": special_ids[0], "cls_token_id": special_ids[1],
        "mask_token_id": special_ids[2],
    }


def vit_tower(dim: int, depth: int, heads: int, ffn_dim: int, image_size: int,
              patch_size: int) -> dict[str, Any]:
    """timm's ViT as ALBEF builds it: pre-norm, LayerNorm eps 1e-6, final norm; positions
    resized with the plain (not antialiased) bicubic kernel."""
    trunk = TrunkConfig(dim=dim, depth=depth, heads=heads, ffn_dim=ffn_dim, norm="pre",
                        eps=1e-6, final_norm=True)
    return {"kind": "vision", "trunk": asdict(trunk), "image_size": image_size,
            "patch_size": patch_size, "in_chans": 3, "class_token": True, "pre_norm": False,
            "patch_bias": True, "antialias": False}


# ALBEF.pth / ALBEF_4M.pth: ViT-B/16 at 256 px, BERT-base with fusion_layer 6, embed_dim 256
ALBEF_BASE = albef_config(6, 6, 768, 12, 3072, vit_tower(768, 12, 12, 3072, 256, 16), 256,
                          text_tok={**text_tokenizer(510),
                                    "clean": "albef-caption"})
# without the pre-training heads so that every parameter takes part in embed / forward_fused
ALBEF_TINY = albef_config(2, 2, 32, 2, 64, vit_tower(48, 2, 2, 96, 32, 8), 16,
                          vocab_size=261, max_length=64, text_tok=text_tokenizer(64),
                          pretraining=False, queue_size=8,
                          special_ids=(1, 0, 4))  # byte-level: <pad>, <s>, <mask>
