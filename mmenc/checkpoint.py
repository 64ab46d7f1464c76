"""Reading foreign checkpoints safely and fitting state dicts to models.

Foreign files are read with safetensors or ``torch.load(weights_only=True)`` only; anything
that needs arbitrary unpickling is refused with the name of what blocked it.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmenc.errors import CheckpointError, ConfigError

MAX_JSON_BYTES = 16 << 20
"""The largest JSON file (a model's ``config.json``) read whole."""
MAX_WEIGHTS_BYTES = 1 << 40
"""The largest weights file a model folder may hold."""


def regular_file(path: str | Path, max_bytes: int, what: str = "file") -> Path:
    """``path`` when it is a regular file (after following links) of at most ``max_bytes``.

    A directory, a FIFO, a device (``/dev/zero``) or a socket is refused before anything is
    opened: reading one would fail, block for ever or never end.

    Raises:
        CheckpointError: naming ``path`` and the reason.
    """
    path = Path(path)
    try:
        info = os.stat(path)  # follows symbolic links
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read this {what} ({exc.strerror or exc})") \
            from None
    if not stat.S_ISREG(info.st_mode):
        kind = ("a directory" if stat.S_ISDIR(info.st_mode) else
                "a FIFO" if stat.S_ISFIFO(info.st_mode) else
                "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else
                "not a regular file")
        raise CheckpointError(f"{path}: is {kind}, not a regular {what}")
    if info.st_size > max_bytes:
        raise CheckpointError(f"{path}: {info.st_size} bytes, more than a {what} may hold "
                              f"({max_bytes})")
    return path


def read_limited(path: str | Path, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path`` (see :func:`regular_file`); a file that grows
    past ``max_bytes`` while it is read is refused too."""
    path = regular_file(path, max_bytes, what)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read this {what} ({exc.strerror or exc})") \
            from None
    if len(data) > max_bytes:
        raise CheckpointError(f"{path}: more than a {what} may hold ({max_bytes} bytes)")
    return data


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A JSON object from the regular file ``path`` of at most ``max_bytes``, or a
    :class:`CheckpointError` naming the file."""
    path = Path(path)
    data = read_limited(path, max_bytes, "JSON file")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: JSON nested too deeply to be a configuration") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_foreign(path: str | Path) -> Any:
    """Load a foreign checkpoint file without executing code from it.

    ``.safetensors`` files are read with safetensors; everything else with
    ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers.
    """
    path = regular_file(path, MAX_WEIGHTS_BYTES, "checkpoint file")
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


def check_finite(state: Mapping[str, Tensor], source: str | Path) -> None:
    """Every floating tensor of ``state`` holds finite numbers only.

    A NaN or an Inf makes a tensor's sum non-finite, so a finite sum (one fast reduction)
    clears a tensor; only a tensor whose sum is not finite, which large finite values can also
    cause, is checked element by element with ``torch.isfinite``.

    Raises:
        CheckpointError: naming ``source`` and the first tensor with a NaN or an Inf.
    """
    for key, tensor in state.items():
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
            continue
        if not bool(torch.isfinite(tensor).all()):
            kind = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
            raise CheckpointError(f"{source}: tensor {key!r} holds {kind} values; the weights "
                                  "are damaged (or were saved from a run that diverged)")


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


def copy_weights(target: nn.Module, state: Mapping[str, Tensor], *,
                 missing: Callable[[str], str],
                 mismatch: Callable[[str, tuple[int, ...], tuple[int, ...]], str],
                 skip: tuple[str, ...] = (), rows: tuple[str, ...] = ()) -> list[str]:
    """Copy ``state`` (a source model's, which may hold more) into every parameter and buffer
    of ``target`` by name: a warm start. Names starting with one of ``skip`` keep their values;
    a name in ``rows`` (a position table) takes the first rows of a longer source. Every name
    is checked before anything is copied; returns the names kept.

    Raises:
        ConfigError: ``missing(name)`` for a name the source lacks, ``mismatch(name, here,
            there)`` for one of another shape.
    """
    own = target.state_dict()
    kept = [key for key in own if key.startswith(skip)] if skip else []
    taken: dict[str, Tensor] = {}
    for key, value in own.items():
        if skip and key.startswith(skip):
            continue
        if key not in state:
            raise ConfigError(missing(key))
        src = state[key]
        if key in rows and src.ndim == value.ndim and src.shape[1:] == value.shape[1:] \
                and src.shape[0] >= value.shape[0]:
            src = src[: value.shape[0]]
        if src.shape != value.shape:
            raise ConfigError(mismatch(key, tuple(value.shape), tuple(src.shape)))
        taken[key] = src
    with torch.no_grad():
        for key, src in taken.items():
            own[key].copy_(src)
    return kept


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
