"""Top-k search over a gallery of embeddings: exact (torch), FAISS flat, FAISS HNSW.

Every index answers ``search(queries, k) -> (scores [q k], ids [q k])`` with inner-product
scores (cosine when both sides are unit vectors) sorted best first. The exact search breaks
ties by the lower gallery id, so its results are reproducible and match a brute-force sort.

Axes: ``q`` queries, ``g`` gallery rows, ``e`` embedding dims, ``k`` results per query.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

INDEX_KINDS = ("auto", "exact", "faiss", "hnsw")
# Above this many rows `auto` hands the search to FAISS: from there on a dedicated library is
# the safer default for memory and time; below it torch is as fast and needs no extra package.
AUTO_FAISS_ROWS = 200_000
# 64k gallery rows per chunk keeps the [q chunk] score block at 256 MB for 1000 queries, and
# big enough for the matrix product to run at full speed.
CORPUS_CHUNK = 65_536

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _dot(queries: Tensor, gallery: Tensor) -> Tensor:
    return queries @ gallery.T


def sort_by_score_then_id(scores: Tensor, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The best ``k`` of each row of candidates, best score first, lower id first on ties."""
    by_id = ids.argsort(dim=1, stable=True)
    scores, ids = scores.gather(1, by_id), ids.gather(1, by_id)
    by_score = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, by_score), ids.gather(1, by_score)


def chunk_topk(scores: Tensor, k: int, offset: int = 0) -> tuple[Tensor, Tensor]:
    """Exact top-k of a ``[q n]`` score block with ties broken by the lower column.

    ``torch.topk`` picks arbitrarily among values tied at the k-th place; taking one extra
    value tells which rows have such a tie, and only those rows are sorted in full.
    """
    n = scores.shape[1]
    k = min(k, n)
    vals, idx = scores.topk(min(k + 1, n), dim=1)  # [q k+1]
    if k < n:
        tied = (vals[:, k - 1] == vals[:, k]).nonzero().flatten().tolist()
        vals, idx = vals[:, :k].clone(), idx[:, :k].clone()
        for row in tied:
            order = scores[row].argsort(descending=True, stable=True)[:k]
            vals[row], idx[row] = scores[row, order], order
    vals, idx = sort_by_score_then_id(vals, idx, k)
    return vals, idx + offset


def topk_exact(queries: Tensor, gallery: Tensor, k: int, score_fn: ScoreFn = _dot,
               corpus_chunk: int = CORPUS_CHUNK, query_chunk: int | None = None,
               normalize_gallery: bool = False) -> tuple[Tensor, Tensor]:
    """Exact top-k by scoring the gallery chunk by chunk (memory: one
    ``[query_chunk corpus_chunk]`` block at a time).

    The gallery is the outer loop, so each chunk is read (and normalised) once however many
    query chunks there are.

    Inputs:
        queries: ``[q e]``.
        gallery: ``[g e]``; rows are scored ``corpus_chunk`` at a time.
        score_fn: ``(queries [q e], rows [n e]) -> [q n]``; the inner product by default.
        normalize_gallery: L2-normalise each gallery chunk before scoring (cosine scores
            with unit queries, without a normalised copy of the whole gallery).
    Returns:
        ``(scores [q k'], ids [q k'])`` with ``k' = min(k, g)``, best first.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if gallery.shape[0] == 0:
        return queries.new_zeros(len(queries), 0), torch.zeros(len(queries), 0, dtype=torch.long)
    query_chunk = query_chunk or max(len(queries), 1)
    q_starts = range(0, len(queries), query_chunk)
    best: list[tuple[Tensor, Tensor] | None] = [None] * len(q_starts)
    for start in range(0, gallery.shape[0], corpus_chunk):
        rows = gallery[start : start + corpus_chunk]
        if normalize_gallery:
            rows = F.normalize(rows, dim=-1)
        for j, qs in enumerate(q_starts):
            found = chunk_topk(score_fn(queries[qs : qs + query_chunk], rows), k, start)
            prev = best[j]
            if prev is not None:
                found = sort_by_score_then_id(torch.cat([prev[0], found[0]], 1),
                                              torch.cat([prev[1], found[1]], 1), k)
            best[j] = found
    done = [b for b in best if b is not None]
    return torch.cat([b[0] for b in done]), torch.cat([b[1] for b in done])


@runtime_checkable
class SearchIndex(Protocol):
    """What every index answers: inner-product top-k, best first."""

    def __len__(self) -> int: ...

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]: ...


def _float32(x: Tensor | np.ndarray) -> Tensor:
    return torch.as_tensor(x).detach().to(device="cpu", dtype=torch.float32).contiguous()


def _faiss() -> Any:
    from mmenc.optional import require

    return require("faiss", "faiss", "FAISS indexes")


class ExactIndex:
    """Brute force with torch: a matrix product and top-k per gallery chunk.

    Args:
        embeddings: ``[g e]`` gallery rows (kept, not copied, when already float32 on CPU).
        corpus_chunk: gallery rows scored at a time.
    """

    kind = "exact"

    def __init__(self, embeddings: Tensor | np.ndarray, corpus_chunk: int = CORPUS_CHUNK) -> None:
        self.embeddings = _float32(embeddings)
        self.corpus_chunk = corpus_chunk

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        return topk_exact(_float32(queries), self.embeddings, k, corpus_chunk=self.corpus_chunk)


class FaissIndex:
    """A FAISS index behind :class:`SearchIndex` (``IndexFlatIP`` unless one is given).

    Args:
        embeddings: ``[g e]`` rows to add; ``None`` when ``index`` is already filled.
        index: a ready FAISS index with inner-product metric.
    """

    kind = "faiss"

    def __init__(self, embeddings: Tensor | np.ndarray | None, index: Any = None) -> None:
        faiss = _faiss()
        if index is None:
            if embeddings is None:
                raise ValueError("give embeddings or a FAISS index")
            index = faiss.IndexFlatIP(int(embeddings.shape[1]))
        if embeddings is not None:
            index.add(_float32(embeddings).numpy())
        self.index = index

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        k = min(k, len(self))
        if k < 1:
            return torch.zeros(len(queries), 0), torch.zeros(len(queries), 0, dtype=torch.long)
        scores, ids = self.index.search(_float32(queries).numpy(), k)
        return torch.from_numpy(scores), torch.from_numpy(ids).long()

    def save(self, path: str | Path) -> None:
        _faiss().write_index(self.index, str(path))


class HnswIndex(FaissIndex):
    """Approximate search on an HNSW graph (``faiss.IndexHNSWFlat``, inner-product metric).

    Args:
        embeddings: ``[g e]`` rows to add (``None`` with ``index``).
        m: graph degree (neighbours per node; 2m on the bottom layer).
        ef_construction: candidate list while building; higher builds a better graph, slower.
        ef_search: candidate list while searching; the recall/speed knob. 256 reaches recall@10
            >= 0.98 on real embeddings (see docs/retrieval.md for where it does not).
        index: a ready HNSW index (as from :meth:`load`).
    """

    kind = "hnsw"

    def __init__(self, embeddings: Tensor | np.ndarray | None, m: int = 32,
                 ef_construction: int = 40, ef_search: int = 256, index: Any = None) -> None:
        faiss = _faiss()
        if index is None:
            if embeddings is None:
                raise ValueError("give embeddings or a FAISS index")
            index = faiss.IndexHNSWFlat(int(embeddings.shape[1]), m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
        super().__init__(embeddings, index)
        self.ef_search = ef_search

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        # efSearch below k would return fewer than k neighbours
        self.index.hnsw.efSearch = max(self.ef_search, k)
        return super().search(queries, k)

    @classmethod
    def load(cls, path: str | Path, ef_search: int = 256) -> HnswIndex:
        return cls(None, index=_faiss().read_index(str(path)), ef_search=ef_search)


def build_index(embeddings: Tensor | np.ndarray, kind: str = "auto",
                auto_faiss_rows: int = AUTO_FAISS_ROWS, **options: Any) -> SearchIndex:
    """An index of ``kind`` over ``embeddings``.

    Args:
        embeddings: ``[g e]`` float rows (unit vectors for cosine scores).
        kind: ``exact`` (torch), ``faiss`` (``IndexFlatIP``), ``hnsw`` or ``auto``: exact up to
            ``auto_faiss_rows`` rows, FAISS above when it is installed.
        options: passed to the index class (``ef_search``, ``m``, ``corpus_chunk`` ...).
    """
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = "exact"
        if len(embeddings) > auto_faiss_rows:
            try:
                _faiss()
                kind = "faiss"
            except ImportError:
                pass
    if kind == "exact":
        return ExactIndex(embeddings, **options)
    if kind == "faiss":
        return FaissIndex(embeddings, **options)
    return HnswIndex(embeddings, **options)
