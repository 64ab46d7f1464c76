"""HF ``BertModel`` / ``RobertaModel`` checkpoints -> ``mmenc.nn.TextTransformer``.

Three steps, each usable alone:

    cfg = text_config_from_hf(hf_config)          # HF config.json dict -> mmenc config dict
    model = build_text_transformer(cfg)           # mmenc config dict -> modules
    load_converted(model, convert_hf_text_state_dict(sd, hf_config))

``load_hf_text(sd, hf_config)`` does all three. Every key is mapped by one row of
``HF_TEXT_KEY_MAP``; the only non-copy is q/k/v, concatenated into the fused ``qkv`` Linear.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from mmenc.checkpoint import fit_state_dict
from mmenc.nn import Pooler, TextEmbeddings, TextTransformer, TrunkConfig, build_trunk

log = logging.getLogger(__name__)

# (HF module, mmenc module, how). "{i}" is the layer index; "copy" maps .weight/.bias one to
# one; "qkv" concatenates the query, key and value rows (in that order) into the fused Linear.
HF_TEXT_KEY_MAP: list[tuple[str, str, str]] = [
    ("embeddings.word_embeddings", "embeddings.word", "copy"),
    ("embeddings.position_embeddings", "embeddings.position", "copy"),
    ("embeddings.token_type_embeddings", "embeddings.token_type", "copy"),
    ("embeddings.LayerNorm", "embeddings.norm", "copy"),
    ("encoder.layer.{i}.attention.self.{query,key,value}", "trunk.layers.{i}.attn.qkv", "qkv"),
    (
        "encoder.layer.{i}.attention.self.distance_embedding",
        "trunk.layers.{i}.attn.relative.distance",
        "copy",
    ),
    ("encoder.layer.{i}.attention.output.dense", "trunk.layers.{i}.attn.out", "copy"),
    ("encoder.layer.{i}.attention.output.LayerNorm", "trunk.layers.{i}.attn_norm", "copy"),
    ("encoder.layer.{i}.intermediate.dense", "trunk.layers.{i}.ffn.fc1", "copy"),
    ("encoder.layer.{i}.output.dense", "trunk.layers.{i}.ffn.fc2", "copy"),
    ("encoder.layer.{i}.output.LayerNorm", "trunk.layers.{i}.ffn_norm", "copy"),
    ("pooler.dense", "pooler.dense", "copy"),
]

HF_ACTIVATIONS: dict[str, str] = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "quick_gelu": "quick_gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}

_BASE_PREFIXES = ("bert.", "roberta.")
_BASE_MODULES = ("embeddings.", "encoder.", "pooler.")
_PARAM_NAMES = ("weight", "bias")


class ConvertedStateDict(dict[str, Tensor]):
    """A converted state dict that also lists the source keys it deliberately left out."""

    def __init__(self, tensors: Mapping[str, Tensor], ignored: Iterable[str] = ()) -> None:
        super().__init__(tensors)
        self.ignored: list[str] = sorted(ignored)


def text_config_from_hf(hf_config: Mapping[str, Any], pooler: bool = True) -> dict[str, Any]:
    """The mmenc text config for an HF BERT/RoBERTa ``config.json`` dict.

    Args:
        hf_config: the HF config as a plain dict.
        pooler: whether the checkpoint has (and the model should build) the pooler.

    Returns:
        ``{"trunk": asdict(TrunkConfig), "vocab_size": ..., ...}``, JSON-serialisable.
    """
    act = hf_config.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {act!r}; supported: {sorted(HF_ACTIVATIONS)}")
    position = hf_config.get("position_embedding_type", "absolute")
    if position not in ("absolute", "relative_key_query"):
        raise ValueError(f"unsupported position_embedding_type {position!r}")
    eps = float(hf_config.get("layer_norm_eps", 1e-12))
    trunk = TrunkConfig(
        dim=hf_config["hidden_size"],
        depth=hf_config["num_hidden_layers"],
        heads=hf_config["num_attention_heads"],
        ffn_dim=hf_config["intermediate_size"],
        norm="post",
        activation=HF_ACTIVATIONS[act],
        eps=eps,
        dropout=float(hf_config.get("hidden_dropout_prob", 0.1)),
        attn_dropout=float(hf_config.get("attention_probs_dropout_prob", 0.1)),
        relative="key_query" if position == "relative_key_query" else "none",
        max_positions=hf_config["max_position_embeddings"],
        final_norm=False,
    )
    is_roberta = hf_config.get("model_type") in ("roberta", "xlm-roberta", "camembert")
    return {
        "trunk": asdict(trunk),
        "vocab_size": hf_config["vocab_size"],
        "max_positions": hf_config["max_position_embeddings"],
        "type_vocab_size": hf_config.get("type_vocab_size", 2),
        "pad_id": hf_config.get("pad_token_id", 1 if is_roberta else 0),
        "position_type": "absolute" if position == "absolute" else "none",
        "padding_aware_positions": is_roberta,
        "eps": eps,
        "dropout": float(hf_config.get("hidden_dropout_prob", 0.1)),
        "pooler": pooler,
    }


def build_text_transformer(cfg: Mapping[str, Any]) -> TextTransformer:
    """Build a ``TextTransformer`` from an mmenc text config (see ``text_config_from_hf``)."""
    trunk_cfg = TrunkConfig(**cfg["trunk"])
    embeddings = TextEmbeddings(
        vocab_size=cfg["vocab_size"],
        dim=trunk_cfg.dim,
        max_positions=cfg["max_positions"],
        type_vocab_size=cfg["type_vocab_size"],
        pad_id=cfg["pad_id"],
        eps=cfg["eps"],
        dropout=cfg["dropout"],
        position_type=cfg["position_type"],
        padding_aware_positions=cfg["padding_aware_positions"],
    )
    pooler = Pooler(trunk_cfg.dim) if cfg["pooler"] else None
    return TextTransformer(embeddings, build_trunk(trunk_cfg), pooler)


def strip_base_prefix(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop a leading ``bert.`` / ``roberta.`` (checkpoints of task models carry one)."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        for prefix in _BASE_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        out[key] = value
    return out


def expand_rows(
    rows: Iterable[tuple[str, str, str]], depth: int
) -> list[tuple[list[str], str, str]]:
    """Expand key-map rows into parameter-level ``(source keys, target key, how)`` entries.

    ``{i}`` runs over the layers, ``{a,b,c}`` lists the sources of a concatenation, and each
    module row stands for both its ``weight`` and its ``bias``.
    """
    out: list[tuple[list[str], str, str]] = []
    for src, dst, how in rows:
        layers = range(depth) if "{i}" in src else [None]
        for i in layers:
            s = src.replace("{i}", str(i)) if i is not None else src
            d = dst.replace("{i}", str(i)) if i is not None else dst
            if "{" in s:
                head, rest = s.split("{", 1)
                names, tail = rest.split("}", 1)
                sources = [head + name + tail for name in names.split(",")]
            else:
                sources = [s]
            for param in _PARAM_NAMES:
                out.append(([f"{x}.{param}" for x in sources], f"{d}.{param}", how))
    return out


def apply_key_map(
    sd: Mapping[str, Tensor], entries: Iterable[tuple[list[str], str, str]]
) -> tuple[dict[str, Tensor], set[str]]:
    """Apply expanded key-map entries; returns the converted tensors and the source keys used.

    An entry whose sources are all absent is skipped (e.g. a bias-free module, or no pooler);
    one with only some of them is an error, since a half-present q/k/v cannot be right.
    """
    converted: dict[str, Tensor] = {}
    used: set[str] = set()
    for sources, target, how in entries:
        present = [s for s in sources if s in sd]
        if not present:
            continue
        if len(present) != len(sources):
            missing = sorted(set(sources) - set(present))
            raise ValueError(f"checkpoint has only part of {target}: missing {missing}")
        if how == "copy":
            converted[target] = sd[sources[0]]
        elif how == "qkv":
            converted[target] = torch.cat([sd[s] for s in sources], dim=0)  # [3*d ...]
        else:
            raise ValueError(f"unknown mapping kind {how!r}")
        used.update(sources)
    return converted, used


def convert_hf_text_state_dict(
    sd: Mapping[str, Tensor], hf_config: Mapping[str, Any]
) -> ConvertedStateDict:
    """Map an HF BERT/RoBERTa state dict onto ``TextTransformer`` keys.

    Args:
        sd: the HF state dict, with or without a ``bert.``/``roberta.`` prefix.
        hf_config: the HF config dict.

    Returns:
        the converted tensors; ``.ignored`` lists source keys left out: task heads (``cls.*``,
        ``lm_head.*``, ...), ``embeddings.position_ids`` and, for ``relative_key_query``, the
        absolute position table HF builds but never adds.

    Raises:
        ValueError: for a base-model key that no row maps (it would be silently dropped).
    """
    base = strip_base_prefix(sd)
    converted, used = apply_key_map(
        base, expand_rows(HF_TEXT_KEY_MAP, hf_config["num_hidden_layers"])
    )
    ignorable = {"embeddings.position_ids", "embeddings.token_type_ids"}
    if hf_config.get("position_embedding_type", "absolute") != "absolute":
        ignorable.add("embeddings.position_embeddings.weight")
        converted.pop("embeddings.position.weight", None)
    unmapped = [
        k for k in base if k not in used and k.startswith(_BASE_MODULES) and k not in ignorable
    ]
    if unmapped:
        raise ValueError(f"no mapping for checkpoint keys: {sorted(unmapped)}")
    ignored = [k for k in base if k not in used]
    if ignored:
        log.info("ignored %d checkpoint keys: %s", len(ignored), ", ".join(sorted(ignored)))
    return ConvertedStateDict(converted, ignored)


def load_converted(model: nn.Module, sd: Mapping[str, Tensor]) -> None:
    """Load a converted state dict strictly; a :class:`~mmenc.errors.CheckpointError` (a
    ``ValueError``) lists every missing, unexpected and mis-shaped key."""
    fit_state_dict(model, sd, source="converted state dict")


def load_hf_text(sd: Mapping[str, Tensor], hf_config: Mapping[str, Any]) -> TextTransformer:
    """Build a ``TextTransformer`` for an HF BERT/RoBERTa checkpoint and load it (eval mode)."""
    converted = convert_hf_text_state_dict(sd, hf_config)
    model = build_text_transformer(
        text_config_from_hf(hf_config, pooler="pooler.dense.weight" in converted)
    )
    load_converted(model, converted)
    return model.eval()
