"""Initialisation of models trained from scratch."""

from __future__ import annotations

from torch import nn


def init_weights(module: nn.Module, std: float | None = 0.02) -> None:
    """BERT's initialisation: normal(0, std) matrices and embeddings, zero biases, unit norms.

    ``std=None`` scales each Linear by its fan-in (normal(0, 1 / fan_in), LeCun's), embeddings
    keeping 0.02: small post-norm encoders trained from scratch then start with attention that
    depends on the content, so a ``[CLS]`` state differs between inputs from the first step
    (with 0.02 at width 128 it is nearly the same for every input, and a contrastive loss on it
    barely moves)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std if std is not None else m.in_features ** -0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02 if std is None else std)
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
