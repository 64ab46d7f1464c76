"""Exact top-k search (mmenc's default) against FAISS ``IndexFlatIP``, and HNSW recall.

Part 1: top-``k`` of ``--queries`` unit queries over ``--rows`` x ``--dim`` random unit vectors
(float32, fixed seed): mmenc's exact search (``ExactIndex``: torch matmul + top-k per gallery
chunk, what ``mmenc search`` runs by default) and ``faiss.IndexFlatIP`` on the same data, timed
alternately; the ids must agree. ``semantic_search`` (cosine, which normalises each corpus
chunk) is timed once for reference.

Part 2: ``faiss.IndexHNSWFlat`` (inner product, M=32) on ``--hnsw-rows`` rows: build time, then
query time and recall@k against the exact top-k for each efSearch in ``--ef-search``. Two kinds
of data: ``uniform`` (the random unit vectors of part 1: the worst case for a graph index, no
structure at all) and ``lowrank`` (unit vectors near a ``--rank``-dimensional subspace plus
noise, closer to real embeddings, whose intrinsic dimension is far below their width).

    python benchmarks/retrieval.py --rows 1000000 --dim 256 --queries 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from mmenc.retrieval.index import ExactIndex, FaissIndex, HnswIndex
from mmenc.retrieval.search import semantic_search


def uniform_rows(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=gen), dim=1)


def lowrank_rows(n: int, dim: int, basis: torch.Tensor, gen: torch.Generator,
                 noise: float = 0.35) -> torch.Tensor:
    """Unit vectors near the row space of ``basis [r dim]``: ``z @ basis + noise``."""
    z = torch.randn(n, basis.shape[0], generator=gen)  # [n r]
    signal = F.normalize(z @ basis, dim=1)
    return F.normalize(signal + noise * uniform_rows(n, dim, gen), dim=1)


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall times, alternating between contenders so that load from other processes on a
    shared machine falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def recall_at_k(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = (found[:, :, None] == truth[:, None, :]).any(dim=2).sum()
    return float(hits) / truth.numel()


def hnsw_sweep(name: str, gallery: torch.Tensor, queries: torch.Tensor, truth: torch.Tensor,
               args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    index = HnswIndex(gallery, m=32, ef_construction=args.ef_construction)
    build = time.perf_counter() - start
    print(f"hnsw[{name}] {len(gallery)} rows: build {build:.1f} s "
          f"(M=32, efConstruction={args.ef_construction})", flush=True)
    rows = []
    for ef in args.ef_search:
        index.ef_search = ef
        start = time.perf_counter()
        _, ids = index.search(queries, args.k)
        seconds = time.perf_counter() - start
        rows.append({"ef_search": ef, "seconds": seconds,
                     "recall": recall_at_k(ids, truth)})
        print(f"  efSearch {ef:>5}: {seconds:7.2f} s for {len(queries)} queries, "
              f"recall@{args.k} {rows[-1]['recall']:.4f}", flush=True)
    return {"rows": len(gallery), "build_seconds": build, "sweep": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hnsw-rows", type=int, default=None, help="default: --rows")
    parser.add_argument("--hnsw-data", nargs="*", default=["uniform", "lowrank"])
    parser.add_argument("--rank", type=int, default=32, help="subspace rank of 'lowrank'")
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv), flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)

    gen = torch.Generator().manual_seed(args.seed)
    gallery = uniform_rows(args.rows, args.dim, gen)  # [g e]
    queries = uniform_rows(args.queries, args.dim, gen)  # [q e]
    indexes = {"mmenc exact": ExactIndex(gallery), "faiss IndexFlatIP": FaissIndex(gallery)}
    results: dict[str, Any] = {}

    def contender(name: str) -> Callable[[], None]:
        return lambda: results.__setitem__(name, indexes[name].search(queries, args.k))

    times = interleaved({name: contender(name) for name in indexes}, args.repeats)
    indexes.clear()  # FAISS holds a copy of the gallery
    results["exact"], results["faiss"] = results["mmenc exact"], results["faiss IndexFlatIP"]
    agree = float((results["exact"][1] == results["faiss"][1]).float().mean())
    start = time.perf_counter()
    semantic_search(queries, gallery, top_k=args.k)
    sem = time.perf_counter() - start
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = med["mmenc exact"] / med["faiss IndexFlatIP"]
    print(f"exact top-{args.k}, {args.queries} queries x {args.rows} x {args.dim} "
          f"(median of {args.repeats}):")
    for name, t in times.items():
        print(f"  {name:<18} {med[name]:7.2f} s  (runs: {', '.join(f'{x:.2f}' for x in t)})")
    print(f"  mmenc / faiss time {ratio:.3f}; ids agree {agree:.4f}; "
          f"semantic_search (cosine) {sem:.2f} s", flush=True)
    report: dict[str, Any] = {"args": vars(args), "exact_seconds": med["mmenc exact"],
                              "faiss_seconds": med["faiss IndexFlatIP"], "ratio": ratio,
                              "ids_agree": agree, "semantic_search_seconds": sem, "hnsw": {}}

    n_hnsw = args.hnsw_rows or args.rows
    for name in args.hnsw_data:
        if name == "uniform":
            data = gallery[:n_hnsw]
            truth = results["exact"][1] if n_hnsw == args.rows else \
                ExactIndex(data).search(queries, args.k)[1]
            report["hnsw"][name] = hnsw_sweep(name, data, queries, truth, args)
        else:
            basis = torch.randn(args.rank, args.dim, generator=gen)
            data = lowrank_rows(n_hnsw, args.dim, basis, gen)
            lq = lowrank_rows(args.queries, args.dim, basis, gen)
            truth = ExactIndex(data).search(lq, args.k)[1]
            report["hnsw"][name] = hnsw_sweep(name, data, lq, truth, args)
        del data
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    report["peak_rss_gb"] = peak
    print(f"peak memory {peak:.2f} GB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
