"""The configuration of a pretraining run: dataclasses read from YAML and checked before any work.

Every key is checked against the dataclasses below: an unknown key, a value of the wrong type or
a missing required key is a :class:`~mmenc.errors.ConfigError` naming the file and the key path
(``train.yaml: optim.lr: expected a number, got 'fast'``). Catalogue names (recipe, objectives)
are checked here too, and each objective entry against its registered class
(:class:`~mmenc.objectives.protocol.Objective`: how many modalities it reads, the options it
declares), so a typo never costs a model build.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmenc.errors import ConfigError, UnknownNameError
from mmenc.recipe_config import check_keys as check_keys  # re-exported: plugins' readers
from mmenc.recipe_config import read_dataclass

# The largest global batch a config may ask for: sizes read from a file are checked before
# anything is allocated.
MAX_BATCH_SIZE = 65536

# Keys that change neither the maths nor the data order: a run may resume with other values.
_NOT_HASHED = ("checkpoint", "log_every", "progress", "output_dir")


@dataclass
class ModelConfig:
    """``recipe``: a catalogue model; ``overrides``: merged into its configuration;
    ``warm_start``: modality -> a saved mmenc model whose tower starts that modality;
    ``freeze``: parameter-name prefixes that are not trained (e.g. ``towers.text``)."""

    recipe: str
    overrides: dict[str, Any] = field(default_factory=dict)
    warm_start: dict[str, str] = field(default_factory=dict)
    freeze: list[str] = field(default_factory=list)


@dataclass
class ObjectiveConfig:
    """One weighted objective on one or two modalities; ``config`` goes to the objective."""

    name: str
    modalities: list[str]
    weight: float = 1.0
    config: dict[str, Any] = field(default_factory=dict)
    label: str | None = None


@dataclass
class DataConfig:
    """A JSONL manifest (``train``) or webdataset shards (``shards``)."""

    train: str | None = None
    shards: str | None = None
    modalities: list[str] = field(default_factory=list)
    extensions: dict[str, str] = field(default_factory=dict)
    num_workers: int = 0


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then a cosine decay to ``min_lr``."""

    lr: float = 5e-4
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 0
    min_lr: float = 0.0
    grad_clip: float | None = 1.0


@dataclass
class CheckpointConfig:
    """Write a checkpoint every ``every`` steps (and at the end); keep the last ``keep``."""

    every: int = 1000
    keep: int = 2


@dataclass
class TrainConfig:
    """A whole run. ``batch_size`` is the global batch, split evenly over the ranks."""

    model: ModelConfig
    objectives: list[ObjectiveConfig]
    data: DataConfig
    batch_size: int
    steps: int
    output_dir: str
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log_every: int = 10
    device: str = "auto"
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A hash of everything that decides the weights; resuming checks it."""
        data = {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED}
        data["data"].pop("num_workers")  # threads change the speed, not the batches
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# -- reading ----------------------------------------------------------------------------------
def read_mapping(source: str | Path | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(where, mapping)`` of a YAML file or a mapping (``where``: the file name, or
    ``<config>``), for error messages that name their source.

    Raises:
        ConfigError: an unreadable file, invalid YAML, or not a mapping at the top level.
    """
    if isinstance(source, dict):
        where, data = "<config>", source
    else:
        import yaml

        path = Path(source)
        where = path.name
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a YAML config (not UTF-8 text)") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys at the top level")
    return where, data


def load_config(source: str | Path | dict[str, Any] | TrainConfig) -> TrainConfig:
    """A checked :class:`TrainConfig` from a YAML file, a mapping or a config.

    Raises:
        ConfigError: naming the file (``<config>`` for a mapping) and the key path.
    """
    if isinstance(source, TrainConfig):
        source = source.to_dict()
    where, data = read_mapping(source)
    config: TrainConfig = _build(TrainConfig, data, "", where)
    _check(config, where)
    return config


def _build(cls: type, data: Any, path: str, where: str) -> Any:
    """Instantiate dataclass ``cls`` from ``data``, checking every key and type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {path or 'config'}: expected a mapping, got {data!r}")
    return read_dataclass(cls, data, path, where)


# -- meaning ----------------------------------------------------------------------------------
def _check_optim(optim: OptimConfig, fail: Any) -> None:
    """Ranges of the optimiser's numbers (finiteness is checked when they are read)."""
    for key in ("lr", "weight_decay", "min_lr"):
        if getattr(optim, key) < 0:
            raise fail(f"optim.{key}", f"must not be negative, got {getattr(optim, key)}")
    if optim.min_lr > optim.lr:
        raise fail("optim.min_lr", f"{optim.min_lr} is above optim.lr {optim.lr}")
    if optim.eps <= 0:
        raise fail("optim.eps", f"must be positive, got {optim.eps}")
    if not all(0 <= b < 1 for b in optim.betas):
        raise fail("optim.betas", f"each must be in [0, 1), got {optim.betas}")
    if optim.warmup_steps < 0:
        raise fail("optim.warmup_steps", f"must not be negative, got {optim.warmup_steps}")
    if optim.grad_clip is not None and optim.grad_clip <= 0:
        raise fail("optim.grad_clip", f"must be positive (or null), got {optim.grad_clip}")


def _check_overrides(overrides: dict[str, Any], spec: Any, fail: Any) -> None:
    """Each override that replaces a default has the default's type and, for a number
    whose default is not negative (sizes, rates), is not negative either. Keys the recipe
    does not know are reported when the model is built, which knows every key it reads."""
    try:
        defaults = spec.default_config()
    except Exception:  # noqa: BLE001 - a recipe whose defaults fail is reported when built
        return

    def walk(values: dict[str, Any], base: Any, path: str) -> None:
        for key, value in values.items():
            here = f"{path}.{key}"
            default = base.get(key) if isinstance(base, dict) else None
            if isinstance(value, dict):
                if default is not None and not isinstance(default, dict):
                    raise fail(here, f"expected {type(default).__name__}, got a mapping")
                walk(value, default, here)
                continue
            if default is None or value is None:  # null: the recipe's "none" (no projection...)
                continue
            if isinstance(default, dict):
                raise fail(here, f"expected a mapping, got {value!r}")
            if isinstance(default, bool) or isinstance(value, bool):
                if type(value) is not type(default):
                    raise fail(here, f"expected {type(default).__name__}, got {value!r}")
            elif isinstance(default, int | float):
                if not isinstance(value, int | float) or (
                        isinstance(default, int) and not isinstance(value, int)):
                    raise fail(here, f"expected {type(default).__name__}, got {value!r}")
                if not math.isfinite(value):
                    raise fail(here, f"expected a finite number, got {value!r}")
                if default >= 0 > value:
                    raise fail(here, f"must not be negative, got {value}")
            elif isinstance(default, str | list) and not isinstance(value, type(default)):
                raise fail(here, f"expected {type(default).__name__}, got {value!r}")

    walk(overrides, defaults, "model.overrides")


def _check(config: TrainConfig, where: str) -> None:
    """Checks that need more than one key or the catalogue."""
    from mmenc.objectives.protocol import objective_class
    from mmenc.registry import catalogue

    def fail(path: str, message: str) -> ConfigError:
        return ConfigError(f"{where}: {path}: {message}")

    cat = catalogue()
    try:
        spec = cat.get("model", config.model.recipe)
    except UnknownNameError as exc:
        raise fail("model.recipe", str(exc)) from None
    for key, value in (("batch_size", config.batch_size), ("steps", config.steps),
                       ("log_every", config.log_every),
                       ("checkpoint.every", config.checkpoint.every),
                       ("checkpoint.keep", config.checkpoint.keep)):
        if value < 1:
            raise fail(key, f"must be at least 1, got {value}")
    if config.batch_size > MAX_BATCH_SIZE:
        raise fail("batch_size", f"{config.batch_size} is more than {MAX_BATCH_SIZE}")
    if config.data.num_workers < 0:
        raise fail("data.num_workers", "must not be negative")
    if len(config.optim.betas) != 2:
        raise fail("optim.betas", f"expected two numbers, got {config.optim.betas}")
    _check_optim(config.optim, fail)
    _check_overrides(config.model.overrides, spec, fail)
    if config.device not in ("auto", "cpu", "cuda"):
        raise fail("device", f"expected auto, cpu or cuda, got {config.device!r}")
    if (config.data.train is None) == (config.data.shards is None):
        raise fail("data", "give exactly one of 'train' (a JSONL manifest) and 'shards'")
    if not config.objectives:
        raise fail("objectives", "at least one objective is needed")
    for m in config.model.warm_start:
        if m not in spec.modalities:
            raise fail(f"model.warm_start.{m}",
                       f"recipe {spec.name!r} has no such modality ({', '.join(spec.modalities)})")
    used: list[str] = []
    labels: set[str] = set()
    for i, obj in enumerate(config.objectives):
        path = f"objectives[{i}]"
        if obj.weight < 0:
            raise fail(f"{path}.weight", f"must not be negative, got {obj.weight}")
        try:
            cls = objective_class(obj.name, cat)
        except ConfigError as exc:
            raise fail(f"{path}.name", str(exc)) from None
        arity = cls.arity
        if len(obj.modalities) != arity:
            raise fail(f"{path}.modalities",
                       f"{obj.name} needs {arity} modalit{'y' if arity == 1 else 'ies'}, "
                       f"got {obj.modalities}")
        for m in obj.modalities:
            if m not in spec.modalities:
                raise fail(f"{path}.modalities", f"recipe {spec.name!r} does not encode {m!r} "
                           f"({', '.join(spec.modalities)})")
            used.append(m)
        allowed = sorted(cls.params)
        for key in obj.config:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise fail(f"{path}.config.{key}", f"unknown option of {obj.name}{hint} "
                           f"(known: {', '.join(allowed) or 'none'})")
        label = obj.label or obj.name
        if label in labels:
            raise fail(f"{path}.label", f"two objectives are called {label!r}: give each a label")
        labels.add(label)
    if not config.data.modalities:
        config.data.modalities = sorted(set(used))
    for m in used:
        if m not in config.data.modalities:
            raise fail("data.modalities", f"an objective uses {m!r}, which is not listed")
