"""Importing official BEATs checkpoints (``--from beats``, ``--from beats-tokenizer``) and the
parity mappings of the ``beats`` fixtures.

An official checkpoint is ``torch.save({'cfg': dict, 'model': state_dict})`` (fine-tuned models
add ``'label_dict'``); it is read with ``torch.load(weights_only=True)``. Every key is mapped by a
named rule of :data:`KEY_RULES`; a key no rule maps is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmenc.checkpoint import fit_state_dict, read_foreign
from mmenc.errors import CheckpointError
from mmenc_audio.model import BEATsEncoder, beats_config

# (official key pattern, mmenc key template); {i} is the layer index
KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"patch_embedding\.weight", "patch_embedding.weight"),
    (r"layer_norm\.(weight|bias)", "patch_norm.{0}"),
    (r"post_extract_proj\.(weight|bias)", "proj.{0}"),
    (r"encoder\.pos_conv\.0\.(weight_g|weight_v|bias)", "trunk.conv_pos.{0}"),
    (r"encoder\.layer_norm\.(weight|bias)", "trunk.input_norm.{0}"),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)",
     "trunk.layers.{0}.attn.out.{1}"),
    (r"encoder\.layers\.(\d+)\.self_attn\.grep_linear\.(weight|bias)",
     "trunk.layers.{0}.attn.relative.linear.{1}"),
    (r"encoder\.layers\.(\d+)\.self_attn\.grep_a", "trunk.layers.{0}.attn.relative.scale"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)",
     "trunk.layers.{0}.attn_norm.{1}"),
    (r"encoder\.layers\.(\d+)\.fc([12])\.(weight|bias)", "trunk.layers.{0}.ffn.fc{1}.{2}"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", "trunk.layers.{0}.ffn_norm.{1}"),
    (r"predictor\.(weight|bias)", "head.{0}"),
    (r"quantize_layer\.([02])\.(weight|bias)", "quantize_layer.{0}.{1}"),
    (r"quantize\.embedding\.(weight|cluster_size|embed_avg|initted)", "codebook.{0}"),
    (r"quantize\.cluster_size", "codebook.usage"),
)
_QKV = re.compile(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)")
_REL = re.compile(r"encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight")

_REQUIRED_CFG = {"layer_norm_first": False, "deep_norm": True, "relative_position_embedding": True,
                 "gru_rel_pos": True, "activation_fn": "gelu", "conv_bias": False}


def read_checkpoint(src: Path) -> dict[str, Any]:
    """The ``{'cfg', 'model', ...}`` container of ``src`` (a file, or a folder holding one
    ``*.pt`` file)."""
    src = Path(src)
    if src.is_dir():
        found = sorted(src.glob("*.pt"))
        if len(found) != 1:
            raise CheckpointError(f"{src}: expected one *.pt checkpoint in this folder, found "
                                  f"{len(found)}")
        src = found[0]
    ck = read_foreign(src)
    if not isinstance(ck, dict) or not isinstance(ck.get("cfg"), dict) \
            or not isinstance(ck.get("model"), dict):
        raise CheckpointError(f"{src}: not a BEATs checkpoint (expected a dict with 'cfg' and "
                              "'model')")
    if not all(isinstance(v, Tensor) for v in ck["model"].values()):
        raise CheckpointError(f"{src}: 'model' is not a flat state dict of tensors")
    ck["_path"] = str(src)
    return ck


def config_from_official(cfg: dict[str, Any], state: dict[str, Tensor],
                         source: str) -> dict[str, Any]:
    """An mmenc BEATs configuration from an official ``cfg`` (sizes checked against the
    weights)."""
    for key, want in _REQUIRED_CFG.items():
        if key in cfg and cfg[key] != want:
            raise CheckpointError(f"{source}: cfg {key}={cfg[key]!r} is not supported (only "
                                  f"{want!r}, as in every published BEATs checkpoint)")
    if cfg.get("input_patch_size", 16) != 16:
        raise CheckpointError(f"{source}: input_patch_size {cfg['input_patch_size']} != 16")
    try:
        classes = int(cfg["predictor_class"]) if cfg.get("finetuned_model") else None
        quant = None
        if "quant_n" in cfg:
            quant = {"num_codes": int(cfg["quant_n"]), "code_dim": int(cfg["quant_dim"])}
        config = beats_config(
            dim=int(cfg["encoder_embed_dim"]), depth=int(cfg["encoder_layers"]),
            heads=int(cfg["encoder_attention_heads"]), ffn_dim=int(cfg["encoder_ffn_embed_dim"]),
            patch_dim=int(cfg["embed_dim"]), conv_pos=int(cfg["conv_pos"]),
            conv_pos_groups=int(cfg["conv_pos_groups"]), num_buckets=int(cfg["num_buckets"]),
            max_distance=int(cfg["max_distance"]), num_classes=classes, quantizer=quant)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: cfg is missing or has a bad {exc}") from None
    return config


def map_state_dict(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Official BEATs (tokenizer) state dict -> the keys of :class:`BEATsEncoder`."""
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    rel: dict[int, Tensor] = {}
    unmapped = []
    for key, value in state.items():
        if m := _QKV.fullmatch(key):
            qkv.setdefault(f"{m[1]}.{m[3]}", {})[m[2]] = value
            continue
        if m := _REL.fullmatch(key):
            rel[int(m[1])] = value
            continue
        for pattern, template in KEY_RULES:
            if m := re.fullmatch(pattern, key):
                out[template.format(*m.groups())] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise CheckpointError(f"{source}: keys no BEATs rule maps: {', '.join(unmapped[:8])}")
    for where, parts in qkv.items():
        layer, kind = where.split(".")
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{source}: layer {layer} lacks some of q/k/v_proj.{kind}")
        out[f"trunk.layers.{layer}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"],
                                                                  parts["v"]])
    if rel:
        if 0 not in rel:
            raise CheckpointError(f"{source}: no relative_attention_bias in layer 0")
        for layer, table in rel.items():  # one shared table, stored under every layer
            if not torch.equal(table, rel[0]):
                raise CheckpointError(f"{source}: relative_attention_bias of layer {layer} differs "
                                      "from layer 0's, but BEATs shares one table")
        out["trunk.rel_bias.weight"] = rel[0]
    return out


def _convert(src: Path, kind: str) -> BEATsEncoder:
    ck = read_checkpoint(src)
    source = ck["_path"]
    cfg, state = ck["cfg"], ck["model"]
    has_quant = any(k.startswith("quantize") for k in state)
    if kind == "model" and has_quant:
        raise CheckpointError(f"{source}: an acoustic tokenizer checkpoint; convert it with "
                              "--from beats-tokenizer")
    if kind == "tokenizer" and not has_quant:
        raise CheckpointError(f"{source}: no quantiser weights; a BEATs model converts with "
                              "--from beats")
    config = config_from_official(cfg, state, source)
    if kind == "tokenizer" and config["quantizer"] is None:
        raise CheckpointError(f"{source}: cfg has no quant_n / quant_dim")
    label_dict = ck.get("label_dict")
    if isinstance(label_dict, dict):
        config["label_dict"] = {str(k): str(v) for k, v in label_dict.items()}
    config["source"] = {"format": "beats" if kind == "model" else "beats-tokenizer",
                        "path": source}
    mapped = map_state_dict(state, source)
    model = BEATsEncoder(config)
    model.recipe = "beats-base" if kind == "model" else "beats-tokenizer"
    fit_state_dict(model, mapped, source=source)
    if model.codebook is not None and float(model.codebook.initted.item()) != 1.0:
        raise CheckpointError(f"{source}: quantize.embedding.initted is not 1: the codebook was "
                              "never initialised, its labels would be meaningless")
    return model.eval()


def convert_beats(src: Path) -> BEATsEncoder:
    """An official BEATs (pre-trained or fine-tuned) checkpoint -> :class:`BEATsEncoder`."""
    return _convert(src, "model")


def convert_beats_tokenizer(src: Path) -> BEATsEncoder:
    """An official BEATs acoustic-tokenizer checkpoint -> :class:`BEATsEncoder` with a codebook."""
    return _convert(src, "tokenizer")


# -- parity mappings --------------------------------------------------------------------------
def run_beats(model: BEATsEncoder, inputs: dict[str, Tensor],
              fixture: dict[str, Any]) -> dict[str, Tensor]:
    """Outputs of a ``beats`` model fixture from ``source`` [b t] and ``padding_mask`` [b t]:
    ``fbank``, ``features_padded`` / ``features_nomask`` (last hidden state, or the fine-tuned
    probabilities), ``padding_mask_out``, ``patch_embed_ln`` and ``layer_XX``."""
    source, mask = inputs["source"], inputs.get("padding_mask")
    padded = model.extract_features(source, mask)
    plain = model.extract_features(source, None, output_hidden_states=True)
    pick: Callable[[Any], Tensor] = (lambda o: o.lprobs) if model.head is not None \
        else (lambda o: o.hidden)
    out = {"fbank": plain.fbank, "features_padded": pick(padded), "features_nomask": pick(plain),
           "patch_embed_ln": plain.patch_embed_ln}
    if padded.padding_mask is not None:
        out["padding_mask_out"] = padded.padding_mask
    for i, h in enumerate(plain.hidden_states or ()):
        out[f"layer_{i:02d}"] = h
    return out


def run_beats_tokenizer(model: BEATsEncoder, inputs: dict[str, Tensor],
                        fixture: dict[str, Any]) -> dict[str, Tensor]:
    """Outputs of a ``beats`` tokenizer fixture: ``labels_padded`` / ``labels_nomask``
    (flattened ``[b*n]``), ``quantize_input_nomask`` and ``label_margin_nomask``."""
    assert model.codebook is not None
    source, mask = inputs["source"], inputs.get("padding_mask")
    hidden = model.extract_features(source, None).hidden
    z = model.code_vectors(hidden)
    from mmenc_audio.codebook import l2norm

    dist = model.codebook.distances(l2norm(z).reshape(-1, z.shape[-1]))
    best = dist.topk(2, dim=1, largest=False).values
    return {"labels_padded": model.extract_labels(source, mask),
            "labels_nomask": model.extract_labels(source, None),
            "quantize_input_nomask": z,
            "label_margin_nomask": (best[:, 1] - best[:, 0]).view(z.shape[:-1])}


def export_official(model: BEATsEncoder) -> dict[str, Any]:
    """The official container ``{'cfg', 'model'[, 'label_dict']}`` of a BEATs model (the inverse
    of the converters: official code loads it with ``load_state_dict(strict=True)``)."""
    config = model.config
    trunk = config["trunk"]
    cfg: dict[str, Any] = {
        "encoder_layers": trunk["depth"], "encoder_embed_dim": trunk["dim"],
        "encoder_ffn_embed_dim": trunk["ffn_dim"], "encoder_attention_heads": trunk["heads"],
        "activation_fn": "gelu", "dropout": 0.0, "attention_dropout": 0.0,
        "activation_dropout": 0.0, "encoder_layerdrop": 0.0, "dropout_input": 0.0,
        "layer_norm_first": False, "conv_bias": False, "conv_pos": trunk["conv_pos"],
        "conv_pos_groups": trunk["conv_pos_groups"], "relative_position_embedding": True,
        "num_buckets": trunk["num_buckets"], "max_distance": trunk["max_distance"],
        "gru_rel_pos": True, "deep_norm": True, "input_patch_size": config["patch_size"],
        "layer_wise_gradient_decay_ratio": 1.0, "embed_dim": config["patch_dim"],
        "finetuned_model": model.head is not None,
    }
    if model.head is not None:
        cfg["predictor_class"] = model.head.out_features
        cfg["predictor_dropout"] = 0.0
    if model.codebook is not None:
        cfg["quant_n"], cfg["quant_dim"] = model.codebook.num_codes, model.codebook.dim
    inverse = []
    for pattern, template in sorted(KEY_RULES, key=lambda rule: "{" in rule[1]):  # exact first
        ours = re.escape(template).replace(r"\{0\}", "(.+?)").replace(r"\{1\}", "(.+?)") \
            .replace(r"\{2\}", "(.+?)")
        inverse.append((ours, pattern))
    state: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().clone()
        if m := re.fullmatch(r"trunk\.layers\.(\d+)\.attn\.qkv\.(weight|bias)", key):
            for name, part in zip("qkv", value.chunk(3), strict=True):
                state[f"encoder.layers.{m[1]}.self_attn.{name}_proj.{m[2]}"] = part.clone()
            continue
        if key == "trunk.rel_bias.weight":
            for i in range(trunk["depth"]):  # one tensor under every layer, as torch.save keeps it
                state[f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"] = value
            continue
        if key.startswith("embed_proj."):
            raise ValueError("a model with an embed_dim projection has no official layout")
        for ours, pattern in inverse:
            if m := re.fullmatch(ours, key):
                official = pattern
                for part in m.groups():  # fill the pattern's groups in order
                    official = re.sub(r"\([^)]*\)", part, official, count=1)
                state[official.replace("\\", "")] = value
                break
        else:
            raise ValueError(f"no official key for {key}")
    out: dict[str, Any] = {"cfg": cfg, "model": state}
    if config.get("label_dict"):
        out["label_dict"] = dict(config["label_dict"])
    return out
