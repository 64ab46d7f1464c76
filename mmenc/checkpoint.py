"""Reading foreign checkpoints safely and fitting state dicts to models.

Foreign files are read with safetensors or ``torch.load(weights_only=True)`` only; anything
that needs arbitrary unpickling is refused with the name of what blocked it.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmenc.errors import CheckpointError


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a :class:`CheckpointError` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_foreign(path: str | Path) -> Any:
    """Load a foreign checkpoint file without executing code from it.

    ``.safetensors`` files are read with safetensors; everything else with
    ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = _blocked_global(str(exc))
        if blocked is None:
            with path.open("rb") as f:
                is_pickle = f.read(1) == b"\x80"  # the PROTO opcode that starts a pickle
            if not is_pickle:  # an image, a text file ...
                raise CheckpointError(f"{path}: not a PyTorch checkpoint") from None
            blocked = "a pickle that is not plain tensors and containers"
        raise CheckpointError(
            f"{path}: refused: it needs objects that a weights-only load does not allow "
            f"({blocked}); mmenc never unpickles arbitrary code"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:  # a damaged archive: say what broke
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first[:120]})") \
            from None
    except Exception:  # noqa: BLE001 - the unpickler fails in many ways on other files
        raise CheckpointError(f"{path}: not a PyTorch checkpoint") from None


def _blocked_global(message: str) -> str | None:
    """The global a weights-only load refused, from PyTorch's message (whose advice to load
    with ``weights_only=False`` is never relayed), or None when nothing was refused."""
    for line in message.splitlines():
        line = line.strip()
        if "GLOBAL" in line or line.startswith(("Unsupported class", "Trying to call reduce")):
            return line.split(" was not an allowed global")[0].split(". ")[0].rstrip(".")
    return None


def find_weights(directory: str | Path) -> Path:
    """The weights file of an HF-style folder (safetensors preferred)."""
    directory = Path(directory)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"{directory}: no model.safetensors or pytorch_model.bin in this folder")


def fit_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "checkpoint"
) -> None:
    """Load ``state_dict`` strictly, or raise a :class:`CheckpointError` listing every missing,
    unexpected and mis-shaped key."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    misshaped = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if tuple(own[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or misshaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("mis-shaped", misshaped)):
            if keys:
                more = f", ... ({len(keys)} in all)" if len(keys) > 8 else ""
                shown = ", ".join(keys[:8]) + more
                parts.append(f"{label} keys: {shown}")
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(dict(state_dict), strict=True)
