"""timm ``VisionTransformer`` checkpoints -> ``mmenc.nn.VisionTransformer``.

    cfg = vit_config_from_timm(sd, heads=12)       # shapes come from the state dict
    model = build_vision_transformer(cfg)
    load_converted(model, convert_timm_vit_state_dict(sd))

``load_timm_vit(sd, heads)`` does all three. The head count is not recoverable from shapes, so it
is an argument. Supported: the classic ViT (class token, learned positions, pre-norm blocks,
final norm); register tokens, layer scale and q/k norms are refused rather than dropped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from torch import Tensor

from mmenc.keymaps.hf_text import ConvertedStateDict, apply_key_map, expand_rows, load_converted
from mmenc.nn import TrunkConfig, VisionEmbeddings, VisionTransformer, build_trunk

log = logging.getLogger(__name__)

__all__ = [
    "TIMM_VIT_KEY_MAP",
    "build_vision_transformer",
    "convert_timm_vit_state_dict",
    "load_converted",
    "load_timm_vit",
    "vit_config_from_timm",
]

# (timm module, mmenc module, how); "{i}" is the block index. Parameters that are not modules
# (cls_token, pos_embed) are mapped by name in convert_timm_vit_state_dict.
TIMM_VIT_KEY_MAP: list[tuple[str, str, str]] = [
    ("patch_embed.proj", "embeddings.patch", "copy"),
    ("norm_pre", "embeddings.norm", "copy"),
    ("blocks.{i}.norm1", "trunk.layers.{i}.attn_norm", "copy"),
    ("blocks.{i}.attn.qkv", "trunk.layers.{i}.attn.qkv", "copy"),  # timm already fuses q/k/v
    ("blocks.{i}.attn.proj", "trunk.layers.{i}.attn.out", "copy"),
    ("blocks.{i}.norm2", "trunk.layers.{i}.ffn_norm", "copy"),
    ("blocks.{i}.mlp.fc1", "trunk.layers.{i}.ffn.fc1", "copy"),
    ("blocks.{i}.mlp.fc2", "trunk.layers.{i}.ffn.fc2", "copy"),
    ("norm", "trunk.final_norm", "copy"),
]
TIMM_VIT_PARAMS: dict[str, str] = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position.weight",  # [1 n d] in timm, [n d] in mmenc
}
_HEAD_PREFIXES = ("head.", "fc_norm.", "head_drop.")


def _depth(sd: Mapping[str, Tensor]) -> int:
    return 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))


def vit_config_from_timm(sd: Mapping[str, Tensor], heads: int, eps: float = 1e-6) -> dict[str, Any]:
    """The mmenc vision config for a timm ViT state dict.

    Args:
        sd: the timm state dict.
        heads: attention heads (not recoverable from shapes).
        eps: LayerNorm epsilon (timm's ViTs use 1e-6).

    Returns:
        ``{"trunk": asdict(TrunkConfig), "image_size": ..., ...}``, JSON-serialisable.
    """
    for key in sd:
        if key == "reg_token" or ".ls1." in key or ".q_norm." in key:
            raise ValueError(f"unsupported timm ViT variant (found {key!r})")
    dim, in_chans, patch, _ = sd["patch_embed.proj.weight"].shape
    class_token = "cls_token" in sd
    grid = math.isqrt(sd["pos_embed"].shape[1] - int(class_token))
    trunk = TrunkConfig(
        dim=dim,
        depth=_depth(sd),
        heads=heads,
        ffn_dim=sd["blocks.0.mlp.fc1.weight"].shape[0],
        norm="pre",
        activation="gelu",
        eps=eps,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        final_norm="norm.weight" in sd,
    )
    return {
        "trunk": asdict(trunk),
        "image_size": grid * patch,
        "patch_size": patch,
        "in_chans": in_chans,
        "class_token": class_token,
        "pre_norm": "norm_pre.weight" in sd,
        "patch_bias": "patch_embed.proj.bias" in sd,
        "antialias": True,  # timm resamples positions with the antialiased bicubic kernel
    }


def build_vision_transformer(cfg: Mapping[str, Any]) -> VisionTransformer:
    """Build a ``VisionTransformer`` from an mmenc vision config (see ``vit_config_from_timm``)."""
    trunk_cfg = TrunkConfig(**cfg["trunk"])
    embeddings = VisionEmbeddings(
        image_size=cfg["image_size"],
        patch_size=cfg["patch_size"],
        dim=trunk_cfg.dim,
        in_chans=cfg["in_chans"],
        class_token=cfg["class_token"],
        pre_norm=cfg["pre_norm"],
        patch_bias=cfg["patch_bias"],
        eps=trunk_cfg.eps,
        antialias=cfg.get("antialias", False),
    )
    return VisionTransformer(embeddings, build_trunk(trunk_cfg))


def convert_timm_vit_state_dict(sd: Mapping[str, Tensor]) -> ConvertedStateDict:
    """Map a timm ViT state dict onto ``VisionTransformer`` keys.

    Returns:
        the converted tensors; ``.ignored`` lists the classifier keys left out (``head.*``,
        ``fc_norm.*``).

    Raises:
        ValueError: for a backbone key that no row maps.
    """
    converted, used = apply_key_map(sd, expand_rows(TIMM_VIT_KEY_MAP, _depth(sd)))
    for src, dst in TIMM_VIT_PARAMS.items():
        if src in sd:
            converted[dst] = (
                sd[src].reshape(-1, sd[src].shape[-1]) if src == "pos_embed" else sd[src]
            )
            used.add(src)
    ignored = [k for k in sd if k not in used and k.startswith(_HEAD_PREFIXES)]
    unmapped = [k for k in sd if k not in used and not k.startswith(_HEAD_PREFIXES)]
    if unmapped:
        raise ValueError(f"no mapping for checkpoint keys: {sorted(unmapped)}")
    if ignored:
        log.info("ignored %d checkpoint keys: %s", len(ignored), ", ".join(sorted(ignored)))
    return ConvertedStateDict(converted, ignored)


def load_timm_vit(sd: Mapping[str, Tensor], heads: int, eps: float = 1e-6) -> VisionTransformer:
    """Build a ``VisionTransformer`` for a timm ViT checkpoint and load it (eval mode)."""
    model = build_vision_transformer(vit_config_from_timm(sd, heads, eps))
    load_converted(model, convert_timm_vit_state_dict(sd))
    return model.eval()
