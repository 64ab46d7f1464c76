"""ALBEF parity fixtures of any size, built here in the official checkpoint layout
(``{'model': state_dict}``) with reference outputs from independent implementations of the
official structure: timm's ``VisionTransformer`` (ALBEF's ``vit.py`` is timm's ViT) and HF BERT
layers (ALBEF's ``xbert.py`` is HF BERT with cross-attention over ``encoder_width`` inputs in the
layers from ``fusion_layer`` on). Weights are random, LayerNorms and biases included."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn


def _randomize(module: nn.Module, g: torch.Generator) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() == 1 and ("norm" in name.lower()) and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif p.dim() == 1:
                p.copy_(0.05 * noise)
            else:
                p.copy_(noise / max(p.shape[-1], 1) ** 0.5)


def _vit(image_size, patch, dim, depth, heads):
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=image_size, patch_size=patch, embed_dim=dim, depth=depth,
                             num_heads=heads, mlp_ratio=4, qkv_bias=True, num_classes=0,
                             norm_layer=partial(nn.LayerNorm, eps=1e-6), global_pool="token")


def _bert(dim, layers, heads, ffn, vocab, max_pos, cross_width=None):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=vocab, hidden_size=dim, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=ffn,
                     max_position_embeddings=max_pos, layer_norm_eps=1e-12,
                     is_decoder=cross_width is not None,
                     add_cross_attention=cross_width is not None)
    cfg._attn_implementation = "eager"
    model = BertModel(cfg, add_pooling_layer=False)
    if cross_width is not None:  # xbert: keys and values read encoder_width-wide image tokens
        for layer in model.encoder.layer:
            layer.crossattention.self.key = nn.Linear(cross_width, dim)
            layer.crossattention.self.value = nn.Linear(cross_width, dim)
    return model


def interpolate_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """ALBEF's fine-tuning rule: class token kept, the patch grid resized bicubically."""
    extra, patches = pos[:, :1], pos[:, 1:]
    side = int(patches.shape[1] ** 0.5)
    patches = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([extra, patches.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


def make_albef_fixture(out: Path, seed: int = 0, vit_dim=48, vit_depth=2, vit_heads=3,
                       image_size=32, patch=8, text_dim=32, text_heads=4, text_ffn=64,
                       layers=3, fusion_layer=1, vocab=120, max_pos=20, embed_dim=16,
                       queue=8, batch=3, length=7) -> Path:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    vit, vit_m = (_vit(image_size, patch, vit_dim, vit_depth, vit_heads) for _ in range(2))
    text, text_m = (_bert(text_dim, fusion_layer, text_heads, text_ffn, vocab, max_pos)
                    for _ in range(2))
    fusion, fusion_m = (_bert(text_dim, layers - fusion_layer, text_heads, text_ffn, vocab,
                              max_pos, cross_width=vit_dim) for _ in range(2))
    heads = nn.ModuleDict({"vision_proj": nn.Linear(vit_dim, embed_dim),
                           "text_proj": nn.Linear(text_dim, embed_dim),
                           "itm_head": nn.Linear(text_dim, 2),
                           "mlm_dense": nn.Linear(text_dim, text_dim),
                           "mlm_norm": nn.LayerNorm(text_dim, eps=1e-12)})
    heads_m = nn.ModuleDict({k: nn.Linear(v.in_features, v.out_features)
                             for k, v in heads.items() if k.endswith("proj")})
    for m in (vit, vit_m, text, text_m, fusion, fusion_m, heads, heads_m):
        _randomize(m, g)
    mlm_bias = 0.05 * torch.randn(vocab, generator=g)

    sd: dict[str, torch.Tensor] = {"temp": torch.tensor(0.07)}
    sd["image_queue"] = F.normalize(torch.randn(embed_dim, queue, generator=g), dim=0)
    sd["text_queue"] = F.normalize(torch.randn(embed_dim, queue, generator=g), dim=0)
    sd["queue_ptr"] = torch.zeros(1, dtype=torch.long)

    def add_encoders(suffix, v, t, f, h):
        for k, x in v.state_dict().items():
            sd[f"visual_encoder{suffix}.{k}"] = x
        bert = f"text_encoder{suffix}.bert."
        for k, x in t.state_dict().items():
            sd[bert + k] = x
        for k, x in f.encoder.state_dict().items():  # layer.i -> layer.(fusion_layer + i)
            _, i, rest = k.split(".", 2)
            sd[f"{bert}encoder.layer.{int(i) + fusion_layer}.{rest}"] = x
        for name in ("vision_proj", "text_proj"):
            for p in ("weight", "bias"):
                sd[f"{name}{suffix}.{p}"] = getattr(h[name], p)
        cls = f"text_encoder{suffix}.cls.predictions."
        sd[cls + "bias"] = mlm_bias
        sd[cls + "transform.dense.weight"] = heads["mlm_dense"].weight
        sd[cls + "transform.dense.bias"] = heads["mlm_dense"].bias
        sd[cls + "transform.LayerNorm.weight"] = heads["mlm_norm"].weight
        sd[cls + "transform.LayerNorm.bias"] = heads["mlm_norm"].bias
        sd[cls + "decoder.weight"] = sd[bert + "embeddings.word_embeddings.weight"]
        sd[cls + "decoder.bias"] = mlm_bias

    add_encoders("", vit, text, fusion, heads)
    for p in ("weight", "bias"):
        sd[f"itm_head.{p}"] = getattr(heads["itm_head"], p)
    add_encoders("_m", vit_m, text_m, fusion_m, heads_m)
    sd = {k: v.detach().clone() if not k.endswith("decoder.weight") else v.detach()
          for k, v in sd.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"model": sd}, out / "checkpoint.pth")

    ids = torch.randint(2, vocab, (batch, length), generator=g)
    ids[:, 0] = 1  # [CLS]-like start
    mask = torch.ones(batch, length, dtype=torch.long)
    for b in range(1, batch):
        n = max(2, length - 2 * b)
        ids[b, n:] = 0
        mask[b, n:] = 0
    image = torch.randn(batch, 3, image_size, image_size, generator=g)
    hires_size = image_size * 3 // 2
    hires = torch.randn(1, 3, hires_size, hires_size, generator=g)

    vit_hires = _vit(hires_size, patch, vit_dim, vit_depth, vit_heads)
    state = dict(vit.state_dict())
    state["pos_embed"] = interpolate_pos_embed(state["pos_embed"], hires_size // patch)
    vit_hires.load_state_dict(state)
    for m in (vit, vit_m, text, fusion, vit_hires):
        m.eval()
    with torch.no_grad():
        image_embeds = vit.forward_features(image)
        text_embeds = text(input_ids=ids, attention_mask=mask).last_hidden_state
        ext = (1.0 - mask[:, None, None, :].float()) * -10000.0
        h = text_embeds
        for layer in fusion.encoder.layer:
            h = layer(h, attention_mask=ext, encoder_hidden_states=image_embeds,
                      encoder_attention_mask=None)[0]
        image_feat = F.normalize(heads["vision_proj"](image_embeds[:, 0]), dim=-1)
        text_feat = F.normalize(heads["text_proj"](text_embeds[:, 0]), dim=-1)
        refs = {"image_embeds": image_embeds, "text_embeds": text_embeds,
                "fusion_embeds": h, "multi_modal_embeds": h,
                "image_feat": image_feat, "text_feat": text_feat,
                "itm_logits": heads["itm_head"](h[:, 0]),
                "sim_i2t": image_feat @ text_feat.T / 0.07,
                "image_embeds_m": vit_m.forward_features(image),
                "image_embeds_hires": vit_hires.forward_features(hires),
                "pos_embed_interpolated": state["pos_embed"]}
    save_file({"input_ids": ids, "attention_mask": mask, "image": image, "image_hires": hires},
              str(out / "inputs.safetensors"))
    save_file({k: v.clone().contiguous() for k, v in refs.items()},
              str(out / "reference_outputs.safetensors"))
    fixture = {"system": "albef", "variant": f"test-seed{seed}", "seed": seed,
               "checkpoint_file": "checkpoint.pth",
               "vit_override": {"embed_dim": vit_dim, "depth": vit_depth, "num_heads": vit_heads},
               "bert_config": {"hidden_size": text_dim, "num_hidden_layers": layers,
                               "num_attention_heads": text_heads, "fusion_layer": fusion_layer,
                               "encoder_width": vit_dim}}
    (out / "fixture.json").write_text(json.dumps(fixture, indent=1))
    return out
