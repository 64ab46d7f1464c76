"""Shared helpers and tolerances of the contract checks."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmenc.registry import catalogue
from mmenc.specs import ModalitySpec, ModelSpec, resolve

ATOL = 1e-5
"""Tolerance of the padding checks."""
GRAD_ATOL = 1e-6
"""Tolerance of the gradient-checkpointing check."""
PAD = 5
"""Pad tokens appended by the padding checks."""

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)


# -- small helpers ------------------------------------------------------------------------------
def _fail(where: str, message: str) -> AssertionError:
    return AssertionError(f"{where}: {message}")


def _finite(t: Tensor, where: str, what: str) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise _fail(where, f"{what} has NaN or Inf values")


def _close(a: Tensor, b: Tensor, atol: float, where: str, what: str) -> None:
    if a.shape != b.shape:
        raise _fail(where, f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
    if not diff <= atol:
        raise _fail(where, f"{what} differ by {diff:.3e} (tolerance {atol:g})")


def _examples(modality: str) -> list[Any]:
    spec: ModalitySpec = catalogue().get("modality", modality)
    return list(resolve(spec.example)())


def _loaded_examples(modality: str) -> list[Any]:
    load = resolve(catalogue().get("modality", modality).loader)
    return [load(item) for item in _examples(modality)]


def _tiny_recipes() -> list[ModelSpec]:
    return [e.spec for e in catalogue().entries("model") if e.spec.tiny]


def _seeded(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _check_grads(module: nn.Module, where: str) -> None:
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    if missing:
        more = f", ... ({len(missing)} in all)" if len(missing) > 8 else ""
        raise _fail(where, f"no gradient reaches {', '.join(missing[:8])}{more}")
    bad = [n for n, p in module.named_parameters() if p.grad is not None
           and not bool(torch.isfinite(p.grad).all())]
    if bad:
        raise _fail(where, f"non-finite gradients in {', '.join(bad[:8])}")
