"""The vision-text pre-training objective that ``mmenc pretrain`` trains."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from mmenc.batch import TokenBatch
from mmenc.errors import ConfigError
from torch import Tensor, nn


def alpha_ramp(alpha: float, step: int, ramp_steps: int) -> float:
    """ALBEF's distillation weight at 0-based training step ``step``: ``alpha * min(1, step /
    ramp_steps)`` (its Pretrain.py ramps over the first epoch, ``ramp_steps`` = batches per
    epoch, and keeps ``alpha`` after)."""
    return alpha * min(1.0, step / ramp_steps)


class VisionTextPretraining(nn.Module):
    """A vision-text model's own pre-training step on matched (text, image) pairs:
    ``model.pretraining_losses(text, image)`` (ALBEF: ITC with momentum distillation and
    queues, ITM with hard negatives, MLM with distillation; BridgeTower: ITC, ITM, MLM).

    Args:
        alpha: the distillation weight (None: the model's ``alpha``).
        alpha_ramp_steps: ALBEF's ramp: over the first ``alpha_ramp_steps`` training steps
            (ALBEF: one epoch) the weight grows linearly from 0, ``alpha * min(1, step /
            alpha_ramp_steps)`` at the 0-based step; None: ``alpha`` from the first step. The
            step count is part of the objective's state, so a resumed run continues the ramp.
    """

    name = "vision-text-pretraining"
    arity = 2
    params = frozenset({"alpha", "alpha_ramp_steps"})
    steps_done: Tensor  # training steps seen, with alpha_ramp_steps (a buffer)

    def __init__(self, alpha: float | None = None, alpha_ramp_steps: int | None = None) -> None:
        super().__init__()
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"vision-text-pretraining: alpha must be in [0, 1], got {alpha}")
        if alpha_ramp_steps is not None and (isinstance(alpha_ramp_steps, bool)
                                             or not isinstance(alpha_ramp_steps, int)
                                             or alpha_ramp_steps < 1):
            raise ConfigError("vision-text-pretraining: alpha_ramp_steps must be a positive "
                              f"whole number, got {alpha_ramp_steps!r}")
        self.alpha = alpha
        self.alpha_ramp_steps = alpha_ramp_steps
        if alpha_ramp_steps is not None:
            self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def alpha_at(self, model: Any) -> float | None:
        """This step's distillation weight (None: the model's own, no ramp)."""
        if self.alpha_ramp_steps is None:
            return self.alpha
        top = float(model.config.get("alpha", 0.4)) if self.alpha is None else self.alpha
        return alpha_ramp(top, int(self.steps_done), self.alpha_ramp_steps)

    def forward(self, model: Any, text: TokenBatch, image: TokenBatch,
                generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """``model.pretraining_losses(text, image)`` on matched rows: ``(loss, logs)``."""
        if not callable(getattr(model, "pretraining_losses", None)) \
                or not getattr(model, "pretraining", False):
            raise ConfigError(f"vision-text-pretraining: {model.recipe} has no pre-training "
                              "heads (build it with pretraining: true)")
        alpha = self.alpha_at(model)
        if self.alpha_ramp_steps is not None and model.training:
            self.steps_done.add_(1)
        return model.pretraining_losses(text, image, alpha=alpha,  # type: ignore[no-any-return]
                                        generator=generator)

    def step(self, model: Any, batches: Mapping[str, TokenBatch],
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """``mmenc pretrain``'s step: ``batches`` holds the text and the image batch."""
        if set(batches) != {"text", "image"}:
            raise ConfigError(f"vision-text-pretraining reads text and image, got {list(batches)}")
        return self(model, batches["text"], batches["image"], generator)  # type: ignore[no-any-return]

    def example_inputs(self) -> dict[str, Any]:
        """A tiny ALBEF with its pre-training state and four (caption, image) pairs."""
        import mmenc
        from mmenc.builtin.image import example_images

        model = mmenc.create_model("albef-tiny", pretraining=True, init="fan-in").train()
        texts = ["a gradient", "a red checkerboard", "grey", "a clear blue"]
        return {"model": model, "text": model.tokenize(texts, "text"),
                "image": model.tokenize(example_images(), "image")}
