"""ALBEF checkpoints (``{'model': state_dict}`` of salesforce/ALBEF) -> :class:`ALBEFEncoder`.

The pre-training checkpoint (ALBEF.pth, ALBEF_4M.pth) holds the online encoders, which the model
runs, and the momentum copies (``*_m``), queues and temperature, which it keeps for continued
pre-training; the ITM head is kept whenever the checkpoint has one (retrieval checkpoints
re-rank with it). Sizes are read from the tensors; the head counts and ``fusion_layer`` are not
recoverable from shapes and default to the official values (64-wide heads, 12 - 6 split) unless
``vision_heads`` / ``text_heads`` / ``fusion_layer`` are given. Downstream checkpoints (retrieval,
VQA) that name the text encoder ``text_encoder.`` instead of ``text_encoder.bert.`` load too.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from mmenc.batch import TokenBatch
from mmenc.checkpoint import fit_state_dict, read_foreign
from mmenc.errors import CheckpointError
from mmenc.keymaps.hf_text import (
    ConvertedStateDict,
    apply_key_map,
    convert_hf_text_state_dict,
    expand_rows,
)
from mmenc.keymaps.timm_vit import convert_timm_vit_state_dict
from torch import Tensor

if TYPE_CHECKING:
    from mmenc_vl.albef import ALBEFEncoder

log = logging.getLogger(__name__)

# BERT fusion layers (index counted from fusion_layer) -> the cross-attention fusion's trunk
FUSION_KEY_MAP: list[tuple[str, str, str]] = [
    ("layer.{i}.attention.self.{query,key,value}", "trunk.layers.{i}.attn.qkv", "qkv"),
    ("layer.{i}.attention.output.dense", "trunk.layers.{i}.attn.out", "copy"),
    ("layer.{i}.attention.output.LayerNorm", "trunk.layers.{i}.attn_norm", "copy"),
    ("layer.{i}.crossattention.self.query", "trunk.layers.{i}.cross_attn.q", "copy"),
    ("layer.{i}.crossattention.self.{key,value}", "trunk.layers.{i}.cross_attn.kv", "qkv"),
    ("layer.{i}.crossattention.output.dense", "trunk.layers.{i}.cross_attn.out", "copy"),
    ("layer.{i}.crossattention.output.LayerNorm", "trunk.layers.{i}.cross_norm", "copy"),
    ("layer.{i}.intermediate.dense", "trunk.layers.{i}.ffn.fc1", "copy"),
    ("layer.{i}.output.dense", "trunk.layers.{i}.ffn.fc2", "copy"),
    ("layer.{i}.output.LayerNorm", "trunk.layers.{i}.ffn_norm", "copy"),
]
MLM_KEYS: dict[str, str] = {
    "cls.predictions.transform.dense.weight": "mlm_head.dense.weight",
    "cls.predictions.transform.dense.bias": "mlm_head.dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm_head.norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm_head.norm.bias",
    "cls.predictions.bias": "mlm_head.bias",
}
# tied to the word embeddings / predictions.bias
_TIED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


# without the MLM head (a downstream checkpoint) the model is built for inference only
_TRAINING_STATE = re.compile(r"^(visual_encoder_m|text_encoder_m|vision_proj_m|text_proj_m)\.|"
                             r"^(itm_head\.(weight|bias)|temp|image_queue|text_queue|idx_queue|"
                             r"queue_ptr)$")


def _layers(sd: Mapping[str, Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.")
    found = [int(m.group(1)) for k in sd if (m := pattern.match(k))]
    if not found:
        raise ValueError(f"no {prefix}* keys")
    return 1 + max(found)


def _sub(sd: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _text_prefix(sd: Mapping[str, Tensor], encoder: str) -> str:
    return f"{encoder}.bert." if f"{encoder}.bert.embeddings.word_embeddings.weight" in sd \
        else f"{encoder}."


def albef_config_from_state_dict(sd: Mapping[str, Tensor], tokenizers: dict[str, Any],
                                 vision_heads: int | None = None, text_heads: int | None = None,
                                 fusion_layer: int | None = None,
                                 image_size: int | None = None) -> dict[str, Any]:
    """The mmenc configuration of an ALBEF state dict."""
    from mmenc_vl.recipes import albef_config, vit_tower

    tp = _text_prefix(sd, "text_encoder")
    vdim, _, patch, _ = sd["visual_encoder.patch_embed.proj.weight"].shape
    grid = math.isqrt(sd["visual_encoder.pos_embed"].shape[1] - 1)
    vision = vit_tower(vdim, _layers(sd, "visual_encoder.blocks."), vision_heads or vdim // 64,
                       sd["visual_encoder.blocks.0.mlp.fc1.weight"].shape[0], grid * patch, patch)
    words = sd[f"{tp}embeddings.word_embeddings.weight"]
    vocab, dim = words.shape
    depth = _layers(sd, f"{tp}encoder.layer.")
    if fusion_layer is None:
        crossed = [i for i in range(depth)
                   if f"{tp}encoder.layer.{i}.crossattention.self.query.weight" in sd]
        fusion_layer = min(crossed) if crossed else depth // 2
    positions = sd[f"{tp}embeddings.position_embeddings.weight"].shape[0]
    cfg = albef_config(fusion_layer, depth - fusion_layer, dim, text_heads or max(dim // 64, 1),
                       sd[f"{tp}encoder.layer.0.intermediate.dense.weight"].shape[0], vision,
                       sd["vision_proj.weight"].shape[0], vocab_size=vocab,
                       max_length=positions - 2, text_tok=tokenizers["text"],
                       image_tok=tokenizers.get("image"),
                       pretraining=all(k in sd for k in ("itm_head.weight", "temp", "image_queue",
                                                         "text_encoder.cls.predictions.bias")),
                       queue_size=int(sd["image_queue"].shape[1]) if "image_queue" in sd else 65536)
    cfg["itm_head"] = "itm_head.weight" in sd  # retrieval checkpoints re-rank with it
    cfg["towers"]["text"]["max_positions"] = positions
    types = sd[f"{tp}embeddings.token_type_embeddings.weight"]
    cfg["towers"]["text"]["type_vocab_size"] = types.shape[0]
    if image_size:
        cfg["tokenizers"]["image"]["size"] = int(image_size)
    return cfg


def _encoders(sd: Mapping[str, Tensor], cfg: dict[str, Any], suffix: str,
              target: str) -> tuple[dict[str, Tensor], set[str]]:
    """Map one set of encoders (online: suffix "", momentum: "_m") to ``target`` + module."""
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    vp = f"visual_encoder{suffix}."
    vit = _sub(sd, vp)
    converted = convert_timm_vit_state_dict(vit)
    out.update({f"{target}towers.image.{k}": v for k, v in converted.items()})
    used |= {vp + k for k in vit}
    tp = _text_prefix(sd, f"text_encoder{suffix}")
    f = int(cfg["towers"]["text"]["trunk"]["depth"])
    depth = f + int(cfg["fusion"]["depth"])
    text = _sub(sd, tp)
    uni = {k: v for k, v in text.items()
           if not k.startswith("encoder.layer.") or int(k.split(".")[2]) < f}
    hf_cfg = {"num_hidden_layers": f, "position_embedding_type": "absolute"}
    text_conv = convert_hf_text_state_dict(uni, hf_cfg)
    out.update({f"{target}towers.text.{k}": v for k, v in text_conv.items()
                if not k.startswith("pooler.")})
    fusion_src = {}
    for k, v in text.items():
        if k.startswith("encoder.layer."):
            i = int(k.split(".")[2])
            if i >= f:
                fusion_src[f"layer.{i - f}." + k.split(".", 3)[3]] = v
    fused, fused_used = apply_key_map(fusion_src, expand_rows(FUSION_KEY_MAP, depth - f))
    out.update({f"{target}fusion.{k}": v for k, v in fused.items()})
    unused_fusion = sorted(set(fusion_src) - fused_used)
    if unused_fusion:
        raise ValueError(f"no mapping for fusion-layer keys of {tp}: {unused_fusion}")
    benign = ("embeddings.position_ids", "embeddings.token_type_ids", "pooler.")
    used |= {tp + k for k in uni if k not in text_conv.ignored or k.startswith(benign)}
    used |= {f"{tp}encoder.layer.{int(k.split('.')[1]) + f}.{k.split('.', 2)[2]}"
             for k in fusion_src}
    for side, name in (("image", "vision_proj"), ("text", "text_proj")):
        for p in ("weight", "bias"):
            key = f"{name}{suffix}.{p}"
            if key in sd:
                out[f"{target}proj.{side}.{p}"] = sd[key]
                used.add(key)
    head = f"text_encoder{suffix}."
    for src, dst in MLM_KEYS.items():
        if head + src in sd:
            used.add(head + src)
            out[target + dst] = sd[head + src]
    used |= {head + k for k in _TIED if head + k in sd}
    return out, used


def convert_albef_state_dict(sd: Mapping[str, Tensor], cfg: dict[str, Any]) -> ConvertedStateDict:
    """Map an ALBEF state dict onto :class:`ALBEFEncoder` keys.

    Raises:
        ValueError: for a key that no row maps.
    """
    converted, used = _encoders(sd, cfg, "", "")
    if cfg.get("pretraining"):
        momentum, used_m = _encoders(sd, cfg, "_m", "momentum.")
        converted.update(momentum)
        used |= used_m
        for key in ("image_queue", "text_queue", "queue_ptr", "temp"):
            converted[key] = sd[key].reshape(()) if key == "temp" else sd[key]
            used.add(key)
    if cfg.get("itm_head", cfg.get("pretraining")):
        for p in ("weight", "bias"):
            converted[f"itm_head.{p}"] = sd[f"itm_head.{p}"]
            used.add(f"itm_head.{p}")
    ignored = sorted(k for k in sd if k not in used and (
        k.endswith("position_ids") or (not cfg.get("pretraining") and _TRAINING_STATE.match(k))))
    unmapped = sorted(k for k in sd if k not in used and k not in ignored)
    if unmapped:
        raise ValueError(f"no mapping for checkpoint keys: {unmapped[:20]}")
    return ConvertedStateDict(converted, ignored)


def convert_albef(src: Path, vision_heads: int | None = None, text_heads: int | None = None,
                  fusion_layer: int | None = None, tokenizer: str | Path | None = None,
                  image_size: int | None = None) -> ALBEFEncoder:
    """An ALBEF ``.pth`` (``{'model': state_dict}``) -> ``ALBEFEncoder`` (recipe ``albef-base``).

    Args:
        src: the checkpoint file.
        vision_heads, text_heads: attention heads (default: width // 64, as ViT-B and BERT-base).
        fusion_layer: first BERT layer with cross-attention (default: the first layer whose
            ``crossattention`` keys are present).
        tokenizer: a folder with ``vocab.txt`` (bert-base-uncased) or ``tokenizer.json``.
        image_size: the image tokenizer's resolution (default: the checkpoint's).
    """
    from mmenc.builtin.text import hf_tokenizer_config

    from mmenc_vl.albef import build_albef

    src = Path(src)
    if not src.is_file():
        raise CheckpointError(f"{src}: expected an ALBEF .pth file")
    container = read_foreign(src)
    sd = container.get("model") if isinstance(container, dict) and "model" in container \
        else container
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{src}: not {{'model': state_dict}} or a state dict of tensors")
    tok_dir = Path(tokenizer) if tokenizer else src.parent
    try:
        positions = next(v.shape[0] for k, v in sd.items()
                         if k.endswith("embeddings.position_embeddings.weight"))
        text_tok = {"tokenizer": "text", **hf_tokenizer_config(tok_dir, positions - 2, 0)}
        if text_tok.get("kind") != "none":  # ALBEF cleans every caption before BERT's tokenizer
            text_tok["clean"] = "albef-caption"
        cfg = albef_config_from_state_dict(sd, {"text": text_tok}, vision_heads, text_heads,
                                           fusion_layer, image_size)
        converted = convert_albef_state_dict(sd, cfg)
    except (KeyError, ValueError, StopIteration) as exc:
        raise CheckpointError(f"{src}: {exc}") from None
    cfg["source"] = {"format": "albef", "path": str(src)}
    model = build_albef(cfg, directory=tok_dir)
    model.recipe = "albef-base"
    fit_state_dict(model, converted, source=str(src))
    return model.eval()


def albef_options(fixture: dict[str, Any]) -> dict[str, Any]:
    """Converter options of a fixture: head counts and fusion_layer from its configs."""
    bert = fixture.get("bert_config", {})
    vit = fixture.get("vit_override", {})
    out: dict[str, Any] = {}
    if "num_heads" in vit:
        out["vision_heads"] = int(vit["num_heads"])
    if "num_attention_heads" in bert:
        out["text_heads"] = int(bert["num_attention_heads"])
    if "fusion_layer" in bert:
        out["fusion_layer"] = int(bert["fusion_layer"])
    return out


def run_albef(model: ALBEFEncoder, inputs: dict[str, Tensor],
              fixture: dict[str, Any]) -> dict[str, Tensor]:
    """Fixture outputs of ALBEF's pre-training model (see the fixture's output_definitions)."""
    from mmenc_vl.albef import interpolated_positions

    text = TokenBatch(ids=inputs["input_ids"], mask=inputs["attention_mask"].bool(), pad_id=0)
    image = TokenBatch(values=inputs["image"])
    image_f = model.forward_features(image, "image")
    text_f = model.forward_features(text, "text")
    fused = model.fusion({"text": text_f, "image": image_f})["text"].hidden
    image_feat = F.normalize(model.proj["image"](image_f.hidden[:, 0]), dim=-1)
    text_feat = F.normalize(model.proj["text"](text_f.hidden[:, 0]), dim=-1)
    out = {"image_embeds": image_f.hidden, "text_embeds": text_f.hidden,
           "image_feat": image_feat, "text_feat": text_feat, "fusion_embeds": fused,
           "multi_modal_embeds": model.forward_fused({"text": text, "image": image})["text"].hidden}
    if model.itm_head is not None:
        out["itm_logits"] = model.itm_head(fused[:, 0])
    if model.pretraining:
        out["sim_i2t"] = image_feat @ text_feat.T / model.temp
        out["image_embeds_m"] = model._tower(image, "image", momentum=True).hidden
    if "image_hires" in inputs:
        hires = inputs["image_hires"]
        out["image_embeds_hires"] = model.forward_features(TokenBatch(values=hires), "image").hidden
        out["pos_embed_interpolated"] = interpolated_positions(model, hires.shape[-1])
    return out
