"""Pairwise matching scores over raw items, shared by the models with an ITM head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmenc.batch import Features
from mmenc.model import Encoder
from torch import Tensor


def select_rows(features: Features, idx: Tensor) -> Features:
    """The rows ``idx`` of a tower's output, its per-layer states included (no pooled)."""
    states = None if features.hidden_states is None \
        else tuple(h[idx] for h in features.hidden_states)
    mask = None if features.mask is None else features.mask[idx]
    return Features(features.hidden[idx], mask, None, states)


def _unique(items: Sequence[Any], modality: str) -> tuple[list[Any], Tensor]:
    """The distinct items (by content) and each item's row among them."""
    from mmenc.retrieval.evaluate import content_key

    rows: dict[str, int] = {}
    distinct: list[Any] = []
    index = []
    for item in items:
        key = content_key(item, modality)
        if key not in rows:
            rows[key] = len(distinct)
            distinct.append(item)
        index.append(rows[key])
    return distinct, torch.tensor(index, dtype=torch.long)


def pair_match_scores(model: Encoder, a_items: Sequence[Any], b_items: Sequence[Any],
                      a_modality: str, b_modality: str) -> Tensor:
    """Matched-probability ``softmax(itm_logits(text, image))[:, 1]`` of each pair
    ``(a_items[i], b_items[i])``: [n], for :class:`mmenc.retrieval.evaluate.MatchingModel`.

    Each distinct item is loaded and run through its tower once (a re-ranked query meets many
    candidates); the fusion and the ITM head then run on every pair."""
    if len(a_items) != len(b_items):
        raise ValueError(f"{len(a_items)} a-items vs {len(b_items)} b-items: pairs needed")
    if {a_modality, b_modality} != {"text", "image"}:
        raise ValueError(f"{model.recipe} matches text with image, got {a_modality}/{b_modality}")
    items = {a_modality: list(a_items), b_modality: list(b_items)}
    device = next(model.parameters()).device
    states = {}
    with torch.no_grad():
        for m in ("text", "image"):
            distinct, index = _unique(items[m], m)
            batch = model.tokenize(distinct, m).to(device)
            states[m] = select_rows(model.tower_states(batch, m), index.to(device))  # type: ignore[operator]
        return model.itm_from_states(states["text"], states["image"]).softmax(dim=-1)[:, 1]  # type: ignore[operator,no-any-return]
