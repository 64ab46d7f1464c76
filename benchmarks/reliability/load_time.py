"""What the finite-weights check adds to ``mmenc.load``: the median load time of a saved model
of ``RECIPE`` with and without it, and the check alone on the model's weights.

    python benchmarks/reliability/load_time.py bert --out /tmp/mmenc-load-time
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import mmenc
import mmenc.model
from mmenc.checkpoint import check_finite


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--out", type=Path, required=True, help="where the model is saved")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = args.out / args.recipe
    if not (folder / "config.json").is_file():
        mmenc.create_model(args.recipe).save_pretrained(folder)
    mmenc.load(folder)  # warm the page cache and the imports
    kept = mmenc.model.check_finite
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):  # alternated, so that the machine's load falls on both
        for check in (True, False):
            mmenc.model.check_finite = kept if check else (  # type: ignore[assignment]
                lambda state, source: None)
            try:
                times[check].append(median_seconds(lambda: mmenc.load(folder), 1))
            finally:
                mmenc.model.check_finite = kept
    checked, unchecked = (statistics.median(times[c]) for c in (True, False))
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    alone = median_seconds(lambda: check_finite(state, folder), args.repeats)
    params = sum(t.numel() for t in state.values()) / 1e6
    print(f"{args.recipe}: {params:.1f}M parameters; load {checked:.3f} s with the check, "
          f"{unchecked:.3f} s without; the check alone {alone * 1000:.1f} ms "
          f"({100 * alone / unchecked:.1f}% of a load)")


if __name__ == "__main__":
    main()
