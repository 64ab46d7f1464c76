"""The ``timeseries`` modality: one raw item is a 1-D sequence of real numbers.

Accepted: a list or tuple of numbers, a 1-D numpy array of integers or floats, or the path of a
``.npy`` file holding one (read with ``allow_pickle=False``: a file never runs code). Refused with
an :class:`~mmenc.errors.InputError` naming the item: anything else, non-numeric values, empty
series, NaN or Inf, more than one dimension, more than :data:`MAX_LENGTH` samples.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mmenc.errors import InputError

MAX_LENGTH = 65_536
"""Longest series accepted, in samples: far beyond what a tokenizer keeps, short of a memory
problem."""


def _label(item: object) -> str:
    if isinstance(item, np.ndarray):
        return f"array of shape {item.shape} ({item.dtype})"
    return repr(item)


def _read_npy(path: Path) -> np.ndarray:
    if path.suffix != ".npy":
        raise InputError(path, "expected a .npy file")
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, ValueError, EOFError) as exc:
        # pickled object arrays and files that are not .npy at all end up here
        raise InputError(path, f"not a readable .npy array ({exc})") from None
    if not isinstance(data, np.ndarray):
        data.close()  # an .npz archive renamed to .npy: np.load opened it lazily
        raise InputError(path, "holds an archive of arrays, not one series")
    return data


def load_timeseries(item: object) -> np.ndarray:
    """Read and validate one series.

    Inputs:
        item: a list, tuple or numpy array of numbers, or a ``.npy`` path (str or Path).
    Returns:
        a 1-D float32 numpy array.
    """
    if isinstance(item, str | os.PathLike):
        label: object = item
        values = _read_npy(Path(item))
    elif isinstance(item, list | tuple | np.ndarray):
        label = _label(item)
        try:
            values = np.asarray(item)
        except (ValueError, TypeError):  # ragged nesting
            raise InputError(label, "not a flat sequence of numbers") from None
    else:
        raise InputError(repr(item), "expected a list, tuple or numpy array of numbers or a "
                                     f".npy path, got {type(item).__name__}")
    if values.dtype.kind not in "iuf":
        raise InputError(label, f"non-numeric values (dtype {values.dtype})")
    if values.ndim != 1:
        raise InputError(label, f"expected a 1-D series, got shape {values.shape}")
    if values.size == 0:
        raise InputError(label, "empty series")
    if values.size > MAX_LENGTH:
        raise InputError(label, f"too long: {values.size} samples (at most {MAX_LENGTH})")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes Inf, refused below
        series = values.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(series))
    if bad.size:
        raise InputError(label, f"NaN or Inf at index {int(bad[0])}")
    return series


def example_timeseries() -> list[Any]:
    """A few valid series of different lengths and kinds (array, list, tuple, integers)."""
    t = np.linspace(0.0, 4.0 * np.pi, 60)
    return [
        np.sin(t).astype(np.float32),
        [0.0, 1.0, 0.5, -0.5, 2.0],
        (3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4),
        np.arange(17, dtype=np.int64),
    ]
