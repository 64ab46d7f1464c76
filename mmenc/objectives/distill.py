"""Momentum distillation: an exponential moving average of the model as teacher, whose
predictions soften the hard targets of the contrastive and masked-modelling losses (ALBEF).

Axis legend: ``b`` batch, ``n`` tokens, ``v`` vocabulary, ``k`` selected (masked) positions,
``m`` candidate keys of a contrastive loss.

The teacher is a copy of the online modules (:func:`momentum_copy` / :func:`copy_params`)
moved towards them after each optimiser step (:func:`momentum_update`); it never receives
gradients. Its outputs give soft targets ``alpha * softmax(teacher) + (1 - alpha) * hard``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100
"""Label of positions that carry no loss (PyTorch's ``cross_entropy`` default)."""


def copy_params(online: nn.Module, momentum: nn.Module) -> None:
    """Start the teacher from the online weights and stop its gradients.

    Args:
        online: the trained module.
        momentum: a module of the same architecture (same parameters in the same order).
    """
    pairs = list(zip(online.parameters(), momentum.parameters(), strict=True))
    with torch.no_grad():
        for p, p_m in pairs:
            p_m.copy_(p)
            p_m.requires_grad_(False)


def momentum_copy(online: nn.Module) -> nn.Module:
    """A frozen deep copy of ``online`` to serve as its momentum teacher."""
    momentum = copy.deepcopy(online)
    copy_params(online, momentum)
    return momentum


@torch.no_grad()
def momentum_update(online: nn.Module, momentum: nn.Module, m: float = 0.995) -> None:
    """``p_m <- m * p_m + (1 - m) * p`` for every parameter pair (buffers are left as they are).

    Args:
        online: the trained module.
        momentum: its teacher, updated in place.
        m: the momentum; 1 freezes the teacher, 0 copies the online weights.
    """
    for p, p_m in zip(online.parameters(), momentum.parameters(), strict=True):
        p_m.lerp_(p.detach(), 1.0 - m)


def soft_targets(sim_m: Tensor, alpha: float, hard_targets: Tensor) -> Tensor:
    """Targets of a distilled contrastive loss: ``alpha * softmax(sim_m) + (1 - alpha) * hard``.

    Inputs:
        sim_m: ``[b m]`` the teacher's similarity logits (already scaled by the temperature).
        alpha: weight of the teacher.
        hard_targets: ``[b m]`` the one-hot (or multi-positive) targets.
    Returns:
        ``[b m]`` rows summing to one when ``hard_targets`` rows do, with no gradient.
    """
    sim_m = sim_m.detach()
    return alpha * sim_m.softmax(dim=1) + (1.0 - alpha) * hard_targets


def _field_distill(logits: Tensor, logits_m: Tensor, labels: Tensor, alpha: float,
                   ignore_index: int) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """(total loss, hard CE, soft CE, correct count, selected count) of one field."""
    v = logits.shape[-1]
    labels = labels.reshape(-1)  # [b n] -> [(b n)]
    keep = labels != ignore_index
    logits, logits_m = logits.reshape(-1, v)[keep], logits_m.reshape(-1, v)[keep]  # [k v]
    count = int(keep.sum())
    if count == 0:
        # Nothing masked in this batch: a zero that still depends on the logits, so a caller's
        # backward() works and no 0/0 reaches the weights.
        zero = logits.sum() * 0.0
        return zero, zero.detach(), zero.detach(), zero.detach(), 0
    log_p = logits.log_softmax(dim=-1)  # [k v]
    hard = F.nll_loss(log_p, labels[keep])
    soft = -(log_p * logits_m.detach().softmax(dim=-1)).sum(dim=-1).mean()
    loss = (1.0 - alpha) * hard + alpha * soft
    correct = (logits.argmax(dim=-1) == labels[keep]).sum()
    return loss, hard.detach(), soft.detach(), correct, count


def distill_mlm_loss(logits: Tensor | list[Tensor], logits_m: Tensor | list[Tensor],
                     labels: Tensor, alpha: float,
                     ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, dict[str, float]]:
    """Masked-modelling loss with the teacher's predictions as soft labels (ALBEF's MLM).

    ``(1 - alpha) * CE(logits, labels) + alpha * CE(logits, softmax(logits_m))``, each the mean
    over the positions whose label is not ``ignore_index``.

    Inputs:
        logits: ``[b n v]`` (or ``[k v]``) student logits; for compound tokens a list with one
            tensor per field.
        logits_m: the teacher's logits, shaped like ``logits``.
        labels: ``[b n]`` (``[k]``), or ``[b n f]`` for a list of ``f`` fields.
        alpha: weight of the soft labels.
        ignore_index: the label of unselected positions.
    Returns:
        ``(loss, logs)``: the mean over fields of each field's loss; logs ``loss``,
        ``loss_mlm``, ``loss_distill``, ``acc``.
    """
    fields = logits if isinstance(logits, list) else [logits]
    teachers = logits_m if isinstance(logits_m, list) else [logits_m]
    compound = isinstance(logits, list)
    per_field = [labels[..., i] for i in range(len(fields))] if compound else [labels]
    terms = [_field_distill(x, x_m, y, alpha, ignore_index)
             for x, x_m, y in zip(fields, teachers, per_field, strict=True)]
    loss = torch.stack([t[0] for t in terms]).mean()
    correct = sum(float(t[3]) for t in terms)
    count = sum(t[4] for t in terms)
    logs = {
        "loss": float(loss.detach()),
        "loss_mlm": float(torch.stack([t[1] for t in terms]).mean()),
        "loss_distill": float(torch.stack([t[2] for t in terms]).mean()),
        "acc": correct / count if count else 0.0,
    }
    return loss, logs


class MomentumDistillation(nn.Module):
    """The MLM distillation loss with its schedule: ``alpha`` ramps up linearly over
    ``warmup_steps`` (ALBEF ramps it over the first epoch, while the teacher is still poor).

    Args:
        alpha: weight of the teacher's soft labels once warmed up.
        momentum: the ``m`` of :meth:`update`.
        warmup_steps: steps over which ``alpha`` grows from 0; 0 for none.
        ignore_index: the label of unselected positions.
    """

    def __init__(self, alpha: float = 0.4, momentum: float = 0.995, warmup_steps: int = 0,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"alpha ({alpha}) and momentum ({momentum}) must lie in [0, 1]")
        self.alpha, self.momentum = alpha, momentum
        self.warmup_steps, self.ignore_index = warmup_steps, ignore_index

    def alpha_at(self, step: int | None) -> float:
        """The teacher's weight at optimiser step ``step`` (the full ``alpha`` when None)."""
        if step is None or self.warmup_steps <= 0:
            return self.alpha
        return self.alpha * min(1.0, step / self.warmup_steps)

    def update(self, online: nn.Module, momentum: nn.Module) -> None:
        """Move the teacher ``momentum`` towards ``online`` (call after each optimiser step)."""
        momentum_update(online, momentum, self.momentum)

    def example_inputs(self) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(0)
        b, n, v = 2, 6, 11
        labels = torch.randint(0, v, (b, n), generator=g)
        labels[:, ::2] = self.ignore_index  # half the positions unselected
        return {"logits": torch.randn(b, n, v, generator=g),
                "logits_m": torch.randn(b, n, v, generator=g), "labels": labels}

    def forward(self, logits: Tensor | list[Tensor], logits_m: Tensor | list[Tensor],
                labels: Tensor, step: int | None = None) -> tuple[Tensor, dict[str, float]]:
        """Inputs:
            logits: ``[b n v]`` student logits (a list per field for compound tokens).
            logits_m: the teacher's logits, shaped like ``logits``.
            labels: ``[b n]`` (``[b n f]``), ``ignore_index`` where nothing was masked.
            step: the optimiser step, for the ``alpha`` warm-up.
        Returns:
            ``(loss, logs)`` as :func:`distill_mlm_loss`, with ``alpha`` logged.
        """
        alpha = self.alpha_at(step)
        loss, logs = distill_mlm_loss(logits, logits_m, labels, alpha, self.ignore_index)
        return loss, {**logs, "alpha": alpha}
