"""Checking a converted checkpoint against reference outputs of the official code.

A fixture directory holds ``fixture.json`` (``system``, optional ``kind``, where the checkpoint
is), ``inputs.safetensors``, ``reference_outputs.safetensors`` and the checkpoint in its official
container. The plugin that registered a :class:`~mmenc.specs.ParitySpec` for the system says
which converter reads the checkpoint and how each reference output is computed through the
model's public API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmenc.checkpoint import read_json
from mmenc.errors import CheckpointError


@dataclass
class ParityReport:
    """Per-output max abs differences (None: not produced or not comparable)."""

    system: str
    kind: str | None
    tolerance: float
    outputs: dict[str, float | None] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and not self.problems and all(
            d is not None for d in self.outputs.values()
        )

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "kind": self.kind, "tolerance": self.tolerance,
                "outputs": self.outputs, "problems": self.problems, "passed": self.passed}


def fixture_checkpoint(fixture_dir: Path, fixture: dict[str, Any]) -> Path:
    """Where a fixture keeps its checkpoint (``checkpoint_dir`` or ``checkpoint_file``)."""
    for key in ("checkpoint_dir", "checkpoint_file"):
        if fixture.get(key):
            path = fixture_dir / str(fixture[key])
            if not path.exists():
                raise CheckpointError(
                    f"{fixture_dir / 'fixture.json'}: {key} {path} does not exist")
            return path
    raise CheckpointError(f"{fixture_dir / 'fixture.json'}: no checkpoint_dir or checkpoint_file")


def compare(value: Tensor | tuple[Tensor, Tensor], reference: Tensor) -> tuple[float | None, str]:
    """Max abs difference of ``value`` against ``reference`` (integers must match exactly)."""
    where = None
    if isinstance(value, tuple):
        value, where = value
    value = value.detach().cpu()
    if tuple(value.shape) != tuple(reference.shape):
        return None, f"shape {tuple(value.shape)} vs reference {tuple(reference.shape)}"
    if where is not None:
        where = where.cpu().bool().expand_as(reference)
        value, reference = value[where], reference[where]
    if not reference.is_floating_point():
        mismatches = int((value.long() != reference.long()).sum())
        if mismatches:
            return float((value.long() - reference.long()).abs().max()), (
                f"{mismatches} of {reference.numel()} integer values differ")
        return 0.0, ""
    diff = (value.double() - reference.double()).abs()
    if diff.numel() == 0:
        return 0.0, ""
    worst = float(diff.max())
    if math.isnan(worst) or not torch.isfinite(value).all():
        return None, "non-finite values"
    return worst, ""


def run_parity(fixture_dir: str | Path, tolerance: float | None = None) -> ParityReport:
    """Convert a fixture's checkpoint and compare every reference output."""
    from safetensors.torch import load_file

    from mmenc.factory import convert
    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    fixture_dir = Path(fixture_dir)
    fixture = read_json(fixture_dir / "fixture.json")
    system = fixture.get("system")
    if not isinstance(system, str):
        raise CheckpointError(f"{fixture_dir / 'fixture.json'}: no 'system' string")
    kind = fixture.get("kind")
    spec = catalogue().parity_for(system, kind)
    tol = spec.tolerance if tolerance is None else tolerance
    report = ParityReport(system, kind, tol)

    options = resolve(spec.options)(fixture) if spec.options is not None else {}
    model = convert(spec.converter, fixture_checkpoint(fixture_dir, fixture), **options)
    model.eval()
    inputs = load_file(str(fixture_dir / "inputs.safetensors"))
    references = load_file(str(fixture_dir / "reference_outputs.safetensors"))
    with torch.inference_mode():
        outputs = resolve(spec.run)(model, inputs, fixture)
    for name, reference in references.items():
        if name not in outputs:
            report.outputs[name] = None
            report.problems[name] = "not computed"
            continue
        diff, problem = compare(outputs[name], reference)
        report.outputs[name] = diff
        if problem:
            report.problems[name] = problem
        elif diff is not None and diff > (tol if reference.is_floating_point() else 0):
            report.problems[name] = f"max abs diff {diff:.3g} > {tol:g}"
    return report
