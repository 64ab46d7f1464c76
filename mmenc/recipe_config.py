"""Typed configurations: frozen dataclasses read from the mappings of config files.

A recipe's configuration is stored as a nested dict (``config.json`` of a model folder, a
recipe's defaults, a pretrain YAML). A family of recipes declares what that dict may hold as a
frozen dataclass, like :class:`mmenc.nn.TrunkConfig`, and reads it with
:meth:`RecipeConfig.read` before it builds anything::

    @dataclass(frozen=True)
    class MyConfig(RecipeConfig):
        towers: dict[str, dict[str, Any]]   # sections other readers check keep their dicts
        embed_dim: int
        mask_token_id: int = 103            # every default written once, here

    settings = MyConfig.read(config)        # ConfigError naming the key, or the typed view

An unknown key is a :class:`~mmenc.errors.ConfigError` naming its key path and the closest
known keys; so is a value of the wrong type, a missing required key, and a size outside the
bounds of :func:`mmenc.trust.check_sizes`. :meth:`RecipeConfig.to_dict` gives the mapping back
(tuples as lists, as JSON stores them): the dicts stay the format on disk.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

from mmenc.errors import ConfigError

C = TypeVar("C", bound="RecipeConfig")


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def check_keys(data: Any, known: list[str], path: str, where: str) -> None:
    """Every key of the mapping ``data`` (at key path ``path``, ending with ``.`` or empty)
    is one of ``known``; else a :class:`ConfigError` with the closest known keys. Every
    config reader (pretraining, recipes, plugins' own configs) reports unknown keys this way."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{_at(where)}{path.rstrip('.') or 'config'}: expected a mapping, "
                          f"got {data!r:.60}")
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"{_at(where)}{path}{key}: unknown key{hint} "
                              f"(known: {', '.join(known)})")


def read_dataclass(cls: type, data: Any, path: str, where: str) -> Any:
    """Instantiate dataclass ``cls`` from the mapping ``data``, checking every key and type.

    ``path`` is the key path of ``data`` (ending with ``.``, or empty at the top) and
    ``where`` the file or call it came from; both start every error message. A failing
    ``__post_init__`` (a ``ValueError``) becomes a :class:`ConfigError` at ``path``.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    declare = getattr(data, "declare", None)  # mmenc.create_model's log of the keys read
    if callable(declare):
        declare(list(fields))
    check_keys(data, list(fields), path, where)
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = convert_value(hints[name], data[name], f"{path}{name}", where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_at(where)}{path}{name}: required key is missing")
    try:
        return cls(**values)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{_at(where)}{path.rstrip('.') or 'config'}: {exc}") from None


def convert_value(hint: Any, value: Any, path: str, where: str) -> Any:
    """``value`` checked against the type ``hint`` (bool, int, float, str, Literal, Optional,
    tuple, list, dict, a dataclass or Any): ints stay ints, a float accepts an int, a tuple
    accepts a list; anything else is a :class:`ConfigError` naming ``path``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert_value(inner[0], value, path, where)
    if dataclasses.is_dataclass(hint):
        return read_dataclass(hint, value, f"{path}.", where)  # type: ignore[arg-type]
    if origin is typing.Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise ConfigError(f"{_at(where)}{path}: expected one of "
                              f"{', '.join(map(repr, args))}, got {value!r:.60}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{_at(where)}{path}: expected a list, got {value!r:.60}")
        item = args[0] if args else Any
        items = [convert_value(item, v, f"{path}[{i}]", where) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{_at(where)}{path}: expected a mapping, got {value!r:.60}")
        if args[1] is Any:  # a section another reader checks: passed on as it is
            return value
        return {str(k): convert_value(args[1], v, f"{path}.{k}", where) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_at(where)}{path}: expected true or false, got {value!r:.60}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{_at(where)}{path}: expected an integer, got {value!r:.60}")
        return value
    if hint is float:
        # YAML 1.1 reads `1e-3` (no dot) as a string; accept any spelling float() accepts
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{_at(where)}{path}: expected a number, got {value!r:.60}")
        if not math.isfinite(value):
            raise ConfigError(f"{_at(where)}{path}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{_at(where)}{path}: expected a string, got {value!r:.60}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")


def _plain(value: Any) -> Any:
    """JSON's shapes: dataclasses as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _entries(value: Any) -> Any:
    """A plain copy of nested mappings, read without the mappings' own ``items`` (a logging
    mapping records what a builder reads; checking sizes reads nothing for it)."""
    if isinstance(value, dict):
        return {k: _entries(v) for k, v in dict.items(value)}
    if isinstance(value, Mapping):
        return {k: _entries(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_entries(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """Base of the typed configuration of a family of recipes (see the module docstring).

    Sections that another reader checks (``towers`` read by each tower kind, ``tokenizers``
    by each tokenizer) are declared ``dict[str, dict[str, Any]]``: they are checked to be
    mappings of mappings and passed on as they are.
    """

    @classmethod
    def read(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
        """The typed configuration of ``data``, read from ``where`` (a file; a builder leaves
        it empty: its caller, :func:`mmenc.load` or :func:`mmenc.create_model`, adds the
        file or the recipe to the message).

        Raises:
            ConfigError: naming ``where`` and the key path (``config.fusion.depht: unknown
                key; did you mean 'depth'?``) of an unknown key, a value of the wrong type, a
                missing required key or a size out of its bounds.
        """
        from mmenc.trust import check_sizes

        check_sizes(_entries(data), where or "config", ConfigError)
        return typing.cast(C, read_dataclass(cls, data, "config.", where))

    def to_dict(self) -> dict[str, Any]:
        """The mapping of every field (nested dataclasses as dicts, tuples as lists), which
        :meth:`read` reads back to an equal configuration."""
        return typing.cast(dict[str, Any], _plain(self))
