"""The trust boundary of a model folder: what its ``config.json`` may name, and the sizes it
may ask for.

A model folder is data. Its configuration names catalogue entries (a recipe, tokenizers, a
fusion, a text cleaner) by name only, and its sizes are checked before anything is built:
each size against a bound, then the whole architecture, built on the ``meta`` device (no
memory), against the tensor shapes in the header of ``model.safetensors`` (no tensor data is
read). Only a configuration that fits its weights is built for real.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from torch import Tensor, nn

from mmenc.checkpoint import regular_file
from mmenc.errors import CheckpointError, MmencError, UnknownNameError
from mmenc.specs import CleanerSpec

M = TypeVar("M", bound=nn.Module)

# key -> (smallest, largest) value of a size anywhere in a configuration. The bounds are far
# above every published model and far below what exhausts a machine's memory on its own; sizes
# that multiply each other are caught by comparing the built shapes with the weights.
_WIDTH = (1, 1 << 16)
_LENGTH = (1, 1 << 20)
_VOCAB = (1, 1 << 21)
SIZE_BOUNDS: dict[str, tuple[int, int]] = {
    "dim": _WIDTH, "ffn_dim": _WIDTH, "embed_dim": _WIDTH, "emb_dim": _WIDTH,
    "code_dim": _WIDTH, "patch_dim": _WIDTH, "cross_dim": _WIDTH,
    "depth": (1, 256), "heads": (1, 1024), "cross_every": (1, 1024),
    "vocab_size": _VOCAB, "vocab_sizes": _VOCAB, "num_codes": _VOCAB,
    "type_vocab_size": (0, 1 << 16),
    "max_length": _LENGTH, "max_len": _LENGTH, "max_positions": _LENGTH,
    "num_buckets": _LENGTH, "max_distance": _LENGTH, "queue_size": (0, _LENGTH[1]),
    "image_size": (1, 1 << 14), "size": (1, 1 << 14), "patch_size": (1, 1 << 12),
    "in_chans": (1, 64), "num_mel_bins": (1, 4096), "conv_pos": (0, 4096),
    "conv_pos_groups": (1, 4096),
    # the same sizes under the names of an HF config.json (read by converters)
    "hidden_size": _WIDTH, "intermediate_size": _WIDTH, "num_hidden_layers": (1, 256),
    "num_attention_heads": (1, 1024), "max_position_embeddings": _LENGTH,
}
# keys of token ids: integers within int64 and the largest vocabulary, and below the
# ``vocab_size`` beside them where there is one
ID_KEYS = frozenset({"pad_id", "pad_ids", "mask_id", "mask_ids", "pad_token_id",
                     "mask_token_id", "cls_token_id", "bos_token_id", "eos_token_id"})
# keys of real numbers (not sizes): an int or a float, never a string, a list or a boolean
NUMBER_KEYS = frozenset({"eps", "dropout", "attn_dropout", "layer_norm_eps",
                         "hidden_dropout_prob", "attention_probs_dropout_prob"})
# keys whose value, where present, must be a mapping (of mappings: every value a section)
SECTIONS = {"tokenizers": True, "trunk": False}
# keys whose value, where it is a mapping, must be one of mappings (a bound model lists names)
MAPPINGS_OF_SECTIONS = frozenset({"towers"})
# width key -> the key of the number of heads it divides into, in the same mapping
_HEADS = {"dim": "heads", "hidden_size": "num_attention_heads"}
# the largest file (a tokenizer's vocabulary) a model's configuration may name in its folder
MAX_FOLDER_FILE_BYTES = 1 << 30
# the layers of all trunks together: building a skeleton costs time per layer
MAX_TOTAL_DEPTH = 1024


def _walk(value: Any, path: str) -> Iterator[tuple[str, str, Any, Mapping[str, Any] | None]]:
    """(dotted path, key, value, the mapping holding it) of every entry, lists included."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield f"{path}.{key}", str(key), item, value
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield f"{path}[{i}]", "", item, None
            yield from _walk(item, f"{path}[{i}]")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_sizes(config: Mapping[str, Any], where: str,
                error: type[MmencError] = CheckpointError, root: str = "config") -> None:
    """Every size in ``config`` is an integer within :data:`SIZE_BOUNDS`, and every ``dim``
    divides by the ``heads`` beside it.

    Raises:
        CheckpointError: (or ``error``) naming ``where`` (the file) and the key, e.g.
            ``config.towers.text.trunk.heads`` (``root`` is the first part of the key).
    """
    entries = [(path.lstrip("."), key, value, parent)
               for path, key, value, parent in _walk(config, root)]
    check_types(entries, where, error)
    for path, key, value, _ in entries:
        bounds = SIZE_BOUNDS.get(key)
        if bounds is None or value is None or isinstance(value, Mapping):
            continue
        items = list(enumerate(value)) if isinstance(value, list | tuple) else [(None, value)]
        for i, item in items:
            at = path if i is None else f"{path}[{i}]"
            if not _is_int(item):
                raise error(f"{where}: {at}: a size must be an integer, got {item!r}")
            low, high = bounds
            if not low <= item <= high:
                raise error(f"{where}: {at}: {item} is outside {low}..{high}")
    total = sum(value for _, key, value, _ in entries
                if key in ("depth", "num_hidden_layers") and _is_int(value))
    if total > MAX_TOTAL_DEPTH:
        raise error(f"{where}: config: its trunks have {total} layers in all, more than "
                    f"{MAX_TOTAL_DEPTH}")
    for path, key, value, parent in entries:
        heads = parent.get(_HEADS[key]) if key in _HEADS and parent is not None else None
        if _is_int(value) and _is_int(heads) and value % heads:
            raise error(f"{where}: {path}: {value} does not divide into {heads} heads")


def check_types(entries: list[tuple[str, str, Any, Mapping[str, Any] | None]], where: str,
                error: type[MmencError] = CheckpointError) -> None:
    """No number is NaN or infinite, every real-valued option (:data:`NUMBER_KEYS`) is a
    number, every section (:data:`SECTIONS`) is a mapping, and every
    token id (:data:`ID_KEYS`) is an integer within the vocabulary.

    Raises:
        CheckpointError: (or ``error``) naming ``where`` and the key.
    """
    for path, key, value, parent in entries:
        if isinstance(value, float) and not math.isfinite(value):
            raise error(f"{where}: {path}: {value!r} is not a finite number")
        if key in NUMBER_KEYS and value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)):
            raise error(f"{where}: {path}: must be a number, got {value!r:.40}")
        if key in MAPPINGS_OF_SECTIONS and isinstance(value, Mapping):
            for name, section in value.items():
                if not isinstance(section, Mapping):
                    raise error(f"{where}: {path}.{name}: must be a mapping, got "
                                f"{type(section).__name__} {section!r:.40}")
        if key in SECTIONS and value is not None:
            if not isinstance(value, Mapping):
                raise error(f"{where}: {path}: must be a mapping, got "
                            f"{type(value).__name__} {value!r:.40}")
            for name, section in value.items() if SECTIONS[key] else ():
                if not isinstance(section, Mapping):
                    raise error(f"{where}: {path}.{name}: must be a mapping, got "
                                f"{type(section).__name__} {section!r:.40}")
        if key in ID_KEYS and value is not None:
            vocab = parent.get("vocab_size") if parent is not None else None
            in_vocab = isinstance(vocab, int) and not isinstance(vocab, bool) and vocab >= 1
            high = vocab - 1 if isinstance(vocab, int) and in_vocab else _VOCAB[1]
            items = list(enumerate(value)) if isinstance(value, list | tuple) else [(None, value)]
            for i, item in items:
                at = path if i is None else f"{path}[{i}]"
                if not _is_int(item):
                    raise error(f"{where}: {at}: a token id must be an integer, got {item!r:.40}")
                if not 0 <= item <= high:
                    raise error(f"{where}: {at}: token id {item} is outside 0..{high}"
                                + (" (vocab_size)" if in_vocab else ""))


def find_cleaner(name: object, cleaners: Mapping[str, CleanerSpec]) -> CleanerSpec:
    """The registered cleaner ``name``.

    Configurations saved before cleaners had names hold the import path of a registered
    cleaner (``"mmenc_vl.preprocess:albef_caption"``): such a string maps to the cleaner
    registered with exactly that target. Any other string is unknown; nothing is imported.

    Raises:
        UnknownNameError: listing the registered cleaners.
    """
    if isinstance(name, str):
        if name in cleaners:
            return cleaners[name]
        for spec in cleaners.values():
            if isinstance(spec.target, str) and spec.target == name:
                return spec
    raise UnknownNameError("text cleaner", str(name), cleaners)


def registered_cleaners() -> dict[str, CleanerSpec]:
    from mmenc.registry import catalogue

    cat = catalogue()
    return {name: cat.get("cleaner", name) for name in cat.names("cleaner")}


def check_names(config: Mapping[str, Any], where: str) -> None:
    """Every text cleaner the tokenizer configurations name is registered, and no tower names
    a weights file (``pretrained_file``, an option of model creation only).

    Raises:
        CheckpointError: naming ``where``, the key and the registered cleaners.
    """
    towers = config.get("towers")
    for modality, tower in towers.items() if isinstance(towers, Mapping) else ():
        for key in ("pretrained_file",) if isinstance(tower, Mapping) else ():
            if key in tower:  # a creation-only option: a saved model holds its weights
                raise CheckpointError(
                    f"{where}: config.towers.{modality}.{key}: a model folder never names a "
                    "file outside it (the weights are in model.safetensors)")
    tokenizers = config.get("tokenizers")
    if not isinstance(tokenizers, Mapping):
        return
    cleaners: dict[str, CleanerSpec] | None = None
    for modality, tok in tokenizers.items():
        if not isinstance(tok, Mapping) or tok.get("clean") is None:
            continue
        cleaners = registered_cleaners() if cleaners is None else cleaners
        try:
            find_cleaner(tok["clean"], cleaners)
        except UnknownNameError:
            choices = ", ".join(sorted(cleaners)) or "none"
            raise CheckpointError(
                f"{where}: config.tokenizers.{modality}.clean: {tok['clean']!r} is not a "
                f"registered text cleaner (registered: {choices}); a model folder names "
                "catalogue entries, never code") from None


def read_header(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the header of a safetensors file (no tensor data is read).

    Raises:
        CheckpointError: the file is missing or is not safetensors.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: cannot read weights ({exc})") from None


def check_shapes(model: nn.Module, header: Mapping[str, tuple[int, ...]], weights: Path,
                 config_file: Path) -> None:
    """Every tensor of ``model`` (usually built on the ``meta`` device) has the shape the
    weights file holds for it; tied tensors may be stored once.

    Raises:
        CheckpointError: naming both files and listing the keys that do not fit.
    """
    saved = set(model.state_dict())
    tensors: dict[str, Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    groups: dict[int | str, list[str]] = {}
    for key in saved:
        groups.setdefault(id(tensors[key]) if key in tensors else key, []).append(key)
    missing = sorted(min(g) for g in groups.values() if not any(k in header for k in g))
    unexpected = sorted(set(header) - saved)
    misshaped = sorted(f"{k}: weights {header[k]} vs config {tuple(tensors[k].shape)}"
                       for k in saved & set(header)
                       if k in tensors and tuple(tensors[k].shape) != header[k])
    problems = [f"{label}: {', '.join(keys[:6])}" + (f", ... ({len(keys)} in all)"
                                                       if len(keys) > 6 else "")
                for label, keys in (("mis-shaped", misshaped), ("missing", missing),
                                    ("unexpected", unexpected)) if keys]
    if problems:
        raise CheckpointError(f"{config_file}: the configuration does not fit {weights} ("
                              + "; ".join(problems) + ")")


def build_skeleton(build: Callable[[], M]) -> M:
    """``build()`` on the ``meta`` device: modules get shapes but no memory. A builder that
    loads parts from sub-folders gets their skeletons (see :func:`mmenc.load`)."""
    import warnings

    import torch

    with torch.device("meta"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*to a meta parameter.*is a no-op")
        return build()


def folder_file(directory: str | Path, name: object, key: str) -> Path:
    """The file a saved model's config names under ``key``, which must lie inside the model's
    folder: a relative path with no way out of it. A model folder never makes mmenc read a
    file elsewhere on the machine."""
    folder = Path(directory).resolve()
    relative = Path(str(name))
    path = (folder / relative).resolve()
    if relative.is_absolute() or not path.is_relative_to(folder):
        raise CheckpointError(f"{Path(directory) / 'config.json'}: {key}: {str(name)!r} is not a "
                              "file inside the model's folder")
    if os.path.lexists(path):  # a missing file is its reader's to report
        regular_file(path, MAX_FOLDER_FILE_BYTES, key)
    return path
