"""The objective protocol: what ``mmenc pretrain`` trains, built-in or from a plugin.

An objective is an ``nn.Module`` class registered with ``ObjectiveSpec(name, "module:Class")``
through the ``mmenc_register_objectives`` hook (the built-in ``contrastive``,
``masked-modeling`` and ``matching`` are registered the same way, see
:mod:`mmenc.objectives.pretraining`). The class declares

- ``name``: the name it is registered under;
- ``arity``: how many modalities it reads (a config entry lists exactly that many);
- ``params``: the keys its config entry may hold (anything else is a ``ConfigError`` naming
  the key and these);

and its instances train through ``step(model, batches, generator) -> (loss, logs)``, where
``batches`` maps each of the entry's modalities, in the config's order, to this rank's
:class:`~mmenc.batch.TokenBatch` and ``generator`` is the objective's own random generator
(seeded from the run's seed, the entry's label and the rank; saved in every checkpoint).

Two members are optional:

- ``for_model(model, modalities, **config)`` (a classmethod): how the trainer builds it when
  it needs the model first (a width probed from the model, a momentum teacher); without it
  the trainer calls ``cls(**config)``.
- ``after_step(model)``: called after every optimiser step (momentum teachers move there).

Nothing read from a config reaches an import: a config names an objective, and only classes
that installed plugins registered are ever built.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from mmenc.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    from mmenc.batch import TokenBatch
    from mmenc.registry import Catalogue

__all__ = ["Objective", "SharedStep", "StepBatches", "build_objective", "objective_class",
           "protocol_problem", "trainable_objectives"]


@runtime_checkable
class Objective(Protocol):
    """A pretraining objective (see the module's docstring). The class itself passes
    ``isinstance(cls, Objective)`` (its members are class attributes and methods), so a config
    is checked against it before anything is built."""

    name: ClassVar[str]
    arity: ClassVar[int]
    params: ClassVar[Collection[str]]

    def step(self, model: Any, batches: Mapping[str, TokenBatch],
             generator: torch.Generator) -> tuple[Tensor, Mapping[str, Any]]:
        """Inputs:
            model: the encoder being trained (unwrapped).
            batches: modality -> this rank's batch, one per modality of the entry.
            generator: this objective's generator for its random choices.
        Returns:
            ``(loss, logs)``: a scalar tensor, and numbers logged as ``{label}/{key}``.
        """
        ...


# -- one training step's batches ------------------------------------------------------------
class SharedStep:
    """One step's batches, and what several objectives share: each modality's embedding is
    computed once (with its graph), and ``similarities[(a, b)]`` holds the ``[b b]``
    similarity logits a contrastive objective computed (matching draws negatives there)."""

    def __init__(self, model: Any, batches: Mapping[str, TokenBatch]) -> None:
        self.model, self.batches = model, batches
        self._embeddings: dict[str, Tensor] = {}
        self.similarities: dict[tuple[str, str], Tensor] = {}

    def embed(self, modality: str) -> Tensor:
        """``model.embed`` of the modality's batch, computed on first use: ``[b e]``."""
        if modality not in self._embeddings:
            self._embeddings[modality] = self.model.embed(self.batches[modality], modality)
        return self._embeddings[modality]

    def view(self, modalities: list[str] | tuple[str, ...]) -> StepBatches:
        return StepBatches(self, modalities)


class StepBatches(Mapping[str, "TokenBatch"]):
    """The ``batches`` an objective's ``step`` gets from the trainer: its modalities, in the
    config's order, mapped to their batches; :meth:`embed` and :attr:`similarities` reach the
    step's :class:`SharedStep`."""

    def __init__(self, shared: SharedStep, modalities: list[str] | tuple[str, ...]) -> None:
        self.shared, self._modalities = shared, tuple(modalities)

    def __getitem__(self, modality: str) -> TokenBatch:
        if modality not in self._modalities:
            raise KeyError(modality)
        return self.shared.batches[modality]

    def __iter__(self) -> Iterator[str]:
        return iter(self._modalities)

    def __len__(self) -> int:
        return len(self._modalities)

    def embed(self, modality: str) -> Tensor:
        """The step's shared ``model.embed`` of one of these modalities: ``[b e]``."""
        if modality not in self._modalities:
            raise KeyError(modality)
        return self.shared.embed(modality)

    @property
    def similarities(self) -> dict[tuple[str, str], Tensor]:
        return self.shared.similarities


# -- the registry: the catalogue's objectives that implement the protocol ---------------------
_MEMBERS = ("name", "arity", "params", "step")


def protocol_problem(cls: Any, name: str) -> str | None:
    """Why the target ``cls`` registered as ``name`` is not an objective ``mmenc pretrain`` can
    train, or None when it follows :class:`Objective`."""
    if not isinstance(cls, type):
        return f"its target is {type(cls).__name__} {getattr(cls, '__name__', cls)!r}, not a class"
    if not isinstance(cls, Objective):
        missing = [m for m in _MEMBERS if not hasattr(cls, m)]
        return f"{cls.__name__} has no {', '.join(missing)}"
    if not callable(cls.step):
        return f"{cls.__name__}.step is not a method"
    if cls.name != name:
        return f"{cls.__name__}.name is {cls.name!r}, not the name it is registered under"
    arity = cls.arity
    if isinstance(arity, bool) or not isinstance(arity, int) or arity < 1:
        return f"{cls.__name__}.arity must be a positive integer, got {arity!r}"
    params = cls.params
    if isinstance(params, str) or not isinstance(params, Collection) \
            or not all(isinstance(p, str) for p in params):
        return f"{cls.__name__}.params must be a collection of option names, got {params!r}"
    untaken = _untaken(cls, params)
    if untaken:
        return (f"{cls.__name__}.params names {', '.join(untaken)}, which its constructor does "
                "not take")
    return None


def _untaken(cls: type, params: Collection[str]) -> list[str]:
    """The declared params the trainer could not build ``cls`` with: those ``for_model`` does
    not name (when it names its options), else those ``__init__`` does not (none when it takes
    ``**kwargs``)."""
    import inspect

    for method in (getattr(cls, "for_model", None), cls):  # a class: its constructor
        if method is None:
            continue
        taken = inspect.signature(method).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in taken.values()):
            continue
        return sorted(set(params) - set(taken))
    return []


def _catalogue(cat: Catalogue | None) -> Catalogue:
    if cat is not None:
        return cat
    from mmenc.registry import catalogue

    return catalogue()


def objective_class(name: str, cat: Catalogue | None = None) -> type[Objective]:
    """The class registered as objective ``name``, checked against :class:`Objective`.

    Raises:
        ConfigError: an unknown name (listing the registered objectives), or a registered
            objective that does not implement the protocol (naming it, its plugin and what is
            missing).
    """
    from mmenc.specs import resolve

    cat = _catalogue(cat)
    try:
        entry = cat.entry("objective", name)
    except UnknownNameError as exc:
        message = str(exc)
        if "(known: " not in message and "failed to load" not in message:
            message += f" (registered: {', '.join(cat.names('objective'))})"
        raise ConfigError(message) from None
    target = resolve(entry.spec.factory)
    problem = protocol_problem(target, name)
    if problem is not None:
        hint = (" (momentum distillation is the contrastive option 'momentum' with 'alpha')"
                if name == "distillation" else "")
        raise ConfigError(f"objective {name!r} (plugin {entry.plugin.name!r}) cannot be trained "
                          f"by `mmenc pretrain`: {problem}; trainable objectives: "
                          f"{', '.join(trainable_objectives(cat))}{hint}")
    return target  # type: ignore[no-any-return]


def trainable_objectives(cat: Catalogue | None = None) -> list[str]:
    """The registered objectives that implement :class:`Objective` (importing their targets;
    a target that fails to import is left out)."""
    from mmenc.specs import resolve

    cat = _catalogue(cat)
    names = []
    for entry in cat.entries("objective"):
        try:
            target = resolve(entry.spec.factory)
        except Exception:  # noqa: BLE001 - a broken target is reported when it is named
            continue
        if protocol_problem(target, entry.spec.name) is None:
            names.append(entry.spec.name)
    return names


def build_objective(cls: type[Objective], model: Any, modalities: list[str],
                    config: Mapping[str, Any]) -> Objective:
    """An instance of ``cls`` for ``model``: ``cls.for_model(model, modalities, **config)``
    when the class defines it, else ``cls(**config)``; ``config`` holds only declared params
    (checked when the config is read)."""
    factory: Callable[..., Any] | None = getattr(cls, "for_model", None)
    objective = (factory(model, list(modalities), **config) if factory is not None
                 else cls(**config))
    if not isinstance(objective, torch.nn.Module):
        raise ConfigError(f"objective {cls.name!r}: building it gave "
                          f"{type(objective).__name__}, not an nn.Module")
    return objective  # type: ignore[return-value]
