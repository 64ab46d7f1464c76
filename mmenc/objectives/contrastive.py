"""Contrastive InfoNCE between two modalities: symmetric, with a learnable temperature,
negatives from every data-parallel rank, optional Matryoshka prefixes, and an optional
momentum-feature queue with soft targets (ALBEF's image-text contrastive loss).

Axis legend:
    b  local batch (pairs: row i of ``a`` goes with row i of ``b``)
    B  global batch, ``world * b``
    e  embedding width (``d`` its Matryoshka prefix)
    K  queue slots
    m  keys a row is scored against (``B``, or ``b + K`` with a queue)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmenc.objectives.distill import soft_targets
from mmenc.objectives.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    local_labels,
)


def contrast(a: Tensor, b: Tensor, a_keys: Tensor, b_keys: Tensor, logit_scale: Tensor,
             labels: Tensor, soft_a2b: Tensor | None = None, soft_b2a: Tensor | None = None,
             normalize: bool = True) -> tuple[Tensor, dict[str, float]]:
    """Symmetric cross-entropy of queries against keys; every input is L2-normalised here
    unless ``normalize`` is False (ALBEF scores its queue's stored keys as they are).

    Inputs:
        a, b: ``[b e]`` paired queries.
        a_keys, b_keys: ``[m e]`` candidates: ``a`` scores ``b_keys`` and ``b`` scores ``a_keys``.
        logit_scale: scalar multiplier of the cosine similarities (``1 / temperature``).
        labels: ``[b]`` index among the keys of each row's positive (both directions).
        soft_a2b, soft_b2a: ``[b m]`` target distributions replacing ``labels`` in the loss.
    Returns:
        ``(loss, logs)``: the mean of the two directions; logs ``loss``, ``acc_a2b``,
        ``acc_b2a`` (top-1 against ``labels``).
    """
    if normalize:
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        a_keys, b_keys = F.normalize(a_keys, dim=-1), F.normalize(b_keys, dim=-1)
    logits_a2b = logit_scale * a @ b_keys.T  # [b m]
    logits_b2a = logit_scale * b @ a_keys.T  # [b m]
    loss_a2b = F.cross_entropy(logits_a2b, labels if soft_a2b is None else soft_a2b)
    loss_b2a = F.cross_entropy(logits_b2a, labels if soft_b2a is None else soft_b2a)
    loss = (loss_a2b + loss_b2a) / 2
    with torch.no_grad():
        acc_a2b = (logits_a2b.argmax(dim=1) == labels).float().mean()
        acc_b2a = (logits_b2a.argmax(dim=1) == labels).float().mean()
    return loss, {"loss": float(loss.detach()), "acc_a2b": float(acc_a2b),
                  "acc_b2a": float(acc_b2a)}


def info_nce(a: Tensor, b: Tensor, logit_scale: Tensor,
             labels: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """CLIP's symmetric InfoNCE; under ``torch.distributed`` the negatives come from every rank.

    Inputs:
        a, b: ``[b e]`` paired embeddings (row i of each is a positive pair).
        logit_scale: scalar ``1 / temperature`` (already exponentiated and clamped).
        labels: ``[b]`` index of each pair among the gathered rows; by default
            ``rank * b + arange(b)``.
    Returns:
        ``(loss, logs)`` as :func:`contrast`, plus ``logit_scale``.
    """
    a_keys, b_keys = all_gather_with_grad(a), all_gather_with_grad(b)  # [B e]
    if labels is None:
        labels = local_labels(a.shape[0], a.device)
    loss, logs = contrast(a, b, a_keys, b_keys, logit_scale, labels)
    return loss, {**logs, "logit_scale": float(logit_scale.detach())}


class MomentumQueue(nn.Module):
    """A ring buffer of past (momentum) features used as extra negatives (MoCo, ALBEF).

    Starts with random unit vectors, as ALBEF does, so it is usable from the first step.

    Args:
        dim: feature width ``e``.
        size: slots ``K``.
    """

    feats: Tensor
    ptr: Tensor

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        if size <= 0:
            raise ValueError(f"queue size must be positive, got {size}")
        self.register_buffer("feats", F.normalize(torch.randn(dim, size), dim=0))  # [e K]
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return int(self.feats.shape[1])

    def keys(self) -> Tensor:
        """``[K e]`` the stored features, as constants."""
        return self.feats.T.detach()

    @torch.no_grad()
    def enqueue(self, feats: Tensor) -> None:
        """Overwrite the oldest slots with ``feats`` ``[n e]``, wrapping past the end.

        When ``n > K`` only the last ``K`` rows are kept.
        """
        feats = feats.detach()[-self.size :].to(self.feats.dtype)
        n = feats.shape[0]
        slots = (self.ptr + torch.arange(n, device=self.feats.device)) % self.size  # [n]
        self.feats[:, slots] = feats.T
        self.ptr.fill_((int(self.ptr) + n) % self.size)


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE with a learnable temperature (CLIP), optional Matryoshka prefixes and
    an optional momentum queue with distillation (ALBEF).

    Without a queue, each rank scores its rows against every rank's rows. With one, the keys
    are ``[in-batch momentum features | queue]`` (local rows only, as ALBEF) and the gathered
    momentum features are enqueued after each training-mode forward.

    Args:
        dim: embedding width ``e``; required with a queue, used by :meth:`example_inputs`.
        dims: Matryoshka prefix widths; the loss is the mean of the losses on the first ``d``
            dims of each side (each re-normalised). None: the full width only.
        queue_size: queue slots ``K`` per side; 0 for no queue.
        alpha: weight of the teacher's soft targets (needs ``a_m`` and ``b_m``); 0 for none.
        temperature: initial temperature (the parameter is ``log(1 / temperature)``).
        max_scale: the logit scale is clamped to ``[1, max_scale]`` (CLIP's 100).
        learn_temperature: whether the temperature is trained.
    """

    def __init__(self, dim: int | None = None, dims: Sequence[int] | None = None,
                 queue_size: int = 0, alpha: float = 0.0, temperature: float = 0.07,
                 max_scale: float = 100.0, learn_temperature: bool = True) -> None:
        super().__init__()
        if dims is not None and (not dims or any(d <= 0 or (dim and d > dim) for d in dims)):
            raise ValueError(f"dims {dims} must be positive widths no larger than dim={dim}")
        if queue_size and dim is None:
            raise ValueError("a queue needs the embedding width: pass dim")
        self.dim, self.alpha = dim, alpha
        self.dims = tuple(dims) if dims is not None else None
        self.max_log_scale = math.log(max_scale)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)),
                                        requires_grad=learn_temperature)
        self.queue_a = MomentumQueue(dim, queue_size) if queue_size and dim else None
        self.queue_b = MomentumQueue(dim, queue_size) if queue_size and dim else None

    def scale(self) -> Tensor:
        """``exp(logit_scale)`` after CLIP's clamp of the log to ``[0, log(max_scale)]``."""
        return self.logit_scale.clamp(0.0, self.max_log_scale).exp()

    def example_inputs(self) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(0)
        b, e = 4, self.dim or max(self.dims or (16,))
        inputs = {"a": torch.randn(b, e, generator=g), "b": torch.randn(b, e, generator=g)}
        if self.queue_a is not None or self.alpha > 0:
            inputs["a_m"] = inputs["a"] + 0.1 * torch.randn(b, e, generator=g)
            inputs["b_m"] = inputs["b"] + 0.1 * torch.randn(b, e, generator=g)
        return inputs

    def forward(self, a: Tensor, b: Tensor, a_m: Tensor | None = None, b_m: Tensor | None = None,
                alpha: float | None = None) -> tuple[Tensor, dict[str, float]]:
        """Inputs:
            a, b: ``[b e]`` paired embeddings of the two modalities.
            a_m, b_m: ``[b e]`` the momentum encoder's embeddings of the same items (the
                queue's in-batch keys, and the teacher of the soft targets); with a queue and
                none given, ``a`` and ``b`` detached stand in.
            alpha: overrides the configured ``alpha`` (for a warm-up schedule).
        Returns:
            ``(loss, logs)``; logs ``loss``, ``logit_scale`` (exponentiated), ``acc_a2b``,
            ``acc_b2a`` (at the widest prefix) and ``loss_d{d}`` per Matryoshka prefix.
        """
        alpha = self.alpha if alpha is None else alpha
        if alpha > 0 and (a_m is None or b_m is None):
            raise ValueError("distillation (alpha > 0) needs the momentum features a_m and b_m")
        scale = self.scale()
        n = a.shape[0]
        # teacher: (a_m, b_m, a_m keys, b_m keys) whose similarities give the soft targets
        teacher: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        if self.queue_a is not None and self.queue_b is not None:
            a_m = F.normalize((a if a_m is None else a_m).detach(), dim=-1)  # [b e]
            b_m = F.normalize((b if b_m is None else b_m).detach(), dim=-1)
            a_keys = torch.cat([a_m, self.queue_a.keys()])  # [(b + K) e]
            b_keys = torch.cat([b_m, self.queue_b.keys()])
            labels = torch.arange(n, device=a.device)
            if alpha > 0:
                teacher = (a_m, b_m, a_keys, b_keys)
        else:
            a_keys, b_keys = all_gather_with_grad(a), all_gather_with_grad(b)  # [B e]
            labels = local_labels(n, a.device)
            if alpha > 0 and a_m is not None and b_m is not None:
                teacher = (a_m, b_m, all_gather_no_grad(a_m), all_gather_no_grad(b_m))

        losses: list[Tensor] = []
        logs: dict[str, float] = {}
        per_dim: dict[str, float] = {}
        for d in self.dims or (a.shape[-1],):
            if d > a.shape[-1]:
                raise ValueError(f"Matryoshka width {d} exceeds the embedding width {a.shape[-1]}")
            soft_a2b = soft_b2a = None
            if teacher is not None:
                q_a, q_b, k_a, k_b = (t[:, :d] for t in teacher)
                soft_a2b = self._soft(q_a, k_b, scale, labels, alpha)  # [b m]
                soft_b2a = self._soft(q_b, k_a, scale, labels, alpha)
            loss_d, logs = contrast(a[:, :d], b[:, :d], a_keys[:, :d], b_keys[:, :d], scale,
                                    labels, soft_a2b, soft_b2a)
            losses.append(loss_d)
            if self.dims is not None:
                per_dim[f"loss_d{d}"] = logs["loss"]
        loss = torch.stack(losses).mean()

        if self.queue_a is not None and self.queue_b is not None and self.training:
            self.queue_a.enqueue(all_gather_no_grad(a_keys[:n]))
            self.queue_b.enqueue(all_gather_no_grad(b_keys[:n]))
        return loss, {**logs, **per_dim, "loss": float(loss.detach()),
                      "logit_scale": float(scale.detach())}

    @staticmethod
    def _soft(query_m: Tensor, keys_m: Tensor, scale: Tensor, labels: Tensor,
              alpha: float) -> Tensor:
        """``[b m]`` ALBEF's targets: the teacher's softmax mixed with the one-hot labels."""
        sim_m = scale.detach() * F.normalize(query_m, dim=-1) @ F.normalize(keys_m, dim=-1).T
        hard = F.one_hot(labels, num_classes=keys_m.shape[0]).to(sim_m.dtype)  # [b m]
        return soft_targets(sim_m, alpha, hard)
