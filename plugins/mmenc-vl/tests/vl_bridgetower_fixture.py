"""Parity fixtures of any size, built here from HF ``transformers.BridgeTowerModel`` with random
weights (LayerNorms and biases included, so dropped or swapped ones show), in the layout of the
shared fixtures: ``fixture.json``, ``inputs.safetensors``, ``reference_outputs.safetensors`` and
``checkpoint/`` (``config.json`` + ``pytorch_model.bin``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def hf_config(text_hidden=48, text_layers=3, text_heads=3, text_ffn=96, vision_hidden=64,
              vision_layers=3, cross_layers=2, image_size=48, patch=16, vocab=300, max_pos=40):
    from transformers import BridgeTowerConfig

    return BridgeTowerConfig(
        text_config={"vocab_size": vocab, "hidden_size": text_hidden,
                     "num_hidden_layers": text_layers, "num_attention_heads": text_heads,
                     "intermediate_size": text_ffn, "max_position_embeddings": max_pos,
                     "type_vocab_size": 1, "pad_token_id": 1, "bos_token_id": 0,
                     "eos_token_id": 2, "layer_norm_eps": 1e-5},
        vision_config={"hidden_size": vision_hidden, "num_hidden_layers": vision_layers,
                       "patch_size": patch, "image_size": image_size, "layer_norm_eps": 1e-5,
                       "share_layernorm": True, "remove_last_layer": False},
        hidden_size=text_hidden, num_hidden_layers=cross_layers, num_attention_heads=text_heads,
        share_cross_modal_transformer_layers=True, share_link_tower_layers=False,
        link_tower_type="add", layer_norm_eps=1e-5,
    )


def randomize(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_norm = p.dim() == 1 and ("LayerNorm" in name or "layernorm" in name
                                        or ".ln_" in name or name.endswith(("ln_pre.weight",
                                                                            "ln_post.weight")))
            if is_norm and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif p.dim() == 1:
                p.copy_(0.05 * noise)
            else:
                p.copy_(noise / max(p.shape[-1], 1) ** 0.5)


def make_bridgetower_fixture(out: Path, seed: int = 0, batch: int = 3, length: int = 9,
                             **sizes) -> Path:
    """Write a fixture directory and return it."""
    from transformers import BridgeTowerModel

    torch.manual_seed(seed)
    config = hf_config(**sizes)
    model = BridgeTowerModel(config).eval()
    randomize(model, seed)
    out = Path(out)
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    (out / "checkpoint" / "config.json").write_text(config.to_json_string())
    torch.save(model.state_dict(), out / "checkpoint" / "pytorch_model.bin")

    g = torch.Generator().manual_seed(seed + 1)
    vocab = config.text_config.vocab_size
    ids = torch.randint(3, vocab, (batch, length), generator=g)
    ids[:, 0] = 0
    mask = torch.ones(batch, length, dtype=torch.long)
    for b in range(1, batch):  # later items are shorter: </s> then <pad>
        n = max(3, length - 2 * b)
        ids[b, n - 1] = 2
        ids[b, n:] = 1
        mask[b, n:] = 0
    ids[0, -1] = 2
    size = config.vision_config.image_size
    pixels = torch.randn(batch, 3, size, size, generator=g)
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels,
              "pixel_mask": torch.ones(batch, size, size, dtype=torch.long)}
    with torch.no_grad():
        o = model(**inputs, output_hidden_states=True)
    refs = {"text_features": o.text_features, "image_features": o.image_features,
            "pooler_output": o.pooler_output}
    text_states, image_states, cross = o.hidden_states
    for i, h in enumerate(text_states):
        refs[f"hidden_text_{i:02d}"] = h
    for i, h in enumerate(image_states):
        refs[f"hidden_image_{i:02d}"] = h.permute(1, 0, 2)
    for i, (t, v) in enumerate(cross):
        refs[f"cross_text_{i:02d}"] = t
        refs[f"cross_image_{i:02d}"] = v
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(out / "inputs.safetensors"))
    save_file({k: v.clone().contiguous() for k, v in refs.items()},
              str(out / "reference_outputs.safetensors"))
    fixture = {"system": "bridgetower", "variant": f"test-seed{seed}", "seed": seed,
               "checkpoint_dir": "checkpoint/", "config": config.to_dict()}
    (out / "fixture.json").write_text(json.dumps(fixture, indent=1, default=str))
    return out
