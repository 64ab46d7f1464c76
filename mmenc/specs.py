"""What plugins register: small frozen records that point at code by import path.

A spec names its implementation as ``"package.module:attribute"`` so that building the
catalogue (and ``mmenc plugins`` / ``mmenc models``) never imports a plugin's heavy
dependencies; the target is imported on first use with :func:`resolve`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mmenc.errors import SpecError, TargetError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

Target = str | Callable[..., Any]


def resolve(target: Target) -> Any:
    """Import ``"module:attr"`` (attributes may be dotted) or return a callable as is.

    Only targets that plugin code registered reach this function: a string read from a file
    names a catalogue entry, never a target (see docs/checkpoints.md, "Trust boundary").

    Raises:
        TargetError: the module cannot be imported (or fails while importing) or has no such
            attribute; the message names the target and the plugin that registered it.
    """
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a broken plugin module may raise anything
        from mmenc.registry import owner_of

        owner = owner_of(target)
        by = f" (registered by plugin {owner!r})" if owner else ""
        raise TargetError(f"target {target!r}{by} cannot be loaded: "
                          f"{type(exc).__name__}: {exc}", target=target, plugin=owner) from exc
    return obj


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpecError(f"{kind} name {name!r} must be lower-case letters, digits, '_', '-' or '.'")


def _check_target(kind: str, name: str, target: object) -> None:
    if callable(target):
        return
    if not isinstance(target, str) or not _TARGET.match(target):
        raise SpecError(
            f"{kind} {name!r}: target {target!r} is not 'module:attribute' or a callable")


@dataclass(frozen=True)
class ModalitySpec:
    """A kind of raw item.

    Args:
        name: the modality's name ("text", "image", "audio", ...).
        loader: ``"module:attr"`` of ``load(item) -> value``: reads and validates one raw item
            (a path, a string, bytes), raising :class:`mmenc.errors.InputError` naming it.
        example: ``"module:attr"`` of ``example() -> list`` of a few valid raw items.
        description: one line for listings.
    """

    name: str
    loader: Target
    example: Target
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("modality", self.name)
        _check_target("modality", self.name, self.loader)
        _check_target("modality", self.name, self.example)


@dataclass(frozen=True)
class TokenizerSpec:
    """Turns loaded items of one modality into a :class:`mmenc.batch.TokenBatch`.

    Args:
        name: catalogue name.
        modality: the modality it reads.
        factory: ``"module:attr"`` of ``factory(**config) -> Tokenizer``.
        description: one line for listings.
    """

    name: str
    modality: str
    factory: Target
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("tokenizer", self.name)
        _check_name("modality", self.modality)
        _check_target("tokenizer", self.name, self.factory)


@dataclass(frozen=True)
class CleanerSpec:
    """A text cleaner a tokenizer configuration may name (``"clean": NAME``): a pipeline's
    own normalisation applied to each text before tokenizing (ALBEF's caption cleaning).

    A saved model names its cleaner by this catalogue name, never by import path.

    Args:
        name: catalogue name ("albef-caption").
        target: ``"module:attr"`` of ``clean(text: str) -> str``; it may raise
            :class:`mmenc.errors.InputError` for a text it refuses.
        description: one line for listings.
    """

    name: str
    target: Target
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("cleaner", self.name)
        _check_target("cleaner", self.name, self.target)


@dataclass(frozen=True)
class _FactorySpec:
    name: str
    factory: Target
    description: str = ""
    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _check_name(self.kind, self.name)
        _check_target(self.kind, self.name, self.factory)


@dataclass(frozen=True)
class FusionSpec(_FactorySpec):
    """How the hidden states of several modalities meet.

    Args:
        name: "dual", "merged", "cross-attention", "bridge", ...
        factory: ``"module:attr"`` of ``factory(widths=..., **config) -> nn.Module``.
        description: one line for listings.
    """

    kind: ClassVar[str] = "fusion"


@dataclass(frozen=True)
class TowerSpec(_FactorySpec):
    """A kind of tower: a module that turns a batch of one modality into token states.

    A tower is any ``nn.Module`` that follows :class:`mmenc.batch.Tower`. Tower encoders
    (``mmenc.builtin.towers``) name a tower's kind in their configuration (``"kind": NAME``)
    and build it with the factory registered under that name, never by import path.

    Args:
        name: the kind ("text", "vision", "timm", "midi", "beats", ...).
        factory: ``"module:attr"`` of ``factory(config, tokenizer) -> Tower``: ``config`` is
            the tower's section of the model configuration without ``kind``, ``tokenizer`` the
            modality's tokenizer, already built.
        description: one line for listings.
        from_encoder: ``"module:attr"`` of ``from_encoder(source: Encoder) -> (tower, config,
            tokenizer)``: a tower of this kind, its configuration section (without ``kind``)
            and tokenizer taken from a saved model that is not a tower encoder (a MIDI tower
            from a MIDI-BERT model), for ``warm_start``; None when the kind has none.
    """

    from_encoder: Target | None = None
    kind: ClassVar[str] = "tower"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.from_encoder is not None:
            _check_target("tower", self.name, self.from_encoder)


@dataclass(frozen=True)
class ObjectiveSpec(_FactorySpec):
    """A training objective: a module returning ``(loss, logs)``.

    Args:
        name: catalogue name ("contrastive", "masked-modeling", ...).
        factory: ``"module:attr"`` of ``factory(**config) -> nn.Module``.
        description: one line for listings.
    """

    kind: ClassVar[str] = "objective"


@dataclass(frozen=True)
class ModelSpec:
    """A named model recipe: a builder and its default configuration.

    Args:
        name: catalogue name ("minilm-l6", "beats-base", "*-tiny" for tests).
        modalities: the modalities the model encodes.
        builder: ``"module:attr"`` of ``build(config: dict) -> mmenc.Encoder``.
        config: the default configuration (JSON-serialisable), or ``"module:attr"`` of it so
            that listing recipes does not import the module that computes it.
        fusion: the fusion it uses.
        description: one line for listings.
        tiny: True for the small variants used by the contract tests.
    """

    name: str
    modalities: tuple[str, ...]
    builder: Target
    config: Mapping[str, Any] | str = field(default_factory=dict)
    fusion: str = "dual"
    description: str = ""
    tiny: bool = False

    def __post_init__(self) -> None:
        _check_name("model", self.name)
        if not self.modalities or isinstance(self.modalities, str):
            raise SpecError(f"model {self.name!r}: modalities must be a non-empty tuple of names")
        for m in self.modalities:
            _check_name("modality", m)
        _check_target("model", self.name, self.builder)
        if isinstance(self.config, str):
            _check_target("model config", self.name, self.config)
        elif not isinstance(self.config, Mapping):
            raise SpecError(f"model {self.name!r}: config must be a mapping or 'module:attr'")

    def default_config(self) -> dict[str, Any]:
        """The default configuration (imported on first use when given as a target)."""
        config = resolve(self.config) if isinstance(self.config, str) else self.config
        return dict(config)


@dataclass(frozen=True)
class ConverterSpec:
    """Imports a checkpoint in a foreign format.

    Args:
        format: the ``--from`` name ("hf-bert", "beats", ...).
        target: ``"module:attr"`` of ``convert(src: Path, **options) -> mmenc.Encoder``.
        description: what files it reads.
    """

    format: str
    target: Target
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("format", self.format)
        _check_target("converter", self.format, self.target)


@dataclass(frozen=True)
class ParitySpec:
    """Maps the outputs of a reference fixture (``fixture.json``) to calls of an mmenc model.

    Args:
        system: the fixture's ``system``.
        converter: the format used to convert the fixture's checkpoint.
        run: ``"module:attr"`` of ``run(model, inputs: dict[str, Tensor], fixture: dict)
            -> dict[str, Tensor | tuple[Tensor, Tensor]]``; a tuple is ``(value, where)`` with a
            boolean ``where`` selecting the elements that are compared.
        kind: the fixture's ``kind`` when a system has several (None matches any).
        tolerance: max abs diff for float outputs; integer outputs must match exactly.
        options: ``"module:attr"`` of ``options(fixture: dict) -> dict``: keyword options for
            the converter (for containers that hold no configuration); None for none.
    """

    system: str
    converter: str
    run: Target
    kind: str | None = None
    tolerance: float = 1e-5
    options: Target | None = None

    def __post_init__(self) -> None:
        _check_name("system", self.system)
        _check_name("format", self.converter)
        _check_target("parity", self.system, self.run)
        if self.options is not None:
            _check_target("parity", self.system, self.options)


@dataclass(frozen=True)
class CommandSpec:
    """A sub-command added to the ``mmenc`` CLI.

    Args:
        name: the sub-command's name.
        target: ``"module:attr"`` of a ``click.Command``.
        help: one line shown by ``mmenc --help``.
    """

    name: str
    target: Target
    help: str = ""

    def __post_init__(self) -> None:
        _check_name("command", self.name)
        _check_target("command", self.name, self.target)


SPEC_KINDS: dict[str, type] = {
    "modality": ModalitySpec,
    "tokenizer": TokenizerSpec,
    "cleaner": CleanerSpec,
    "fusion": FusionSpec,
    "tower": TowerSpec,
    "objective": ObjectiveSpec,
    "model": ModelSpec,
    "converter": ConverterSpec,
    "parity": ParitySpec,
    "command": CommandSpec,
}


def spec_key(spec: object) -> str:
    """The name a spec is registered under."""
    if isinstance(spec, ConverterSpec):
        return spec.format
    if isinstance(spec, ParitySpec):
        return spec.system if spec.kind is None else f"{spec.system}/{spec.kind}"
    return spec.name  # type: ignore[attr-defined,no-any-return]
