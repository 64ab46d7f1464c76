"""A lexical baseline: BM25 (``rank-bm25``) over words, with identifiers split.

``snake_case`` and ``camelCase`` identifiers are split into their words and lower-cased, so a
docstring's "read the header" meets ``readHeader`` and ``read_header`` alike. The scorer has
the interface :func:`mmenc.retrieval.evaluate.evaluate_retrieval` accepts in place of a model
(``score_items``), and ``mmenc eval retrieval bm25 ...`` uses it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def words(text: str) -> list[str]:
    """Lower-cased words; identifiers split at underscores, case changes and digits."""
    return [w.lower() for w in _WORD.findall(text)]


class Bm25Scorer:
    """BM25 (Okapi) scores of every query against every gallery item.

    Args:
        k1, b: BM25's term-frequency saturation and length normalisation.
    """

    recipe = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b

    def score_items(self, query_items: Sequence[Any], gallery_items: Sequence[Any],
                    query_modality: str, gallery_modality: str) -> Tensor:
        """``[q g]`` scores (higher = more relevant) of text-like items."""
        from mmenc.optional import require

        BM25Okapi = require("rank_bm25", "bm25", "BM25 scores").BM25Okapi

        for items, modality in ((query_items, query_modality), (gallery_items, gallery_modality)):
            bad = [x for x in items if not isinstance(x, str)]
            if bad:
                raise ValueError(f"bm25 scores text; {modality} items include "
                                 f"{type(bad[0]).__name__}")
        corpus = [words(x) or [""] for x in gallery_items]
        index = BM25Okapi(corpus, k1=self.k1, b=self.b)
        rows = [torch.as_tensor(index.get_scores(words(q)), dtype=torch.float64)
                for q in query_items]
        return torch.stack(rows) if rows else torch.zeros(0, len(gallery_items))
