"""Training checkpoints: written atomically, found again after a crash, restored exactly.

A checkpoint is a directory ``ckpt-{step:08d}`` holding

- ``model/``: the model as :meth:`~mmenc.model.Encoder.save_pretrained` writes it (so any
  checkpoint loads with ``mmenc.load(ckpt / "model")``);
- ``state.safetensors``: the objectives' tensors (``tasks.*``), the optimiser's state per
  parameter name (``optim.{name}.{key}``) and every rank's random states (``rng.{rank}.*``:
  torch CPU/CUDA, numpy, and the tasks' generators, as uint8 tensors);
- ``state.json``: the scalars (step, stream position, skip counts, scheduler, config digest,
  optimiser hyper-parameters, python ``random`` state);
- ``COMPLETE``: written last. Only directories with it are checkpoints.

Everything is written into a temporary directory, each file fsynced, then renamed to its
final name with ``os.replace`` and the parent fsynced: a crash at any moment leaves either the
previous set of checkpoints or the new one, never half of one. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmenc.errors import CheckpointError

COMPLETE = "COMPLETE"
STATE = "state.safetensors"
SCALARS = "state.json"
WRITE_DELAY_ENV = "MMENC_CHECKPOINT_WRITE_DELAY"
"""``SECONDS`` or ``SECONDS@STEP``: pause inside the checkpoint writes (of step ``STEP`` only),
before the completion marker, so that a crash test can kill a run in the middle of one."""


def _write_delay(step: int) -> float:
    seconds, _, only = os.environ.get(WRITE_DELAY_ENV, "").partition("@")
    if not seconds or (only and int(only) != step):
        return 0.0
    return float(seconds)


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first (temporary and unmarked dirs ignored)."""
    found = []
    for path in Path(output_dir).glob("ckpt-*"):
        step = path.name[len("ckpt-"):]
        if path.is_dir() and step.isdigit() and (path / COMPLETE).is_file():
            found.append((int(step), path))
    return [p for _, p in sorted(found)]


def latest(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = checkpoints(output_dir)
    return found[-1] if found else None


# -- random states ----------------------------------------------------------------------------
def capture_rng(generators: dict[str, torch.Generator]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """This process's random states: tensors (uint8) and JSON scalars."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).view(np.uint8).copy())
    for name, g in generators.items():
        tensors[f"gen.{name}"] = g.get_state()
    version, internal, gauss = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(cached)],
            "python": [version, list(internal), gauss]}
    return tensors, meta


def restore_rng(tensors: dict[str, Tensor], meta: dict[str, Any],
                generators: dict[str, torch.Generator]) -> None:
    """Put back what :func:`capture_rng` captured."""
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    kind, pos, has_gauss, cached = meta["numpy"]
    keys = tensors["numpy"].numpy().view(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    for name, g in generators.items():
        if f"gen.{name}" not in tensors:
            raise CheckpointError(f"the checkpoint has no state for generator {name!r}")
        g.set_state(tensors[f"gen.{name}"])


# -- optimiser --------------------------------------------------------------------------------
def optimizer_tensors(optimizer: torch.optim.Optimizer,
                      names: list[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The optimiser's per-parameter state keyed by parameter name, and its groups' settings."""
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{names[index]}.{key}"] = value
            else:
                scalars[f"{names[index]}.{key}"] = value
    groups = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
    return tensors, {"groups": groups, "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, names: list[str],
                   tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    current = optimizer.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for index, name in enumerate(names):
        prefix = f"optim.{name}."
        entry = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        entry.update({k[len(name) + 1:]: v for k, v in meta["scalars"].items()
                      if k.startswith(name + ".")})
        if entry:
            state[index] = entry
    if len(meta["groups"]) != len(current["param_groups"]):
        raise CheckpointError("the checkpoint's optimiser has a different number of groups")
    groups = [{**saved, "params": group["params"]}
              for saved, group in zip(meta["groups"], current["param_groups"], strict=True)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# -- writing ----------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_dir(path: Path) -> None:
    """Delete a directory in a way a crash cannot turn into a half-deleted checkpoint."""
    doomed = path.with_name(f".tmp-delete-{path.name}-{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def save(output_dir: Path, step: int, model: Any, tensors: dict[str, Tensor],
         scalars: dict[str, Any], keep: int) -> Path:
    """Write checkpoint ``step`` atomically and delete all but the last ``keep``.

    Args:
        output_dir: the run's folder.
        step: optimiser steps done.
        model: the encoder (written with ``save_pretrained``).
        tensors: everything else that is a tensor (names unique, any device).
        scalars: JSON-serialisable state.
        keep: complete checkpoints to keep.
    Returns:
        the checkpoint's directory.
    """
    from safetensors.torch import save_file

    final = output_dir / f"ckpt-{step:08d}"
    tmp = output_dir / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model")
    # safetensors refuses views sharing storage: store independent, contiguous CPU copies
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
              str(tmp / STATE))
    (tmp / SCALARS).write_text(json.dumps(scalars, sort_keys=True), encoding="utf-8")
    delay = _write_delay(step)
    if delay > 0:
        time.sleep(delay)
    for folder, _, files in os.walk(tmp):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))
    (tmp / COMPLETE).write_text(f"{step}\n", encoding="utf-8")
    _fsync(tmp / COMPLETE)
    _fsync(tmp)
    if final.exists():  # an unmarked leftover of the same step
        remove_dir(final)
    os.replace(tmp, final)
    _fsync(output_dir)
    for old in checkpoints(output_dir)[:-keep]:
        remove_dir(old)
    return final


def clean_temporary(output_dir: Path) -> None:
    """Remove what crashed writes and deletions left behind."""
    for path in output_dir.glob(".tmp-*"):
        shutil.rmtree(path, ignore_errors=True)


def read(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A checkpoint's tensors and scalars (the model is read with ``mmenc.load``)."""
    from safetensors.torch import load_file

    if not (path / COMPLETE).is_file():
        raise CheckpointError(f"{path}: not a complete checkpoint (no {COMPLETE} marker)")
    try:
        tensors = load_file(str(path / STATE))
        scalars = json.loads((path / SCALARS).read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
        raise CheckpointError(f"{path}: cannot read the training state ({exc})") from None
    return tensors, scalars
