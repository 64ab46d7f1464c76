"""A bound-model training step with the cached hub against the same step without the cache.

Both steps train the same image tower (the main job's: a 4-layer ViT on 64 px emoji) on the
same batch of emoji image <-> name pairs against the packaged MiniLM hub (frozen):

  * ``uncached``: what a two-tower trainer with a frozen text side does: the batch's names go
    through MiniLM at every step (no gradient), then the tower's forward and backward and an
    InfoNCE loss over the batch;
  * ``cached``: the names were embedded once before training
    (:class:`mmenc.bind.cache.HubCache`); a step is the tower's forward and backward and the
    loss over every cached name of the training set (``negatives: cache``).

Reported per contender: the median wall time and CPU time of a step over ``--steps`` steps
(after one warm-up step), and the ratio uncached / cached. The cached step does more (all
~3,000 training names are negatives, not only the batch's) and still costs less.

    python benchmarks/bind.py --batch-size 96 --steps 10
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def timed(step: Any, steps: int) -> dict[str, float]:
    step()
    walls, cpus = [], []
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--work", default=None, help="folder for the data and the hub")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from mmenc.bind import datasets
    from mmenc.bind.cache import HubCache, hub_id
    from mmenc.bind.job import tower_specs
    from mmenc.bind.losses import HubLoss
    from mmenc.bind.towers import build_tower
    from mmenc.bind.train import load_items
    from mmenc.demo import convert_minilm

    work = Path(args.work or tempfile.mkdtemp(prefix="mmenc-bind-bench-"))
    hub, _, minilm, _ = convert_minilm(work, echo=lambda _: None)
    hub = hub.eval()
    rows = datasets.emoji(work / "emoji")["train"]
    texts = list(dict.fromkeys(r["text"] for r in rows))
    row_of = {t: i for i, t in enumerate(texts)}
    torch.manual_seed(0)
    tower = build_tower("image", tower_specs(minilm, 4.0)["image"], 384)
    loss = HubLoss("infonce", [32, 64, 128, 384])
    optim = torch.optim.AdamW([*tower.parameters(), *loss.parameters()], lr=1e-4)
    batch_rows = rows[: args.batch_size]
    items, _ = load_items("image", [r["image"] for r in batch_rows])
    batch = tower.tokenizer(items)

    def embed(ts: list[str]) -> torch.Tensor:
        return hub.encode(ts, "text", batch_size=64, normalize=True, show_progress_bar=False)

    t0 = time.perf_counter()
    cache = HubCache(work / "cache", hub_id(hub))
    candidates = cache.vectors(texts, embed)
    cache_seconds = time.perf_counter() - t0
    labels = torch.tensor([row_of[r["text"]] for r in batch_rows])

    def cached() -> None:
        out, _ = loss(tower(batch), candidates, labels)
        optim.zero_grad()
        out.backward()
        optim.step()

    def uncached() -> None:
        names = [r["text"] for r in batch_rows]
        with torch.no_grad():
            vectors = embed(list(dict.fromkeys(names)))
        local = {t: i for i, t in enumerate(dict.fromkeys(names))}
        out, _ = loss(tower(batch), vectors, torch.tensor([local[t] for t in names]))
        optim.zero_grad()
        out.backward()
        optim.step()

    result: dict[str, Any] = {"uncached": timed(uncached, args.steps),
                              "cached": timed(cached, args.steps)}
    result["ratio_wall"] = result["uncached"]["wall_s"] / result["cached"]["wall_s"]
    result["ratio_cpu"] = result["uncached"]["cpu_s"] / result["cached"]["cpu_s"]
    result.update(batch_size=args.batch_size, steps=args.steps, cached_texts=len(texts),
                  cache_build_s=round(cache_seconds, 1), threads=torch.get_num_threads(),
                  command="python benchmarks/bind.py " + shlex.join(argv or sys.argv[1:]))
    print(f"| step | wall s | CPU s |\n|---|---|---|\n"
          f"| uncached (MiniLM on the batch's names) | {result['uncached']['wall_s']:.3f} | "
          f"{result['uncached']['cpu_s']:.3f} |\n"
          f"| cached ({len(texts)} names as negatives) | {result['cached']['wall_s']:.3f} | "
          f"{result['cached']['cpu_s']:.3f} |\n"
          f"| ratio | {result['ratio_wall']:.2f}x | {result['ratio_cpu']:.2f}x |")
    print(f"cache built once: {len(texts)} names in {cache_seconds:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
