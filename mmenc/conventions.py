"""The spellings users bring from sentence-transformers and open_clip, mapped onto mmenc's.

``Encoder.encode`` accepts one raw item (giving one ``[e]`` vector, as
``SentenceTransformer.encode("a string")`` does) or a list (giving ``[n e]``), and
sentence-transformers' keyword names beside mmenc's own. These helpers keep that mapping out of
the model class.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor


def is_single_item(items: object) -> bool:
    """True for one raw item: a string, bytes, a path, a mapping (``{"path": ...}``), a PIL
    image, one array or one ``(samples, sample_rate)`` pair (audio)."""
    if isinstance(items, str | bytes | bytearray | os.PathLike | np.ndarray | Tensor | Mapping):
        return True
    if (isinstance(items, tuple) and len(items) == 2 and hasattr(items[0], "shape")
            and isinstance(items[1], int | float) and not isinstance(items[1], bool)):
        return True
    pil = sys.modules.get("PIL.Image")  # an image can only exist once PIL is imported
    return pil is not None and isinstance(items, pil.Image)


def as_item_list(items: Any) -> tuple[bool, list[Any]]:
    """``(single, items as a list)``; one item becomes a list of one."""
    if is_single_item(items):
        return True, [items]
    if not isinstance(items, Iterable):
        raise TypeError(f"encode() takes one raw item or an iterable of them, got "
                        f"{type(items).__name__}")
    return False, list(items)


def pick_modality(modality: str | None, modalities: Sequence[str], recipe: str) -> str:
    """``modality``, or the model's only one; several need an explicit choice."""
    if modality is not None:
        return modality
    if len(modalities) == 1:
        return modalities[0]
    raise TypeError(f"{recipe} encodes {', '.join(modalities)}: say which with "
                    f"encode(items, modality=...), e.g. encode(items, modality={modalities[0]!r})")


def merge_aliases(normalize: bool, dim: int | None, normalize_embeddings: bool | None,
                  truncate_dim: int | None) -> tuple[bool, int | None]:
    """mmenc's ``normalize``/``dim`` with sentence-transformers' names folded in."""
    if normalize_embeddings is not None:
        normalize = bool(normalize_embeddings)
    if truncate_dim is not None:
        if dim is not None and dim != truncate_dim:
            raise ValueError(f"dim={dim} and truncate_dim={truncate_dim} disagree; pass one")
        dim = truncate_dim
    return normalize, dim


def convert_output(emb: Tensor, single: bool, convert_to_numpy: bool,
                   convert_to_tensor: bool | None) -> Any:
    """``emb [n e]`` as ``[e]`` for one item, and as numpy when asked (a tensor by default;
    ``convert_to_tensor=True`` wins over ``convert_to_numpy``, as in sentence-transformers)."""
    out = emb[0] if single else emb
    if convert_to_numpy and not convert_to_tensor:
        return out.numpy()
    return out
