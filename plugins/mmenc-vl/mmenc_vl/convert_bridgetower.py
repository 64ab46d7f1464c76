"""BridgeTower checkpoints -> :class:`~mmenc_vl.bridgetower.BridgeTowerEncoder`.

Sources:
    * an HF folder (``config.json`` with ``model_type: bridgetower`` + ``pytorch_model.bin`` or
      ``model.safetensors``), the format of ``BridgeTower/bridgetower-base``; task models
      (``BridgeTowerFor*``) carry a ``bridgetower.`` prefix and heads: the ITM head
      (``itm_score.fc``, over ``pooler_output``) is kept as ``itm_head``, the MLM head
      (``mlm_score``, over the cross-modal text states) as ``mlm_head``; the contrastive and
      task heads are left out;
    * a research-repo (microsoft/BridgeTower, Lightning) ``.ckpt`` = ``{'state_dict': ...}``
      with ``text_transformer.*`` / ``vit_model.*`` keys. It holds no configuration: pass the
      ``.ckpt`` inside (or next to) a folder whose ``config.json`` describes it, or give
      ``config=PATH``.

Every checkpoint key is mapped by one row of ``BRIDGETOWER_KEY_MAP`` (plus the text tower's
:data:`mmenc.keymaps.hf_text.HF_TEXT_KEY_MAP`); keys deliberately left out are listed in the
returned state dict's ``ignored``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from mmenc.batch import TokenBatch
from mmenc.checkpoint import find_weights, fit_state_dict, read_foreign, read_json
from mmenc.errors import CheckpointError
from mmenc.keymaps.hf_text import (
    HF_ACTIVATIONS,
    ConvertedStateDict,
    apply_key_map,
    convert_hf_text_state_dict,
    expand_rows,
    text_config_from_hf,
)
from torch import Tensor

if TYPE_CHECKING:
    from mmenc_vl.bridgetower import BridgeTowerEncoder

log = logging.getLogger(__name__)

_V = "vision_model.visual."
# (checkpoint module, mmenc module, how); "{i}" runs over the CLIP blocks
VISION_KEY_MAP: list[tuple[str, str, str]] = [
    (f"{_V}embeddings.patch_embedding", "towers.image.embeddings.patch", "copy"),
    (f"{_V}ln_pre", "towers.image.embeddings.norm", "copy"),
    (f"{_V}transformer.resblocks.{{i}}.ln_1", "towers.image.trunk.layers.{i}.attn_norm", "copy"),
    (f"{_V}transformer.resblocks.{{i}}.attn.out_proj", "towers.image.trunk.layers.{i}.attn.out",
     "copy"),
    (f"{_V}transformer.resblocks.{{i}}.ln_2", "towers.image.trunk.layers.{i}.ffn_norm", "copy"),
    (f"{_V}transformer.resblocks.{{i}}.mlp.c_fc", "towers.image.trunk.layers.{i}.ffn.fc1", "copy"),
    (f"{_V}transformer.resblocks.{{i}}.mlp.c_proj", "towers.image.trunk.layers.{i}.ffn.fc2",
     "copy"),
    (f"{_V}ln_post", "fusion.post_norm.image", "copy"),
]
# nn.MultiheadAttention packs q, k, v rows in one tensor, as mmenc's qkv Linear does
VISION_PARAMS: dict[str, str] = {
    f"{_V}embeddings.position_embedding.weight": "towers.image.embeddings.position.weight",
    f"{_V}transformer.resblocks.{{i}}.attn.in_proj_weight":
        "towers.image.trunk.layers.{i}.attn.qkv.weight",
    f"{_V}transformer.resblocks.{{i}}.attn.in_proj_bias":
        "towers.image.trunk.layers.{i}.attn.qkv.bias",
}
# "{s}" is the side (text / image), "{i}" the cross-modal layer
CROSS_KEY_MAP: list[tuple[str, str, str]] = [
    ("cross_modal_{s}_layers.{i}.attention.self.{query,key,value}",
     "fusion.layers.{s}.{i}.attn.qkv", "qkv"),
    ("cross_modal_{s}_layers.{i}.attention.output.dense", "fusion.layers.{s}.{i}.attn.out", "copy"),
    ("cross_modal_{s}_layers.{i}.attention.output.LayerNorm", "fusion.layers.{s}.{i}.attn_norm",
     "copy"),
    ("cross_modal_{s}_layers.{i}.crossattention.self.query", "fusion.layers.{s}.{i}.cross_attn.q",
     "copy"),
    ("cross_modal_{s}_layers.{i}.crossattention.self.{key,value}",
     "fusion.layers.{s}.{i}.cross_attn.kv", "qkv"),
    ("cross_modal_{s}_layers.{i}.crossattention.output.dense",
     "fusion.layers.{s}.{i}.cross_attn.out", "copy"),
    ("cross_modal_{s}_layers.{i}.crossattention.output.LayerNorm",
     "fusion.layers.{s}.{i}.cross_norm", "copy"),
    ("cross_modal_{s}_layers.{i}.intermediate.dense", "fusion.layers.{s}.{i}.ffn.fc1", "copy"),
    ("cross_modal_{s}_layers.{i}.output.dense", "fusion.layers.{s}.{i}.ffn.fc2", "copy"),
    ("cross_modal_{s}_layers.{i}.output.LayerNorm", "fusion.layers.{s}.{i}.ffn_norm", "copy"),
]
SIDE_KEY_MAP: list[tuple[str, str, str]] = [
    ("cross_modal_{s}_transform", "fusion.transform.{s}", "copy"),
    ("cross_modal_{s}_layernorm", "fusion.entry_norm.{s}", "copy"),
    ("cross_modal_{s}_pooler.dense", "fusion.pooler.{s}.dense", "copy"),
]
LINK_KEY_MAP: list[tuple[str, str, str]] = [
    ("cross_modal_{s}_link_tower.{i}.LayerNorm", "fusion.link.{s}.{i}", "copy"),
]
# research repo (Lightning .ckpt) -> HF names
LIGHTNING_RENAMES: list[tuple[str, str]] = [
    (r"^text_transformer\.", "text_model."),
    (r"^vit_model\.visual\.conv1\.", f"{_V}embeddings.patch_embedding."),
    (r"^vit_model\.visual\.class_embedding$", f"{_V}embeddings.class_embedding"),
    (r"^vit_model\.visual\.positional_embedding$", f"{_V}embeddings.position_embedding.weight"),
    (r"^vit_model\.visual\.", _V),
]
# parts of task models and of the research repo's CLIP that BridgeTowerModel does not run
_IGNORED = re.compile(
    r"^(mlm_score|itm_score|itc_|vqa_classifier|snli_classifier|nlvr2_classifier|"
    r"vit_model\.(positional_embedding|ln_final|token_embedding|text_projection|logit_scale)|"
    r"text_model\.pooler\.|text_model\.embeddings\.(position_ids|token_type_ids)|"
    rf"{re.escape(_V)}embeddings\.position_ids|logit_scale)"
)


# the heads of BridgeTowerForImageAndTextRetrieval and BridgeTowerForMaskedLM
HEAD_KEYS = {
    "itm_score.fc.weight": "itm_head.weight", "itm_score.fc.bias": "itm_head.bias",
    "mlm_score.transform.dense.weight": "mlm_head.dense.weight",
    "mlm_score.transform.dense.bias": "mlm_head.dense.bias",
    "mlm_score.transform.LayerNorm.weight": "mlm_head.norm.weight",
    "mlm_score.transform.LayerNorm.bias": "mlm_head.norm.bias",
    "mlm_score.decoder.weight": "mlm_head.decoder", "mlm_score.bias": "mlm_head.bias",
}


def _sides(rows: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [(s.replace("{s}", side), d.replace("{s}", side), how)
            for s, d, how in rows for side in ("text", "image")]


def lightning_to_hf(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename a research-repo state dict to HF ``BridgeTowerModel`` key names."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        for pattern, repl in LIGHTNING_RENAMES:
            new = re.sub(pattern, repl, key)
            if new != key:
                key = new
                break
        out[key] = value
    return out


def check_supported(config: Mapping[str, Any]) -> None:
    """Refuse BridgeTower variants the bridge fusion does not implement."""
    vision = config.get("vision_config", {})
    problems = []
    if config.get("link_tower_type", "add") != "add":
        problems.append(f"link_tower_type={config['link_tower_type']!r} (only 'add')")
    if config.get("share_link_tower_layers", False):
        problems.append("share_link_tower_layers=True")
    if not config.get("share_cross_modal_transformer_layers", True):
        problems.append("share_cross_modal_transformer_layers=False")
    if not vision.get("share_layernorm", True):
        problems.append("vision_config.share_layernorm=False")
    if vision.get("remove_last_layer", False):
        problems.append("vision_config.remove_last_layer=True")
    text_layers = config["text_config"]["num_hidden_layers"]
    if vision.get("num_hidden_layers") != text_layers:
        problems.append("text and vision towers of different depths")
    if config["num_hidden_layers"] > text_layers:
        problems.append("more cross-modal layers than uni-modal ones")
    if problems:
        raise ValueError("unsupported BridgeTower configuration: " + "; ".join(problems))


def bridgetower_config(config: Mapping[str, Any], tokenizers: dict[str, Any]) -> dict[str, Any]:
    """The mmenc configuration of an HF BridgeTower ``config.json`` dict."""
    from mmenc_vl.recipes import bridge, clip_vision_tower
    from mmenc_vl.recipes import bridgetower_config as make

    check_supported(config)
    text_cfg = {**config["text_config"], "model_type": "roberta"}
    text = {"kind": "text", **text_config_from_hf(text_cfg, pooler=False)}
    vision_cfg = config["vision_config"]
    dim = int(vision_cfg["hidden_size"])
    vision = clip_vision_tower(dim, int(vision_cfg["num_hidden_layers"]), dim // 64, 4 * dim,
                               int(vision_cfg["image_size"]), int(vision_cfg["patch_size"]),
                               float(vision_cfg.get("layer_norm_eps", 1e-5)))
    # HF builds the cross-modal layers from text_config, the transforms and norms from the top
    tc = config["text_config"]
    hidden = int(config["hidden_size"])
    if hidden != int(tc["hidden_size"]):
        raise ValueError(f"hidden_size {hidden} differs from text_config.hidden_size "
                         f"{tc['hidden_size']}")
    act = tc.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {act!r}")
    fusion = bridge(hidden, int(config["num_hidden_layers"]), int(tc["num_attention_heads"]),
                    int(tc["intermediate_size"]), eps=float(config.get("layer_norm_eps", 1e-5)))
    fusion["layer_eps"] = float(tc.get("layer_norm_eps", 1e-5))
    fusion["activation"] = HF_ACTIVATIONS[act]
    fusion["post_norm_eps"] = float(vision_cfg.get("layer_norm_eps", 1e-5))
    fusion["dropout"] = float(config["text_config"].get("hidden_dropout_prob", 0.1))
    fusion["attn_dropout"] = float(config["text_config"].get("attention_probs_dropout_prob", 0.1))
    return make(text, vision, fusion, tokenizers["text"], tokenizers["image"], None)


def convert_bridgetower_state_dict(sd: Mapping[str, Tensor],
                                   config: Mapping[str, Any]) -> ConvertedStateDict:
    """Map an HF ``BridgeTowerModel`` state dict (or a renamed research-repo one) onto
    :class:`BridgeTowerEncoder` keys.

    Raises:
        ValueError: for a key that no row maps and that is not a known head or buffer.
    """
    sd = {k.removeprefix("bridgetower."): v for k, v in sd.items()}
    if any(k.startswith(("text_transformer.", "vit_model.")) for k in sd):
        sd = lightning_to_hf(sd)
    depth = int(config["vision_config"]["num_hidden_layers"])
    cross = int(config["num_hidden_layers"])
    converted, used = apply_key_map(sd, expand_rows(VISION_KEY_MAP, depth))
    for src, dst in VISION_PARAMS.items():
        for i in range(depth) if "{i}" in src else [None]:
            s = src.replace("{i}", str(i)) if i is not None else src
            if s in sd:
                converted[dst.replace("{i}", str(i)) if i is not None else dst] = sd[s]
                used.add(s)
    cls_key = f"{_V}embeddings.class_embedding"
    if cls_key in sd:
        converted["towers.image.embeddings.cls_token"] = sd[cls_key].reshape(1, 1, -1)
        used.add(cls_key)
    more, used_cross = apply_key_map(sd, expand_rows(_sides(CROSS_KEY_MAP), cross)
                                     + expand_rows(_sides(SIDE_KEY_MAP), 1)
                                     + expand_rows(_sides(LINK_KEY_MAP), cross - 1))
    converted.update(more)
    used |= used_cross
    has_mlm = "mlm_score.decoder.weight" in sd  # a head without its decoder is left out
    for src, dst in HEAD_KEYS.items():
        if src in sd and (has_mlm or not src.startswith("mlm_score.")):
            converted[dst] = sd[src]
            used.add(src)
    if "token_type_embeddings.weight" in sd:
        converted["fusion.token_type.weight"] = sd["token_type_embeddings.weight"]
        used.add("token_type_embeddings.weight")
    text_sd = {k[len("text_model."):]: v for k, v in sd.items() if k.startswith("text_model.")}
    text = convert_hf_text_state_dict(text_sd, {**config["text_config"], "model_type": "roberta"})
    converted.update({f"towers.text.{k}": v for k, v in text.items()
                      if not k.startswith("pooler.")})
    used |= {f"text_model.{k}" for k in text_sd}
    unmapped = sorted(k for k in sd if k not in used and not _IGNORED.match(k))
    if unmapped:
        raise ValueError(f"no mapping for checkpoint keys: {unmapped}")
    ignored = [k for k in sd if k not in used or k.startswith("text_model.pooler.")]
    ignored += [f"text_model.{k}" for k in text.ignored]
    if ignored:
        log.info("ignored %d checkpoint keys: %s", len(ignored), ", ".join(sorted(ignored)))
    return ConvertedStateDict(converted, ignored)


def _read_state(path: Path) -> dict[str, Tensor]:
    state = read_foreign(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return state


def convert_bridgetower(src: Path, config: str | Path | None = None,
                        tokenizer: str | Path | None = None,
                        max_length: int | None = None) -> BridgeTowerEncoder:
    """A BridgeTower checkpoint -> ``BridgeTowerEncoder`` (recipe ``bridgetower-base``, sizes
    from the checkpoint's configuration).

    Args:
        src: an HF folder, or a research-repo ``.ckpt`` (its folder holds ``config.json``, or
            pass ``config``).
        config: an HF ``config.json`` (or its folder) describing the checkpoint.
        tokenizer: a folder with ``tokenizer.json`` when ``src`` has none (without one the model
            encodes token ids only).
        max_length: text truncation (default: the position table's length).
    """
    from mmenc.builtin.recipes import image_tokenizer
    from mmenc.builtin.text import hf_tokenizer_config

    from mmenc_vl.bridgetower import build_bridgetower

    src = Path(src)
    folder = src if src.is_dir() else src.parent
    if src.is_dir():
        weights = find_weights(src)
    elif src.is_file():
        weights = src
    else:
        raise CheckpointError(f"{src}: no such file or folder")
    cfg_path = Path(config) if config else folder / "config.json"
    if cfg_path.is_dir():
        cfg_path = cfg_path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{src}: no config.json; pass config=PATH of the HF BridgeTower "
                              "config that describes this checkpoint")
    hf_config = read_json(cfg_path)
    if hf_config.get("model_type") != "bridgetower":
        raise CheckpointError(f"{cfg_path}: model_type {hf_config.get('model_type')!r} is not "
                              "bridgetower")
    from mmenc.trust import check_sizes

    check_sizes(hf_config, str(cfg_path), root="")
    state = _read_state(weights)
    text_cfg = hf_config["text_config"]
    pad_id = int(text_cfg.get("pad_token_id", 1))
    length = int(max_length or int(text_cfg["max_position_embeddings"]) - pad_id - 1)
    tok_dir = Path(tokenizer) if tokenizer else folder
    tokenizers = {"text": {"tokenizer": "text", **hf_tokenizer_config(tok_dir, length, pad_id)},
                  "image": image_tokenizer(int(hf_config["vision_config"]["image_size"]))}
    try:
        cfg = bridgetower_config(hf_config, tokenizers)
        converted = convert_bridgetower_state_dict(state, hf_config)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{src}: {exc}") from None
    cfg["itm_head"] = any(k.endswith("itm_score.fc.weight") for k in state)
    cfg["mlm_head"] = any(k.endswith("mlm_score.decoder.weight") for k in state)
    cfg["source"] = {"format": "bridgetower", "path": str(src)}
    model = build_bridgetower(cfg, directory=tok_dir)
    model.recipe = "bridgetower-base"
    fit_state_dict(model, converted, source=str(src))
    return model.eval()


def run_bridgetower(model: BridgeTowerEncoder, inputs: dict[str, Tensor],
                    fixture: dict[str, Any]) -> dict[str, Tensor]:
    """Fixture outputs of ``BridgeTowerModel(input_ids, attention_mask, pixel_values,
    output_hidden_states=True)``: ``text_features``, ``image_features``, ``pooler_output``,
    ``hidden_text_XX`` / ``hidden_image_XX`` (uni-modal layers, 00 = embeddings / after
    ln_pre) and ``cross_text_XX`` / ``cross_image_XX`` (each cross-modal layer)."""
    pad = int(fixture.get("config", {}).get("text_config", {}).get("pad_token_id", 1))
    text = TokenBatch(ids=inputs["input_ids"], mask=inputs["attention_mask"].bool(), pad_id=pad)
    image = TokenBatch(values=inputs["pixel_values"])
    fused = model.forward_fused({"text": text, "image": image}, output_hidden_states=True)
    out = {"text_features": fused["text"].hidden, "image_features": fused["image"].hidden}
    if fused["text"].pooled is not None and fused["image"].pooled is not None:
        out["pooler_output"] = torch.cat([fused["text"].pooled, fused["image"].pooled], dim=-1)
    for side in ("text", "image"):
        for i, h in enumerate(fused[f"{side}_tower"].hidden_states or ()):
            out[f"hidden_{side}_{i:02d}"] = h
        for i, h in enumerate(fused[side].hidden_states or ()):
            out[f"cross_{side}_{i:02d}"] = h
    return out
