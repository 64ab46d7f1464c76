"""Losses of binding: a tower's items against hub vectors, at every Matryoshka width.

Axes: ``b`` items in the batch, ``c`` candidate hub vectors (the batch's texts, or every
cached text), ``e`` embedding width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSSES = ("infonce", "sigmoid")


class HubLoss(nn.Module):
    """Contrastive loss of tower embeddings against hub candidates, summed over Matryoshka
    prefixes (each truncated and renormalised).

    Args:
        kind: ``infonce`` (softmax over candidates, plus candidates -> items within the batch)
            or ``sigmoid`` (SigLIP: one binary term per item-candidate pair).
        dims: the widths whose prefixes are scored (the full width included).
    """

    def __init__(self, kind: str = "infonce", dims: Sequence[int] = ()) -> None:
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
        self.kind, self.dims = kind, sorted(set(dims))
        init = math.log(1 / 0.07) if kind == "infonce" else math.log(10.0)
        self.log_scale = nn.Parameter(torch.tensor(init))
        self.bias = nn.Parameter(torch.tensor(-10.0 if kind == "sigmoid" else 0.0))

    def forward(self, items: Tensor, candidates: Tensor,
                labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """
        Inputs:
            items: ``[b e]`` tower embeddings.
            candidates: ``[c e]`` unit hub vectors.
            labels: ``[b]`` the candidate row of each item's text.
        Returns:
            ``(loss, logs)``; logs the loss and the top-1 accuracy at full width.
        """
        scale = self.log_scale.clamp(max=math.log(100.0)).exp()
        total = items.new_zeros(())
        positive = labels[:, None] == torch.arange(len(candidates), device=labels.device)  # [b c]
        for d in self.dims or [items.shape[1]]:
            a = F.normalize(items[:, :d], dim=-1)
            c = F.normalize(candidates[:, :d], dim=-1)
            logits = scale * a @ c.T  # [b c]
            if self.kind == "sigmoid":
                signs = positive.float() * 2 - 1
                total = total + -F.logsigmoid(signs * (logits + self.bias)).sum() / len(a)
            else:
                forward = F.cross_entropy(logits, labels)
                # candidates -> items within the batch: items sharing a text are all positives
                back_logits = logits[:, labels].T  # [b b]: text of item j vs item i
                same = (labels[:, None] == labels[None, :]).float()
                backward = -(same / same.sum(1, keepdim=True)
                             * F.log_softmax(back_logits, dim=1)).sum(1).mean()
                total = total + (forward + backward) / 2
        with torch.no_grad():
            acc = (items @ candidates.T).argmax(1).eq(labels).float().mean()
        return total, {"loss": float(total.detach()), "acc": float(acc),
                       "scale": float(scale.detach())}


def pair_loss(a: Tensor, b: Tensor, log_scale: Tensor, dims: Sequence[int] = ()) -> Tensor:
    """Symmetric in-batch InfoNCE between two towers' embeddings of paired items, summed over
    Matryoshka prefixes."""
    scale = log_scale.clamp(max=math.log(100.0)).exp()
    labels = torch.arange(len(a), device=a.device)
    total = a.new_zeros(())
    for d in sorted(set(dims)) or [a.shape[1]]:
        logits = scale * F.normalize(a[:, :d], dim=-1) @ F.normalize(b[:, :d], dim=-1).T
        total = total + (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    return total
