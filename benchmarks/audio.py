"""Feature extraction speed of mmenc-audio's BEATs against a re-run of the official code's
structure, on identical weights, with output agreement.

    python benchmarks/audio.py --size base --batch 4 --seconds 10 --repeats 3 [--json OUT]

One random BEATs model of the chosen size (``base``: the published 12 layers, d768; ``tiny``:
the ``beats-tiny`` recipe) is exported to the official container (``export_official``); both
sides then run fp32 under ``torch.inference_mode()`` on the same padded waveform batch
(``[b t]`` at 16 kHz, the last row padded from 60 % on, with the official sample mask):

- ``mmenc extract_features``: :meth:`BEATsEncoder.extract_features` (fbank per row, patch
  matmul, ``mmenc.nn`` trunk: fused qkv, shared gated relative bias, SDPA);
- ``official structure``: the plain eager forward of
  ``plugins/mmenc-audio/tests/audio_beats_reference.py`` on the official state dict (fbank per
  row, ``Conv2d`` patches, separate q/k/v projections, explicit ``softmax(QK^T + bias) V``,
  DeepNorm post-LN), the layout and order of operations of the official ``BEATs.py`` /
  ``backbone.py`` (eval mode, no dropout);
- ``mmenc encode`` (the tokenizer path: ``model.encode(clips, "audio")``, mean-pooled), for
  reference; it computes each clip's fbank on its own samples, so it is not compared numerically.

Reported: clips/s of each row, the ratio mmenc / official structure, and the max abs
difference of the last hidden states (padded positions excluded) and of the fbank.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def _reference() -> Any:
    sys.path.insert(0, str(ROOT / "plugins" / "mmenc-audio" / "tests"))
    import audio_beats_reference

    return audio_beats_reference


def interleaved(fns: dict[str, Callable[[], object]], repeats: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of each function, alternating between them every round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def run(size: str = "base", batch: int = 4, seconds: float = 10.0, repeats: int = 3,
        seed: int = 0) -> dict[str, Any]:
    from mmenc_audio.convert import export_official

    import mmenc

    torch.manual_seed(seed)
    recipe = {"base": "beats-base", "tiny": "beats-tiny"}[size]
    model = mmenc.create_model(recipe).eval()
    official = export_official(model)
    cfg, state = official["cfg"], official["model"]
    reference = _reference().reference_forward

    samples = int(seconds * 16000)
    g = torch.Generator().manual_seed(seed)
    source = 0.1 * torch.randn(batch, samples, generator=g)
    mask = torch.zeros(batch, samples, dtype=torch.bool)
    cut = int(0.6 * samples)
    source[-1, cut:] = 0.0
    mask[-1, cut:] = True
    clips = [source[i].numpy() if i < batch - 1 else source[i, :cut].numpy()
             for i in range(batch)]

    with torch.inference_mode():
        ours = model.extract_features(source, mask)
        theirs = reference(cfg, state, source, mask)
        real = ~ours.padding_mask
        diff = float((ours.hidden - theirs["last"]).abs()[real].max())
        fbank_diff = float((ours.fbank - theirs["fbank"]).abs().max())
        same_mask = bool(torch.equal(ours.padding_mask, theirs["mask"]))

        fns = {
            "mmenc extract_features": lambda: model.extract_features(source, mask),
            "official structure": lambda: reference(cfg, state, source, mask),
            "mmenc encode (tokenizer path)": lambda: model.encode(clips, "audio",
                                                                  batch_size=batch),
        }
        times = interleaved(fns, repeats)
    rows = {name: {"median_s": statistics.median(t), "clips_per_s": batch / statistics.median(t)}
            for name, t in times.items()}
    ratio = (rows["mmenc extract_features"]["clips_per_s"]
             / rows["official structure"]["clips_per_s"])
    return {"size": size, "params": sum(p.numel() for p in model.parameters()),
            "batch": batch, "seconds": seconds, "patches": int(ours.hidden.shape[1]),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows,
            "ratio_mmenc_over_official": ratio, "max_abs_diff_hidden": diff,
            "max_abs_diff_fbank": fbank_diff, "padding_mask_equal": same_mask}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("base", "tiny"), default="base")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = run(args.size, args.batch, args.seconds, args.repeats)
    print(f"BEATs {args.size} ({result['params'] / 1e6:.1f} M), batch {args.batch} x "
          f"{args.seconds:g} s ({result['patches']} patches), {result['threads']} threads, "
          f"torch {result['torch']}")
    for name, row in result["rows"].items():
        print(f"  {name:<30} {row['clips_per_s']:8.2f} clips/s  ({row['median_s'] * 1e3:.0f} ms)")
    print(f"  ratio mmenc / official structure: {result['ratio_mmenc_over_official']:.2f}x")
    print(f"  max abs diff: hidden {result['max_abs_diff_hidden']:.1e}, fbank "
          f"{result['max_abs_diff_fbank']:.1e}; padding masks equal: "
          f"{result['padding_mask_equal']}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
