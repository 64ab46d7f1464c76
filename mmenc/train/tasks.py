"""Objectives glued to a model: each config entry becomes a :class:`Task` (its objective, label,
weight, modalities and random generator), and :class:`TrainModule` sums the tasks' losses with
their weights.

Every objective, built-in or from a plugin, is a registered class implementing
:class:`~mmenc.objectives.protocol.Objective`; a task calls its
``step(model, batches, generator)``. The whole :class:`TrainModule` (model + objectives' heads,
temperatures, queues, teachers) is what DistributedDataParallel wraps, so every learnable tensor
is averaged over the ranks.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor, nn

from mmenc.batch import TokenBatch
from mmenc.model import Encoder
from mmenc.objectives.protocol import SharedStep, build_objective, objective_class
from mmenc.train.config import ObjectiveConfig


class Task(nn.Module):
    """One weighted objective of the config.

    Args:
        objective: the built objective (its tensors are saved as ``tasks.{label}.objective.*``).
        label: the name its metrics are logged under.
        weight: its share of the total loss.
        modalities: the modalities it reads, in the config's order.
        seed: seeds the generator of its random choices (masks, negatives).
        device: where the generator draws (the model's device).
    """

    def __init__(self, objective: nn.Module, label: str, weight: float, modalities: list[str],
                 seed: str, device: torch.device) -> None:
        super().__init__()
        self.label, self.weight, self.modalities = label, weight, list(modalities)
        digest = hashlib.sha256(f"{seed}/{label}".encode()).hexdigest()
        self.generator = torch.Generator(device=device).manual_seed(int(digest[:15], 16))
        self.objective = objective

    def forward(self, shared: SharedStep) -> tuple[Tensor, dict[str, Any]]:
        """Inputs:
            shared: this step's batches and shared embeddings.
        Returns:
            ``(loss, logs)`` of the objective's ``step``.
        """
        return self.objective.step(shared.model, shared.view(self.modalities),  # type: ignore[operator,no-any-return]
                                   self.generator)

    def after_step(self, model: Encoder) -> None:
        """The objective's ``after_step(model)``, when it has one."""
        hook = getattr(self.objective, "after_step", None)
        if hook is not None:
            hook(model)


class TrainModule(nn.Module):
    """The model and its tasks; ``forward`` is one step's weighted total loss.

    Args:
        model: the encoder.
        tasks: label -> task.
    """

    def __init__(self, model: Encoder, tasks: dict[str, Task]) -> None:
        super().__init__()
        self.model = model
        self.tasks = nn.ModuleDict(tasks)

    def forward(self, batches: dict[str, TokenBatch]) -> tuple[Tensor, dict[str, Tensor]]:
        """Inputs:
            batches: modality -> this rank's batch.
        Returns:
            ``(total, losses)``: the weighted sum, and each task's loss and logs as 0-d tensors
            (``"{label}/{key}"``), ready to be averaged over ranks.
        """
        shared = SharedStep(self.model, batches)
        total: Tensor | None = None
        out: dict[str, Tensor] = {}
        for label, task in self.tasks.items():
            loss, logs = task(shared)
            total = task.weight * loss if total is None else total + task.weight * loss
            out[f"{label}/loss"] = loss.detach().float()
            for key, value in logs.items():
                if key != "loss":
                    out[f"{label}/{key}"] = torch.tensor(float(value), device=loss.device)
        assert total is not None
        return total, out

    def after_step(self) -> None:
        for task in self.tasks.values():
            task.after_step(self.model)  # type: ignore[operator]


def build_task(spec: ObjectiveConfig, model: Encoder, seed: int, rank: int = 0) -> Task:
    """The task of one (checked) objective entry: the registered objective class built for
    ``model`` with the entry's config; its random choices are seeded by ``seed``, its label and
    ``rank``."""
    cls = objective_class(spec.name)
    objective = build_objective(cls, model, spec.modalities, dict(spec.config))
    return Task(objective, label=spec.label or spec.name, weight=spec.weight,  # type: ignore[arg-type]
                modalities=spec.modalities, seed=f"{seed}/{rank}",
                device=next(model.parameters()).device)
