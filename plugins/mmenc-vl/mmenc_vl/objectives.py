"""The vision-text pre-training objective that ``mmenc pretrain`` trains."""

from __future__ import annotations

from collections.abc import Mapping
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

    name = "vision-text-pretraining"
    arity = 2
    params = frozenset({"alpha"})

    def __init__(self, alpha: float | None = None) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, model: Any, text: TokenBatch, image: TokenBatch,
                generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """``model.pretraining_losses(text, image)`` on matched rows: ``(loss, logs)``."""
        if not callable(getattr(model, "pretraining_losses", None)) \
                or not getattr(model, "pretraining", False):
            raise ConfigError(f"vision-text-pretraining: {model.recipe} has no pre-training "
                              "heads (build it with pretraining: true)")
        return model.pretraining_losses(text, image, alpha=self.alpha,  # type: ignore[no-any-return]
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
