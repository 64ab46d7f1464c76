"""The vision-text pre-training objective that ``mmenc pretrain`` trains."""

from __future__ import annotations

from typing import Any

import torch
from mmenc.batch import TokenBatch
from mmenc.errors import ConfigError
from torch import Tensor, nn


class VisionTextPretraining(nn.Module):
    """A vision-text model's own pre-training step on matched (text, image) pairs:
    ``model.pretraining_losses(text, image)`` (ALBEF: ITC with momentum distillation and
    queues, ITM with hard negatives, MLM with distillation; BridgeTower: ITC, ITM, MLM).

    Args:
        alpha: the distillation weight (None: the model's ``alpha``).
    """

    arity = 2

    def __init__(self, alpha: float | None = None) -> None:
        super().__init__()
        self.alpha = alpha

    def step(self, model: Any, batches: dict[str, TokenBatch], modalities: tuple[str, str],
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        if set(modalities) != {"text", "image"}:
            raise ConfigError(f"vision-text-pretraining reads text and image, got {modalities}")
        if not callable(getattr(model, "pretraining_losses", None)) \
                or not getattr(model, "pretraining", False):
            raise ConfigError(f"vision-text-pretraining: {model.recipe} has no pre-training "
                              "heads (build it with pretraining: true)")
        return model.pretraining_losses(batches["text"], batches["image"],  # type: ignore[no-any-return]
                                        alpha=self.alpha, generator=generator)
