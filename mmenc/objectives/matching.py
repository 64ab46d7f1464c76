"""Matching (ITM): a binary head on fused pair states telling matched pairs from hard negatives
sampled from the contrastive similarities (ALBEF).

Axis legend:
    b  batch of pairs (row i of ``a`` goes with row i of ``b``)
    k  scored pairs (``3b``: b positives, b negatives per side)
    d  width of the fused pooled state

The loss never sees the model: it draws the index pairs to score and asks a ``fuse(a_idx,
b_idx) -> [k d]`` callable for their pooled fused states, so any fusion (cross-attention,
bridge, merged) plugs in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Fuse = Callable[[Tensor, Tensor], Tensor]
"""``fuse(a_idx [k], b_idx [k]) -> [k d]``: pooled fused states of the pairs
``(a_idx[j], b_idx[j])``."""

_FLOOR = 1e-5
"""Added to the sampling weights (as ALBEF) so that a row whose softmax mass sits entirely on
its positive still has negatives to draw from."""


@torch.no_grad()
def sample_hard_negatives(sim_a2b: Tensor, generator: torch.Generator | None = None,
                          exclude: Tensor | None = None, sim_b2a: Tensor | None = None,
                          ) -> tuple[Tensor, Tensor]:
    """For each ``a`` draw a negative ``b`` with probability ``softmax(sim_a2b[i])`` (the
    positive's weight zeroed), and for each ``b`` a negative ``a`` from ``softmax(sim_b2a[j])``
    (by default ``sim_a2b[:, j]``).

    Inputs:
        sim_a2b: ``[b b]`` similarity logits (scaled by the temperature), positives on the
            diagonal.
        generator: random source (on the device of ``sim_a2b``).
        exclude: ``[b b]`` bool, True for further pairs that must not be drawn (e.g. two
            captions of the same image).
        sim_b2a: ``[b b]`` the other direction's logits when they are not ``sim_a2b.T``
            (ALBEF scores each direction with one side's momentum features).
    Returns:
        ``(neg_b_for_a, neg_a_for_b)``: ``[b]`` long indices.
    """
    n = sim_a2b.shape[0]
    if sim_a2b.dim() != 2 or sim_a2b.shape[1] != n or n < 2:
        raise ValueError(f"need a square similarity matrix of at least 2 x 2, got "
                         f"{tuple(sim_a2b.shape)}")
    sim = sim_a2b.detach().float()
    banned = torch.eye(n, dtype=torch.bool, device=sim.device)  # [b b]
    if exclude is not None:
        banned |= exclude.to(device=sim.device, dtype=torch.bool)
    weights_a2b = (sim.softmax(dim=1) + _FLOOR).masked_fill(banned, 0.0)  # [b b]
    sim_t = sim.T if sim_b2a is None else sim_b2a.detach().float()
    if sim_t.shape != sim.shape:
        raise ValueError(f"sim_b2a must be {tuple(sim.shape)}, got {tuple(sim_t.shape)}")
    weights_b2a = (sim_t.softmax(dim=1) + _FLOOR).masked_fill(banned.T, 0.0)  # [b b]
    if not bool((weights_a2b.sum(1) > 0).all() and (weights_b2a.sum(1) > 0).all()):
        raise ValueError("some row has no candidate negative left after exclusion")
    neg_b_for_a = torch.multinomial(weights_a2b, 1, generator=generator).squeeze(1)  # [b]
    neg_a_for_b = torch.multinomial(weights_b2a, 1, generator=generator).squeeze(1)  # [b]
    return neg_b_for_a, neg_a_for_b


def matching_pairs(neg_b_for_a: Tensor, neg_a_for_b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The ``3b`` pairs ALBEF scores: b positives, then (a_i, negative b), then (negative a, b_j).

    Returns:
        ``(a_idx [k], b_idx [k], labels [k])`` with labels 1 for positives, 0 for negatives.
    """
    n = neg_b_for_a.shape[0]
    idx = torch.arange(n, device=neg_b_for_a.device)
    a_idx = torch.cat([idx, idx, neg_a_for_b])  # [3b]
    b_idx = torch.cat([idx, neg_b_for_a, idx])  # [3b]
    labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).long().to(idx.device)  # [3b]
    return a_idx, b_idx, labels


class ItmHead(nn.Module):
    """``Linear(dim, 2)``: logits of (no match, match) from a fused pooled state.

    Args:
        dim: width of the fused state.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2)

    def forward(self, fused: Tensor) -> Tensor:
        """Inputs: fused ``[k d]``. Returns: ``[k 2]`` logits."""
        return self.proj(fused)  # type: ignore[no-any-return]


@torch.no_grad()
def itm_scores(head: nn.Module, fused: Tensor) -> Tensor:
    """Probability that each pair matches, for re-ranking retrieval candidates.

    Inputs:
        head: an :class:`ItmHead` (or any ``[k d] -> [k 2]`` module).
        fused: ``[k d]`` pooled fused states of the candidate pairs.
    Returns:
        ``[k]`` in ``[0, 1]``.
    """
    probs: Tensor = head(fused).softmax(dim=-1)
    return probs[:, 1]


class MatchingLoss(nn.Module):
    """ITM with hard negatives: cross-entropy of an :class:`ItmHead` over ``3b`` pairs.

    Args:
        dim: width of the fused pooled state.
    """

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.dim = dim
        self.head = ItmHead(dim)

    def example_inputs(self) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(0)
        b = 4
        a, b_ = torch.randn(b, self.dim, generator=g), torch.randn(b, self.dim, generator=g)
        sim = 10 * F.normalize(a, dim=-1) @ F.normalize(b_, dim=-1).T  # [b b]
        return {"sim_a2b": sim, "a": a, "b": b_}

    def forward(self, sim_a2b: Tensor, fuse: Fuse | None = None, a: Tensor | None = None,
                b: Tensor | None = None, generator: torch.Generator | None = None,
                exclude: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Inputs:
            sim_a2b: ``[b b]`` contrastive similarity logits of the batch (sampling only: no
                gradient flows through it).
            fuse: ``fuse(a_idx, b_idx) -> [k d]`` pooled fused states of index pairs.
            a, b: ``[b d]`` pooled states used when ``fuse`` is None: the pair state is their
                elementwise product (a dual encoder's matching head).
            generator: random source of the negative sampling.
            exclude: ``[b b]`` bool pairs never drawn as negatives.
        Returns:
            ``(loss, logs)``: mean cross-entropy over the ``3b`` pairs with labels
            ``[1] * b + [0] * 2b``; logs ``loss``, ``acc``.
        """
        neg_b_for_a, neg_a_for_b = sample_hard_negatives(sim_a2b, generator, exclude)
        a_idx, b_idx, labels = matching_pairs(neg_b_for_a, neg_a_for_b)
        if fuse is not None:
            fused = fuse(a_idx, b_idx)  # [3b d]
        elif a is not None and b is not None:
            fused = a[a_idx] * b[b_idx]  # [3b d]
        else:
            raise ValueError("pass fuse, or the pooled states a and b")
        logits = self.head(fused)  # [3b 2]
        loss = F.cross_entropy(logits, labels)
        acc = (logits.detach().argmax(dim=-1) == labels).float().mean()
        return loss, {"loss": float(loss.detach()), "acc": float(acc)}
