"""A plain eager BEATs forward written straight from the paper and the official checkpoint
layout (official key names, no mmenc.nn), and a builder of random ``beats`` fixtures of any size
in the layout of ``../shared/parity``. The tests use them to check the converter on sizes and
seeds the shared fixtures do not cover.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor
from torchaudio.compliance import kaldi


def _ln(x: Tensor, sd: dict[str, Tensor], name: str) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], 1e-5)


def _lin(x: Tensor, sd: dict[str, Tensor], name: str) -> Tensor:
    return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))


def _shrink_mask(mask: Tensor, n: int) -> Tensor:
    cut = mask.shape[1] - mask.shape[1] % n
    return mask[:, :cut].reshape(mask.shape[0], n, cut // n).all(dim=2)


def _buckets(q_len: int, k_len: int, num_buckets: int, max_distance: int) -> Tensor:
    rel = torch.arange(k_len)[None, :] - torch.arange(q_len)[:, None]
    half = num_buckets // 2
    exact = half // 2
    side = torch.where(rel > 0, half, 0)
    dist = rel.abs()
    far = exact + (torch.log(dist.float().clamp(min=1) / exact)
                   / math.log(max_distance / exact) * (half - exact)).to(torch.long)
    far = torch.minimum(far, torch.full_like(far, half - 1))
    return side + torch.where(dist < exact, dist, far)


def reference_forward(cfg: dict, sd: dict[str, Tensor], source: Tensor,
                      padding_mask: Tensor | None) -> dict[str, object]:
    """fbank, patch embeddings, every layer, the last state, the patch mask, lprobs and the
    quantiser input / labels (when the state dict has them)."""
    fb = torch.stack([kaldi.fbank(w[None] * 32768.0, num_mel_bins=128, sample_frequency=16000,
                                  frame_length=25, frame_shift=10) for w in source])
    fb = (fb - 15.41663) / (2 * 6.55582)
    pm = None if padding_mask is None else _shrink_mask(padding_mask, fb.shape[1])
    x = F.conv2d(fb[:, None], sd["patch_embedding.weight"], stride=16)  # [B E T F]
    x = x.flatten(2).transpose(1, 2)
    x = _ln(x, sd, "layer_norm")
    patch_ln = x
    if pm is not None:
        pm = _shrink_mask(pm, x.shape[1])
    x = _lin(x, sd, "post_extract_proj")
    if pm is not None:
        x = x.masked_fill(pm[..., None], 0.0)
    g, v = sd["encoder.pos_conv.0.weight_g"], sd["encoder.pos_conv.0.weight_v"]
    w = g * v / v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
    k = v.shape[-1]
    c = F.conv1d(x.transpose(1, 2), w, sd["encoder.pos_conv.0.bias"], padding=k // 2,
                 groups=int(cfg["conv_pos_groups"]))
    if k % 2 == 0:
        c = c[:, :, :-1]
    x = x + F.gelu(c).transpose(1, 2)
    x = _ln(x, sd, "encoder.layer_norm")
    states = [x]
    B, T, D = x.shape
    H = int(cfg["encoder_attention_heads"])
    hd = D // H
    L = int(cfg["encoder_layers"])
    alpha = (2.0 * L) ** 0.25
    table = sd["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    pos = table[_buckets(T, T, int(cfg["num_buckets"]), int(cfg["max_distance"]))]  # [T T H]
    pos = pos.permute(2, 0, 1)[None]  # [1 H T T]
    for i in range(L):
        p = f"encoder.layers.{i}."
        q = _lin(x, sd, p + "self_attn.q_proj").view(B, T, H, hd).transpose(1, 2)
        kk = _lin(x, sd, p + "self_attn.k_proj").view(B, T, H, hd).transpose(1, 2)
        vv = _lin(x, sd, p + "self_attn.v_proj").view(B, T, H, hd).transpose(1, 2)
        gates = torch.sigmoid(_lin(q, sd, p + "self_attn.grep_linear").view(B, H, T, 2, 4).sum(-1))
        ga, gb = gates[..., 0:1], gates[..., 1:2]
        gate = ga * (gb * sd[p + "self_attn.grep_a"] - 1.0) + 2.0
        scores = (q * hd**-0.5) @ kk.transpose(-1, -2) + gate * pos
        if pm is not None:
            scores = scores.masked_fill(pm[:, None, None, :], float("-inf"))
        att = scores.softmax(dim=-1) @ vv
        att = _lin(att.transpose(1, 2).reshape(B, T, D), sd, p + "self_attn.out_proj")
        x = _ln(x * alpha + att, sd, p + "self_attn_layer_norm")
        ff = _lin(F.gelu(_lin(x, sd, p + "fc1")), sd, p + "fc2")
        x = _ln(x * alpha + ff, sd, p + "final_layer_norm")
        states.append(x)
    out: dict[str, object] = {"fbank": fb, "patch_ln": patch_ln, "states": states, "last": x,
                              "mask": pm}
    if "predictor.weight" in sd:
        logits = _lin(x, sd, "predictor")
        if pm is not None and bool(pm.any()):
            logits = logits.masked_fill(pm[..., None], 0.0).sum(1) / (~pm).sum(1, keepdim=True)
        else:
            logits = logits.mean(1)
        out["lprobs"] = torch.sigmoid(logits)
    if "quantize_layer.0.weight" in sd:
        z = _lin(torch.tanh(_lin(x, sd, "quantize_layer.0")), sd, "quantize_layer.2")
        zn = F.normalize(z, dim=-1).reshape(-1, z.shape[-1])
        e = sd["quantize.embedding.weight"]
        d = (zn[:, None, :] - e[None]).pow(2).sum(-1)
        two = d.topk(2, dim=1, largest=False).values
        out["quant_in"] = z
        out["labels"] = d.argmin(dim=1)
        out["margin"] = (two[:, 1] - two[:, 0]).view(z.shape[:-1])
    return out


def random_cfg(layers: int = 2, dim: int = 48, heads: int = 3, ffn: int = 96, patch_dim: int = 24,
               conv_pos: int = 8, groups: int = 4, buckets: int = 64, max_distance: int = 128,
               classes: int | None = None, quant: tuple[int, int] | None = None) -> dict:
    cfg = {"encoder_layers": layers, "encoder_embed_dim": dim, "encoder_ffn_embed_dim": ffn,
           "encoder_attention_heads": heads, "activation_fn": "gelu", "dropout": 0.0,
           "attention_dropout": 0.0, "activation_dropout": 0.0, "encoder_layerdrop": 0.0,
           "dropout_input": 0.0, "layer_norm_first": False, "conv_bias": False,
           "conv_pos": conv_pos, "conv_pos_groups": groups, "relative_position_embedding": True,
           "num_buckets": buckets, "max_distance": max_distance, "gru_rel_pos": True,
           "deep_norm": True, "input_patch_size": 16, "layer_wise_gradient_decay_ratio": 0.6,
           "embed_dim": patch_dim, "finetuned_model": classes is not None}
    if classes is not None:
        cfg["predictor_class"] = classes
    if quant is not None:
        cfg["quant_n"], cfg["quant_dim"] = quant
    return cfg


def random_state_dict(cfg: dict, seed: int) -> dict[str, Tensor]:
    """Official keys and shapes, every tensor random (LayerNorm weights near 1, biases small)."""
    g = torch.Generator().manual_seed(seed)

    def n(*shape: int, mean: float = 0.0, std: float = 0.1) -> Tensor:
        return mean + std * torch.randn(*shape, generator=g)

    D, E, Fd = cfg["encoder_embed_dim"], cfg["embed_dim"], cfg["encoder_ffn_embed_dim"]
    H, K, G = cfg["encoder_attention_heads"], cfg["conv_pos"], cfg["conv_pos_groups"]
    sd = {"patch_embedding.weight": n(E, 1, 16, 16, std=0.05),
          "layer_norm.weight": n(E, mean=1.0), "layer_norm.bias": n(E, std=0.02),
          "post_extract_proj.weight": n(D, E, std=E**-0.5),
          "post_extract_proj.bias": n(D, std=0.02),
          "encoder.pos_conv.0.weight_g": n(1, 1, K, mean=1.0, std=0.2).abs(),
          "encoder.pos_conv.0.weight_v": n(D, D // G, K),
          "encoder.pos_conv.0.bias": n(D, std=0.02),
          "encoder.layer_norm.weight": n(D, mean=1.0), "encoder.layer_norm.bias": n(D, std=0.02)}
    table = n(cfg["num_buckets"], H, std=0.5)
    for i in range(cfg["encoder_layers"]):
        p = f"encoder.layers.{i}."
        for proj in ("q", "k", "v", "out"):
            sd[p + f"self_attn.{proj}_proj.weight"] = n(D, D, std=D**-0.5)
            sd[p + f"self_attn.{proj}_proj.bias"] = n(D, std=0.02)
        sd[p + "self_attn.grep_linear.weight"] = n(8, D // H, std=0.3)
        sd[p + "self_attn.grep_linear.bias"] = n(8, std=0.1)
        sd[p + "self_attn.grep_a"] = n(1, H, 1, 1, mean=1.0)
        sd[p + "self_attn.relative_attention_bias.weight"] = table  # one shared tensor
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            sd[p + f"{ln}.weight"], sd[p + f"{ln}.bias"] = n(D, mean=1.0), n(D, std=0.02)
        sd[p + "fc1.weight"], sd[p + "fc1.bias"] = n(Fd, D, std=D**-0.5), n(Fd, std=0.02)
        sd[p + "fc2.weight"], sd[p + "fc2.bias"] = n(D, Fd, std=Fd**-0.5), n(D, std=0.02)
    if cfg.get("finetuned_model"):
        C = cfg["predictor_class"]
        sd["predictor.weight"], sd["predictor.bias"] = n(C, D, std=D**-0.5), n(C, std=0.1)
    if "quant_n" in cfg:
        Q, c = cfg["quant_n"], cfg["quant_dim"]
        sd["quantize_layer.0.weight"], sd["quantize_layer.0.bias"] = n(D, D, std=D**-0.5), n(D)
        sd["quantize_layer.2.weight"], sd["quantize_layer.2.bias"] = n(c, D, std=D**-0.5), n(c)
        codes = F.normalize(n(Q, c, std=1.0), dim=-1)
        sd["quantize.embedding.weight"] = codes
        sd["quantize.embedding.cluster_size"] = n(Q).abs()
        sd["quantize.embedding.embed_avg"] = codes.clone()
        sd["quantize.embedding.initted"] = torch.ones(1)
        sd["quantize.cluster_size"] = n(Q).abs()
    return sd


def fixture_inputs(seed: int, samples: int = 20000, pad_from: int = 13000) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    source = 0.3 * torch.randn(2, samples, generator=g)
    source[1, pad_from:] = 0.0
    mask = torch.zeros(2, samples, dtype=torch.bool)
    mask[1, pad_from:] = True
    return {"source": source, "padding_mask": mask}


def make_fixture(directory: Path, cfg: dict, seed: int,
                 state: dict[str, Tensor] | None = None) -> Path:
    """Write a ``beats`` fixture (checkpoint.pt, inputs, reference outputs, fixture.json)."""
    directory.mkdir(parents=True, exist_ok=True)
    sd = random_state_dict(cfg, seed) if state is None else state
    inputs = fixture_inputs(seed)
    with torch.no_grad():
        pad = reference_forward(cfg, sd, inputs["source"], inputs["padding_mask"])
        plain = reference_forward(cfg, sd, inputs["source"], None)
    kind = "tokenizer" if "quant_n" in cfg else "model"
    if kind == "tokenizer":
        refs = {"labels_padded": pad["labels"], "labels_nomask": plain["labels"],
                "quantize_input_nomask": plain["quant_in"],
                "label_margin_nomask": plain["margin"]}
    elif "lprobs" in pad:
        refs = {"fbank": plain["fbank"], "features_padded": pad["lprobs"],
                "features_nomask": plain["lprobs"]}
    else:
        refs = {"fbank": plain["fbank"], "features_padded": pad["last"],
                "padding_mask_out": pad["mask"], "features_nomask": plain["last"],
                "patch_embed_ln": plain["patch_ln"]}
        refs.update({f"layer_{i:02d}": s for i, s in enumerate(plain["states"])})
    container = {"cfg": cfg, "model": sd}
    if cfg.get("finetuned_model"):
        container["label_dict"] = {i: f"/m/{i:04d}" for i in range(cfg["predictor_class"])}
    torch.save(container, directory / "checkpoint.pt")
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(directory / "inputs.safetensors"))
    save_file({k: v.contiguous().clone() for k, v in refs.items()},
              str(directory / "reference_outputs.safetensors"))
    (directory / "fixture.json").write_text(json.dumps(
        {"system": "beats", "kind": kind, "seed": seed, "cfg": cfg,
         "checkpoint_file": "checkpoint.pt"}, indent=1))
    return directory
