"""Builds parity fixtures from random HF BERT / RoBERTa models, in the layout of
../shared/parity: ``fixture.json``, ``inputs.safetensors``, ``reference_outputs.safetensors``
and ``checkpoint/`` (an HF folder: ``config.json`` + ``pytorch_model.bin``).

Every tensor is redrawn from a seeded normal distribution (LayerNorm weights around 1, biases
non-zero) so that a converter that drops or swaps a LayerNorm or a bias fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def make_hf_fixture(out: Path, model_type: str = "roberta", seed: int = 0, layers: int = 2,
                    dim: int = 64, heads: int = 4, ffn: int = 128, vocab: int = 300,
                    batch: int = 2, length: int = 16, pad_tail: int = 5) -> Path:
    """Write a fixture directory and return it."""
    transformers = __import__("transformers")
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=dim, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=ffn,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if model_type == "roberta":
        config = transformers.RobertaConfig(**common, max_position_embeddings=length + 4,
                                            pad_token_id=1, type_vocab_size=1,
                                            layer_norm_eps=1e-5, attn_implementation="eager")
        model = transformers.RobertaModel(config)
        pad = 1
    else:
        config = transformers.BertConfig(**common, max_position_embeddings=length + 4,
                                         pad_token_id=0, type_vocab_size=2,
                                         attn_implementation="eager")
        model = transformers.BertModel(config)
        pad = 0
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    model.eval()
    ids = torch.randint(5, vocab, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    if pad_tail:
        ids[-1, -pad_tail:] = pad
        mask[-1, -pad_tail:] = 0
    with torch.no_grad():
        res = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    outputs = {"last_hidden_state": res.last_hidden_state, "pooler_output": res.pooler_output}
    for i, h in enumerate(res.hidden_states):
        outputs[f"hidden_states_{i:02d}"] = h

    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint").mkdir(exist_ok=True)
    (out / "checkpoint" / "config.json").write_text(config.to_json_string())
    torch.save(model.state_dict(), out / "checkpoint" / "pytorch_model.bin")
    save_file({"input_ids": ids, "attention_mask": mask}, str(out / "inputs.safetensors"))
    save_file({k: v.clone().contiguous() for k, v in outputs.items()},
              str(out / "reference_outputs.safetensors"))
    fixture = {
        "system": model_type, "variant": f"random-{layers}L-d{dim}", "seed": seed,
        "reference_runtime": f"transformers {transformers.__version__}, eager, fp32, CPU",
        "checkpoint_dir": "checkpoint/",
        "config": json.loads(config.to_json_string()),
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                   for k, v in {"input_ids": ids, "attention_mask": mask}.items()},
        "outputs": {k: {"shape": list(v.shape), "dtype": "float32"} for k, v in outputs.items()},
    }
    (out / "fixture.json").write_text(json.dumps(fixture, indent=1))
    return out
