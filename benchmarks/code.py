"""Encoding the standard library's functions: mmenc's UniXcoder against HF ``RobertaModel``.

Weights: a randomly initialised RoBERTa of UniXcoder's shape (``--size base``: 12 layers, 768
wide, vocabulary 51416, 1026 positions; ``--size small``: 4 layers, 256 wide), saved as an
official UniXcoder folder (``config.json`` + ``pytorch_model.bin``) and read by both sides:
``mmenc.convert("unixcoder", ...)`` and ``transformers.RobertaModel.from_pretrained`` (SDPA
attention). Tokens: a byte-level BPE trained on the corpus (ids below the vocabulary size), in
the encoder-only layout ``<s> <encoder-only> </s> body </s>``, cut at ``--max-length``.

Contenders, each encoding every function (masked mean, the official sentence embedding):
  * ``hf``: batches in the given order, padded to their longest item;
  * ``mmenc same batches``: the same padded batches through mmenc's model (the trunk alone);
  * ``mmenc encode``: ``Encoder.encode`` on the raw source (tokenization included, batches of
    similar lengths, order restored).
Reported: best wall time of ``--repeats`` alternating rounds, tokens/s (real tokens), speed-up
over ``hf``, and the max abs difference of the embeddings against ``hf``.

    python benchmarks/code.py --items 1000 --batch-size 32 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

SIZES = {"base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072),
         "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                       intermediate_size=1024)}


def corpus(n: int) -> list[str]:
    from mmenc.data.stdlib import stdlib_pairs

    return [p.code for p in stdlib_pairs()[:n]]


def official_folder(folder: Path, size: str) -> Path:
    import transformers

    config = transformers.RobertaConfig(vocab_size=51416, max_position_embeddings=1026,
                                        type_vocab_size=10, layer_norm_eps=1e-5, pad_token_id=1,
                                        bos_token_id=0, eos_token_id=2, **SIZES[size])
    torch.manual_seed(0)
    model = transformers.RobertaModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()

    import transformers
    from mmenc_code.tokenizer import FILE, train_bpe

    import mmenc
    from mmenc.nn import masked_mean

    codes = corpus(args.items)
    with tempfile.TemporaryDirectory() as tmp:
        folder = official_folder(Path(tmp) / "unixcoder", args.size)
        vocab = Path(tmp) / "vocab"
        vocab.mkdir()
        train_bpe(codes, vocab_size=8000).save(str(vocab / FILE))
        tok_cfg = {"kind": "bpe", "file": str(vocab / FILE), "max_length": args.max_length}
        model = mmenc.convert("unixcoder", folder).eval()
        model.tokenizers["code"] = mmenc.specs.resolve(
            mmenc.catalogue().get("tokenizer", "unixcoder").factory)(tok_cfg, None)
        hf = transformers.RobertaModel.from_pretrained(folder, attn_implementation="sdpa",
                                                       add_pooling_layer=False).eval()
    tok = model.tokenizers["code"]
    batches = [tok(codes[i: i + args.batch_size]) for i in range(0, len(codes), args.batch_size)]
    tokens = int(sum(int(b.mask.sum()) for b in batches))

    @torch.inference_mode()
    def run_hf() -> torch.Tensor:
        return torch.cat([masked_mean(hf(b.ids, attention_mask=b.mask.long()).last_hidden_state,
                                      b.mask) for b in batches])

    @torch.inference_mode()
    def run_same() -> torch.Tensor:
        return torch.cat([model.embed(b, "code") for b in batches])

    def run_encode() -> torch.Tensor:
        return model.encode(codes, "code", batch_size=args.batch_size, normalize=False)

    contenders = {"hf": run_hf, "mmenc same batches": run_same, "mmenc encode": run_encode}
    best = {name: float("inf") for name in contenders}
    outputs: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            outputs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    rows: dict[str, Any] = {}
    for name in contenders:
        rows[name] = {"seconds": round(best[name], 3),
                      "tokens_per_s": round(tokens / best[name], 1),
                      "speedup": round(best["hf"] / best[name], 3),
                      "max_abs_diff": float((outputs[name] - outputs["hf"]).abs().max())}
    report = {"command": "python benchmarks/code.py " + shlex.join(sys.argv[1:]),
              "items": len(codes), "tokens": tokens, "size": args.size,
              "threads": torch.get_num_threads(), "rows": rows}
    width = max(len(n) for n in rows)
    print(f"{len(codes)} functions, {tokens} tokens, {args.size} size, "
          f"{torch.get_num_threads()} threads")
    for name, row in rows.items():
        print(f"{name:<{width}}  {row['seconds']:>8.2f} s  {row['tokens_per_s']:>9.0f} tok/s  "
              f"{row['speedup']:>5.2f}x  max abs diff {row['max_abs_diff']:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
