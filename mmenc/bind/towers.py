"""Towers: one per bound modality, each an existing encoder plus a projection to the hub.

The protocol a bound model needs from a tower (:class:`Tower`) is small:

- ``modality``: the bound modality it encodes (``image``, ``code``, ``audio``, ``midi``, ...);
- ``tokenizer``: turns loaded raw items of that modality into a :class:`TokenBatch`;
- ``forward_features(batch, *, output_hidden_states=False) -> Features``: token states;
- ``forward(batch) -> [b hub_dim]``: the pooled, projected embedding (not normalised).

:class:`EncoderTower` is the one implementation: any catalogue :class:`Encoder` (built from a
recipe, or a saved model such as the converted MiniLM) run on one of its modalities through its
own ``forward_features`` and pooling (its ``embed``), then a linear map to the hub's width.
Composition, not subclassing: an image tower is the ViT of a CLIP recipe, an audio tower the
BEATs of the audio-text recipe, a code tower a copy of MiniLM.

A saved tower is a folder: ``encoder/`` (the encoder, :meth:`Encoder.save_pretrained`),
``projection.safetensors`` and ``tower.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from mmenc.batch import Features, TokenBatch, Tokenizer
from mmenc.errors import CheckpointError, ConfigError
from mmenc.model import Encoder

TOWER_FILE = "tower.json"
PROJECTION = "projection.safetensors"


@runtime_checkable
class Tower(Protocol):
    modality: str
    tokenizer: Tokenizer

    def forward_features(self, batch: TokenBatch, *,
                         output_hidden_states: bool = False) -> Features: ...

    def __call__(self, batch: TokenBatch) -> Tensor: ...


class EncoderTower(nn.Module):
    """An encoder's modality ``inner``, pooled by the encoder, projected to ``out_dim``.

    Args:
        modality: the bound modality this tower encodes.
        encoder: a catalogue model that encodes ``inner``.
        inner: the encoder's own name of the modality (``text`` for a code tower copied from a
            text encoder).
        out_dim: the hub's embedding width.
    """

    def __init__(self, modality: str, encoder: Encoder, inner: str, out_dim: int) -> None:
        super().__init__()
        encoder.check_modality(inner)
        self.modality, self.inner = modality, inner
        self.encoder = encoder
        self.proj = nn.Linear(embed_width(encoder, inner), out_dim, bias=False)

    @property
    def tokenizer(self) -> Tokenizer:
        return self.encoder.tokenizers[self.inner]

    def forward_features(self, batch: TokenBatch, *,
                         output_hidden_states: bool = False) -> Features:
        return self.encoder.forward_features(batch, self.inner, output_hidden_states)

    def forward(self, batch: TokenBatch) -> Tensor:
        return self.proj(self.encoder.embed(batch, self.inner))  # type: ignore[no-any-return]

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        self.encoder.save_pretrained(path / "encoder")
        save_file({"weight": self.proj.weight.detach().contiguous().cpu()}, str(path / PROJECTION))
        (path / TOWER_FILE).write_text(json.dumps(
            {"modality": self.modality, "inner": self.inner,
             "out_dim": self.proj.out_features}, indent=2, sort_keys=True) + "\n")
        return path


def load_tower(path: str | Path) -> EncoderTower:
    """A tower saved by :meth:`EncoderTower.save` (JSON and safetensors only)."""
    from safetensors.torch import load_file

    from mmenc.checkpoint import read_json
    from mmenc.model import load

    path = Path(path)
    meta = read_json(path / TOWER_FILE)
    for key, kind in (("modality", str), ("inner", str), ("out_dim", int)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path / TOWER_FILE}: '{key}' must be a {kind.__name__}")
    if not 0 < meta["out_dim"] <= 65536:
        raise CheckpointError(f"{path / TOWER_FILE}: out_dim {meta['out_dim']} out of range")
    encoder = load(path / "encoder")
    try:
        tower = EncoderTower(meta["modality"], encoder, meta["inner"], meta["out_dim"])
    except KeyError as exc:
        raise CheckpointError(f"{path / TOWER_FILE}: {exc}") from None
    if tower.proj.weight.is_meta:  # a skeleton being checked by mmenc.load: shapes only
        return tower
    try:
        state = load_file(str(path / PROJECTION))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / PROJECTION}: cannot read ({exc})") from None
    from mmenc.checkpoint import fit_state_dict

    fit_state_dict(tower.proj, state, str(path / PROJECTION))
    return tower


def embed_width(encoder: Encoder, modality: str) -> int:
    """The width of ``encoder.embed(batch, modality)``: the projection's output, else the
    tower's width, else measured on the modality's example items."""
    proj = getattr(encoder, "proj", None)
    if isinstance(proj, nn.ModuleDict) and modality in proj:
        layer = proj[modality]
        if isinstance(layer, nn.Linear):
            return int(layer.out_features)
        width = getattr(encoder, "width", None)
        if callable(width):
            try:
                return int(width(modality))
            except (KeyError, TypeError):
                pass
    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    examples = resolve(catalogue().get("modality", modality).example)()[:1]
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        width_ = int(encoder.embed(encoder.tokenize(examples, modality), modality).shape[-1])
    encoder.train(was)
    return width_


def keep_modality(encoder: Encoder, modality: str) -> Encoder:
    """Drop the other towers of a tower encoder (a CLIP recipe's text tower when only its image
    tower is wanted); other encoders are returned as they are."""
    towers = getattr(encoder, "towers", None)
    if not isinstance(towers, nn.ModuleDict) or modality not in towers:
        return encoder
    for other in [m for m in list(towers) if m != modality]:
        del towers[other]
        proj = getattr(encoder, "proj", None)
        if isinstance(proj, nn.ModuleDict) and other in proj:
            del proj[other]
        encoder.tokenizers.pop(other, None)
        for key in ("towers", "tokenizers", "pooling"):
            section = encoder.config.get(key)
            if isinstance(section, dict):
                section.pop(other, None)
        for attr in ("kinds", "pooling"):
            mapping = getattr(encoder, attr, None)
            if isinstance(mapping, dict):
                mapping.pop(other, None)
    return encoder


def build_tower(modality: str, spec: dict[str, Any], out_dim: int) -> EncoderTower:
    """A new tower from its configuration.

    ``spec`` is one of:

    - ``{"recipe": NAME, "overrides": {...}, "modality": INNER}``: a catalogue recipe built
      afresh (``INNER`` defaults to ``modality``); other modalities of the recipe are dropped;
    - ``{"from": MODEL_DIR, "modality": INNER}``: a saved model, weights included (a warm
      start: the code tower copied from MiniLM).

    Either may add ``"init_from": MODEL_DIR``: the recipe's shapes, the weights of a saved
    model (:func:`init_from`; a MIDI tower from a pretrained MIDI-BERT, an audio tower from a
    pretrained BEATs).
    """
    from mmenc.factory import create_model
    from mmenc.model import load

    if not isinstance(spec, dict):
        raise ConfigError(f"tower of {modality!r}: expected a mapping, got {spec!r}")
    inner = spec.get("modality", modality)
    if "from" in spec:
        encoder = load(spec["from"])
    elif "recipe" in spec:
        overrides = spec.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"tower of {modality!r}: overrides must be a mapping")
        encoder = create_model(spec["recipe"], **overrides)
    else:
        raise ConfigError(f"tower of {modality!r}: give 'recipe' or 'from'")
    encoder = keep_modality(encoder, inner)
    if spec.get("init_from") is not None:
        init_from(encoder, inner, spec["init_from"], f"tower of {modality!r}")
    for p in encoder.parameters():
        p.requires_grad_(True)
    return EncoderTower(modality, encoder, inner, out_dim)


def init_from(encoder: Encoder, inner: str, path: str | Path, where: str = "tower") -> int:
    """Copy the weights of the saved model at ``path`` (:func:`mmenc.load`: config.json and
    safetensors only) into the tower of ``encoder`` that encodes ``inner``, by mmenc parameter
    name, for any tower kind; returns the number of tensors copied.

    The tower is ``encoder.towers[inner]`` when ``encoder`` is a tower encoder (a MIDI-BERT
    tower of ``midi-text-tiny``, BEATs of ``audio-text-tiny``), else the whole encoder. Its
    source is the tower of the same modality of a saved tower encoder (or its only tower),
    else the whole saved model (a ``midibert-*`` or ``beats-*`` model), whose other tensors
    (pooler, projection, pretraining heads) are left out. Every tensor of the tower must be in
    the source with the same shape, else a :class:`ConfigError` names the parameter; the
    shapes are the recipe's, so give the recipe the source's configuration.
    """
    from mmenc.checkpoint import copy_weights
    from mmenc.model import load

    if not isinstance(path, str | Path):
        raise ConfigError(f"{where}: init_from must be a model folder, got {path!r}")
    saved = load(path)
    same_tokenizer(encoder, inner, saved, f"{where}: init_from {path}")
    source: nn.Module = saved
    towers = getattr(encoder, "towers", None)
    target: nn.Module = encoder
    if isinstance(towers, nn.ModuleDict) and inner in towers:
        target = towers[inner]
        theirs = getattr(source, "towers", None)
        if isinstance(theirs, nn.ModuleDict):
            if inner in theirs:
                source = theirs[inner]
            elif len(theirs) == 1:
                source = next(iter(theirs.values()))
    copy_weights(
        target, source.state_dict(),
        missing=lambda name: (f"{where}: init_from {path}: parameter {name!r} of the tower is "
                              f"not in the saved model ({type(source).__name__})"),
        mismatch=lambda name, here, there: (f"{where}: init_from {path}: parameter {name!r} "
                                            f"has shape {there} in the saved model, {here} in "
                                            "the tower"))
    return len(target.state_dict())


def same_tokenizer(encoder: Encoder, inner: str, saved: Encoder, where: str) -> None:
    """Refuse a start whose tokenizer cuts items otherwise than the tower's (length caps, keys
    ``max_*``, aside): a BEATs trained on 128 mel bins fits every shape of a 64-bin tower and
    would read other patches.

    Raises:
        ConfigError: naming the first differing key of the two tokenizers' configurations.
    """
    theirs = saved.tokenizers.get(inner)
    if theirs is None and len(saved.tokenizers) == 1:
        theirs = next(iter(saved.tokenizers.values()))
    mine = encoder.tokenizers.get(inner)
    if theirs is None or mine is None:
        return
    a, b = mine.config(), theirs.config()
    for key in sorted(set(a) & set(b)):
        if not key.startswith("max_") and a[key] != b[key]:
            raise ConfigError(f"{where}: the tokenizer's {key!r} is {b[key]!r} in the saved "
                              f"model, {a[key]!r} in the tower")
