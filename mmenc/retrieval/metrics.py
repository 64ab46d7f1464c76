"""Retrieval metrics over a query x gallery score matrix.

``relevant`` is a boolean ``[q g]`` matrix (True where gallery item g answers query q); the
common one-to-one case is ``torch.eye``. Ranks are 1-based; ties are broken against the query
(a relevant item tied with an irrelevant one counts as ranked below it), so constant scores
never look good.
"""

from __future__ import annotations

import math

from torch import Tensor


def first_relevant_rank(scores: Tensor, relevant: Tensor) -> Tensor:
    """1-based rank of the best-ranked relevant item of each query, ``[q]``."""
    best = scores.masked_fill(~relevant, float("-inf")).max(dim=1).values  # [q]
    return (scores >= best[:, None]).sum(dim=1)  # ties count against the query


def ranks_of_relevant(scores: Tensor, relevant: Tensor) -> list[Tensor]:
    """For each query, the sorted 1-based ranks of all its relevant items (ties against)."""
    out = []
    for row, rel in zip(scores, relevant, strict=True):
        s_rel = row[rel]  # [r]
        out.append(((row[None, :] >= s_rel[:, None]).sum(dim=1)).sort().values)
    return out


def retrieval_metrics(scores: Tensor, relevant: Tensor, ks: tuple[int, ...] = (1, 5, 10)
                      ) -> dict[str, float]:
    """R@K, MRR, mAP, nDCG@10, mean and median rank of the first relevant item.

    Inputs:
        scores: ``[q g]`` similarities (higher is better).
        relevant: ``[q g]`` bool; every query needs at least one relevant item.
    """
    if scores.shape != relevant.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and relevant "
                         f"{tuple(relevant.shape)} differ")
    if not bool(relevant.any(dim=1).all()):
        raise ValueError("every query needs at least one relevant gallery item")
    scores, relevant = scores.double(), relevant.bool()
    first = first_relevant_rank(scores, relevant).double()
    out = {f"R@{k}": float((first <= k).double().mean()) for k in ks}
    out["MRR"] = float((1.0 / first).mean())
    aps, ndcgs = [], []
    for ranks in ranks_of_relevant(scores, relevant):
        r = ranks.double()
        found = (r[None, :] <= r[:, None]).sum(dim=1).double()  # relevant items at or above
        aps.append(float((found / r).mean()))
        gains = sum(1.0 / math.log2(x + 1) for x in r.tolist() if x <= 10)
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(r), 10)))
        ndcgs.append(gains / ideal)
    out["mAP"] = sum(aps) / len(aps)
    out["nDCG@10"] = sum(ndcgs) / len(ndcgs)
    out["mean_rank"] = float(first.mean())
    out["median_rank"] = float(first.median())
    return out


def chance_recall(relevant: Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """R@K of a random ranking: each query's chance that one of its ``r`` relevant items is
    among ``K`` drawn from its ``g`` gallery items, ``1 - C(g-r, K) / C(g, K)``, averaged.

    Inputs:
        relevant: ``[q g]`` bool.
    """
    g = relevant.shape[1]
    counts = relevant.sum(dim=1).tolist()  # r per query
    out = {}
    for k in ks:
        miss = []
        for r in counts:  # C(g-r, K) / C(g, K) as a product, exact for any gallery size
            p = 1.0
            for i in range(min(k, g)):
                p *= max(0, g - r - i) / (g - i)
            miss.append(p)
        out[f"R@{k}"] = 1.0 - sum(miss) / len(miss) if miss else 0.0
    return out
