"""Pairwise matching scores over raw items, shared by the models with an ITM head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmenc.model import Encoder
from torch import Tensor


def pair_match_scores(model: Encoder, a_items: Sequence[Any], b_items: Sequence[Any],
                      a_modality: str, b_modality: str) -> Tensor:
    """Matched-probability ``softmax(model.itm_logits(text, image))[:, 1]`` of each pair
    ``(a_items[i], b_items[i])``: [n], for :class:`mmenc.retrieval.evaluate.MatchingModel`."""
    if len(a_items) != len(b_items):
        raise ValueError(f"{len(a_items)} a-items vs {len(b_items)} b-items: pairs needed")
    if {a_modality, b_modality} != {"text", "image"}:
        raise ValueError(f"{model.recipe} matches text with image, got {a_modality}/{b_modality}")
    items = {a_modality: list(a_items), b_modality: list(b_items)}
    device = next(model.parameters()).device
    with torch.no_grad():
        text = model.tokenize(items["text"], "text").to(device)
        image = model.tokenize(items["image"], "image").to(device)
        return model.itm_logits(text, image).softmax(dim=-1)[:, 1]
