"""Heads shared by the vision-text models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLMHead(nn.Module):
    """BERT's prediction head: dense + GELU + LayerNorm, then a decoder over the vocabulary.

    Args:
        dim: width of the states it reads.
        vocab_size: V.
        eps: LayerNorm epsilon.
        tied: decode with the word embeddings passed to ``forward`` (ALBEF); False: with its own
            ``decoder`` weight (BridgeTower, whose MLM head is not tied).

    Not :class:`mmenc.objectives.masked.PredictionHead`: that head ties its decoder when it is
    built, while ALBEF's momentum copy must decode with the momentum tower's embeddings, given
    at call time; and its state-dict keys (``transform.0``, ``weight``) are not the
    ``dense`` / ``norm`` / ``decoder`` keys that saved ALBEF and BridgeTower models hold.
    """

    def __init__(self, dim: int, vocab_size: int, eps: float, tied: bool = True) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.decoder = None if tied else nn.Parameter(torch.empty(vocab_size, dim))
        if self.decoder is not None:
            nn.init.normal_(self.decoder, std=0.02)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: Tensor, word_embeddings: Tensor | None = None) -> Tensor:
        """Inputs: hidden [b n d], word_embeddings [V d] (tied heads). Returns logits [b n V]."""
        weight = self.decoder if self.decoder is not None else word_embeddings
        if weight is None:
            raise ValueError("a tied MLM head needs the word embeddings")
        h = self.norm(F.gelu(self.dense(hidden)))
        return F.linear(h, weight, self.bias)
