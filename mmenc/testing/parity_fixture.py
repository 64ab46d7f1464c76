"""Parity fixtures made offline from random HF BERT / RoBERTa models.

A fixture has the layout ``mmenc parity`` reads (as in ``../shared/parity``):
``fixture.json``, ``inputs.safetensors``, ``reference_outputs.safetensors`` and ``checkpoint/``
(an HF folder: ``config.json`` + ``pytorch_model.bin``). The reference outputs come from
``transformers``' own ``BertModel`` / ``RobertaModel`` (eager attention, fp32, CPU), never from
mmenc, so ``mmenc parity`` on such a fixture checks mmenc's converter and trunk against an
independent implementation.

Every tensor is redrawn from a seeded normal distribution (LayerNorm weights around 1, biases
non-zero) so that a converter that drops or swaps a LayerNorm or a bias fails.

    python -m mmenc.testing.parity_fixture OUT [--system bert|roberta] [--seed N] [--layers N]
        [--dim N] [--heads N] [--ffn N] [--vocab N] [--length N]

needs ``transformers`` (in mmenc's ``test`` extra).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmenc.errors import ConfigError

SYSTEMS = ("bert", "roberta")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError("a parity fixture's reference outputs come from transformers, which "
                          "is not installed (pip install 'mmenc[test]')") from None
    return transformers


def make_hf_fixture(out: Path, model_type: str = "roberta", seed: int = 0, layers: int = 2,
                    dim: int = 64, heads: int = 4, ffn: int = 128, vocab: int = 300,
                    batch: int = 2, length: int = 16, pad_tail: int = 5) -> Path:
    """Write a fixture directory ``out`` and return it.

    Args:
        out: the fixture directory (created; files already there are overwritten).
        model_type: ``bert`` or ``roberta``: the fixture's ``system``.
        seed: seeds the weights and the inputs.
        layers, dim, heads, ffn, vocab: the model's sizes.
        batch, length: the inputs' shape.
        pad_tail: padding at the end of the last row (its attention mask is 0 there).
    """
    if model_type not in SYSTEMS:
        raise ConfigError(f"parity fixture system {model_type!r}: expected one of {SYSTEMS}")
    if dim % heads:
        raise ConfigError(f"parity fixture: dim {dim} does not divide into {heads} heads")
    if vocab <= 5:
        raise ConfigError(f"parity fixture: vocab {vocab} leaves no ids above the 5 special ones")
    if not 0 <= pad_tail < length:
        raise ConfigError(f"parity fixture: pad_tail {pad_tail} must be in [0, {length})")
    transformers = _transformers()
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

    out = Path(out)
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    (out / "checkpoint" / "config.json").write_text(config.to_json_string())
    # the official container of an HF folder; mmenc reads it back with weights_only=True
    torch.save(model.state_dict(), out / "checkpoint" / "pytorch_model.bin")
    save_file({"input_ids": ids, "attention_mask": mask}, str(out / "inputs.safetensors"))
    save_file({k: v.clone().contiguous() for k, v in outputs.items()},
              str(out / "reference_outputs.safetensors"))
    fixture = {
        "system": model_type, "variant": f"random-{layers}L-d{dim}", "seed": seed,
        "reference_runtime": f"transformers {transformers.__version__} "
                             f"{type(model).__name__}, eager, fp32, CPU",
        "checkpoint_dir": "checkpoint/",
        "config": json.loads(config.to_json_string()),
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                   for k, v in {"input_ids": ids, "attention_mask": mask}.items()},
        "outputs": {k: {"shape": list(v.shape), "dtype": "float32"} for k, v in outputs.items()},
    }
    (out / "fixture.json").write_text(json.dumps(fixture, indent=1))
    return out


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mmenc.testing.parity_fixture",
        description="Write a parity fixture: a random HF BERT/RoBERTa folder, fixed inputs and "
                    "transformers' outputs on them (read by `mmenc parity OUT`).")
    parser.add_argument("out", type=Path, help="the fixture directory to write")
    parser.add_argument("--system", choices=SYSTEMS, default="bert")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=_positive, default=2)
    parser.add_argument("--dim", type=_positive, default=64)
    parser.add_argument("--heads", type=_positive, default=4)
    parser.add_argument("--ffn", type=_positive, default=128)
    parser.add_argument("--vocab", type=_positive, default=300)
    parser.add_argument("--length", type=_positive, default=16)
    args = parser.parse_args(argv)
    try:
        out = make_hf_fixture(args.out, args.system, seed=args.seed, layers=args.layers,
                              dim=args.dim, heads=args.heads, ffn=args.ffn, vocab=args.vocab,
                              length=args.length, pad_tail=args.length // 3)
    except ConfigError as exc:
        parser.error(str(exc))
    runtime = json.loads((out / "fixture.json").read_text())["reference_runtime"]
    print(f"wrote {out}: system {args.system}, {args.layers} layers, d{args.dim}; "
          f"reference outputs from {runtime}")


if __name__ == "__main__":
    main()
