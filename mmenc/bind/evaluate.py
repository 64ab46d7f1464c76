"""Retrieval of a bound model: trained pairs and emergent pairs, at every Matryoshka width.

A :class:`Task` is one direction (queries of one modality, a gallery of another); identical
gallery items are merged, so an item and its duplicate both count as the answer. Each
modality's items are encoded once at full width; truncated widths reuse those vectors
(prefixes renormalised), exactly what ``encode(..., dim=d)`` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmenc.retrieval.metrics import retrieval_metrics

KINDS = ("trained", "direct", "emergent")


@dataclass
class Task:
    """One retrieval direction.

    Args:
        name: the row's label (``"speech -> emoji image"``).
        kind: ``trained`` (through the hub), ``direct`` (a pair loss), ``emergent`` (never
            trained together).
        queries: raw query items; ``answers[i]`` is the gallery item query ``i`` should find.
        answers: raw gallery items, one per query (duplicates are merged).
        query_modality, gallery_modality: their modalities.
        baselines: other scores of the same task to print beside it (name -> metrics).
        extra_gallery: more gallery items that answer no query (distractors).
    """

    name: str
    kind: str
    queries: Sequence[Any]
    answers: Sequence[Any]
    query_modality: str
    gallery_modality: str
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    extra_gallery: Sequence[Any] = ()


def _key(item: Any) -> Any:
    return item if isinstance(item, str | bytes) else id(item)


class Encoded:
    """Full-width embeddings of raw items, computed once per (modality, item)."""

    def __init__(self, model: Any, batch_size: int = 32) -> None:
        self.model, self.batch_size = model, batch_size
        self.cache: dict[tuple[str, Any], Tensor] = {}

    def __call__(self, items: Sequence[Any], modality: str) -> Tensor:
        todo = list(dict.fromkeys(_key(x) for x in items if (modality, _key(x)) not in self.cache))
        if todo:
            by_key = {_key(x): x for x in items}
            emb = self.model.encode([by_key[k] for k in todo], modality,
                                    batch_size=self.batch_size, normalize=False,
                                    show_progress_bar=False)
            self.cache.update({(modality, k): e for k, e in zip(todo, emb, strict=True)})
        return torch.stack([self.cache[(modality, _key(x))] for x in items])


def evaluate_task(task: Task, encoded: Encoded, dims: Sequence[int]) -> dict[str, Any]:
    """Metrics of one task at each width of ``dims``, and chance."""
    gallery = list(dict.fromkeys([*map(_key, task.answers), *map(_key, task.extra_gallery)]))
    by_key = {_key(x): x for x in [*task.answers, *task.extra_gallery]}
    index = {k: i for i, k in enumerate(gallery)}
    relevant = torch.zeros(len(task.queries), len(gallery), dtype=torch.bool)
    relevant[torch.arange(len(task.queries)),
             torch.tensor([index[_key(a)] for a in task.answers])] = True
    q = encoded(task.queries, task.query_modality)
    g = encoded([by_key[k] for k in gallery], task.gallery_modality)
    out: dict[str, Any] = {}
    for d in dims:
        scores = F.normalize(q[:, :d], dim=-1) @ F.normalize(g[:, :d], dim=-1).T
        out[str(d)] = retrieval_metrics(scores, relevant)
    n = len(gallery)
    chance = {"R@1": 1 / n, "R@5": min(5, n) / n, "R@10": min(10, n) / n,
              "MRR": sum(1 / k for k in range(1, n + 1)) / n}
    return {"kind": task.kind, "queries": len(task.queries), "gallery": n,
            "query_modality": task.query_modality, "gallery_modality": task.gallery_modality,
            "dims": out, "chance": chance, "baselines": task.baselines}


def evaluate_bound(model: Any, tasks: Sequence[Task], dims: Sequence[int] | None = None,
                   echo: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Every task's metrics at the model's Matryoshka widths (full width first)."""
    dims = list(dims) if dims is not None else sorted(model.dims, reverse=True)
    encoded = Encoded(model)
    out = {}
    for task in tasks:
        out[task.name] = evaluate_task(task, encoded, dims)
        if echo is not None:
            m = out[task.name]["dims"][str(dims[0])]
            echo(f"  {task.name}: R@1 {m['R@1']:.3f}  MRR {m['MRR']:.3f}")
    return out


def table(results: dict[str, dict[str, Any]], dims: Sequence[int],
          keys: tuple[str, ...] = ("R@1", "R@5", "R@10", "MRR")) -> list[str]:
    """Markdown table lines: one row per task, width and baseline."""
    head = "| pair | kind | dim | " + " | ".join(keys) + " | queries / gallery |"
    lines = [head, "|" + "---|" * (len(keys) + 4)]
    for name, r in results.items():
        for d in dims:
            m = r["dims"].get(str(d))
            if m is None:
                continue
            label = name if d == dims[0] else ""
            lines.append(f"| {label} | {r['kind'] if label else ''} | {d} | "
                         + " | ".join(f"{m[k]:.3f}" for k in keys)
                         + (f" | {r['queries']} / {r['gallery']} |" if label else " | |"))
        for base, m in {**r["baselines"], "chance": r["chance"]}.items():
            lines.append(f"|  | {base} | | " + " | ".join(
                f"{m[k]:.3f}" if k in m else "-" for k in keys) + " | |")
    return lines
