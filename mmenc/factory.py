"""Building models from the catalogue and importing foreign checkpoints.

``create_model`` takes the forms timm and open_clip users type: a recipe name with keyword
overrides, ``pretrained=PATH`` (a ``.safetensors`` file or an mmenc folder of that recipe) and
``"local-dir:PATH"``. An override the recipe does not know is an error with close matches,
never a silent extra entry in the saved configuration.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

from mmenc.batch import Tokenizer
from mmenc.errors import CheckpointError, ConfigError, MmencError, PluginError
from mmenc.model import Encoder
from mmenc.registry import catalogue
from mmenc.specs import resolve
from mmenc.trust import check_sizes

LOCAL_DIR = "local-dir:"


def merge_config(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, nested dicts key by key."""
    out = deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = deepcopy(value)
    return out


# -- which overrides a recipe knows ------------------------------------------------------------
class _ReadLog(dict[str, Any]):
    """A config dict that records the keys a builder looks up (``get``, ``[]``, ``in``).

    Builders read optional settings with ``config.get(...)``; a key that is neither in the
    recipe's defaults nor looked up while building (nor named in a lookup of the builder's
    module, for options read while the model runs) is one the recipe does not know. Copies
    made with ``dict(...)`` are not followed, but nested dicts stay logged (they are shared).
    """

    def __init__(self, data: dict[str, Any], log: set[tuple[str, ...]],
                 where: tuple[str, ...] = ()) -> None:
        super().__init__({k: _ReadLog(v, log, (*where, k)) if type(v) is dict else v
                          for k, v in data.items()})
        self._log, self._where = log, where

    def _saw(self, key: object) -> None:
        if isinstance(key, str):
            self._log.add((*self._where, key))

    def __getitem__(self, key: str) -> Any:
        self._saw(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._saw(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._saw(key)
        return super().__contains__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self._saw(key)
        return super().pop(key, *default)

    def items(self) -> Any:  # iterating a section consumes every key of it
        for key in self:
            self._saw(key)
        return super().items()

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return {k: deepcopy(v, memo) for k, v in dict.items(self)}

    def declare(self, keys: list[str]) -> None:
        """This section is read as a dataclass (:func:`mmenc.recipe_config.read_dataclass`):
        its fields ``keys`` are all the keys it knows."""
        self._log.add((*self._where, _TYPED))
        for key in keys:
            self._saw(key)


# logged under a section read as a dataclass, whose fields are then all it knows
_TYPED = "<typed>"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in dict.items(value)}
    return value


def _leaves(override: dict[str, Any], where: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in override.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*where, key))
        else:
            yield (*where, key)


def _unknown(path: tuple[str, ...], defaults: dict[str, Any],
             read: set[tuple[str, ...]]) -> tuple[tuple[str, ...], list[str]] | None:
    """The first part of ``path`` the recipe does not know and the keys known there, or None."""
    level: Any = defaults
    for depth in range(len(path)):
        prefix = path[: depth + 1]
        if isinstance(level, dict) and path[depth] in level:
            level = level[path[depth]]
            continue
        if prefix in read:
            return None
        known = set(level) if isinstance(level, dict) else set()
        known |= {p[depth] for p in read if len(p) == depth + 1 and p[:depth] == path[:depth]}
        return prefix, sorted(known - {_TYPED})
    return None


_LOOKUP = re.compile(r"""(?:\.get\(|\[)\s*["']([A-Za-z_]\w*)["']""")


def _looked_up_by(builder: Any) -> set[tuple[str, ...]]:
    """Top-level names the builder's module looks up by literal (``cfg.get("temp")``): options
    a model reads while it runs (a training step) rather than while it is built. Not needed
    for a recipe whose configuration is a dataclass: its fields are its options."""
    module = inspect.getmodule(builder)
    try:
        source = inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        return set()
    return {(key,) for key in _LOOKUP.findall(source)}


def _check_overrides(name: str, defaults: dict[str, Any], overrides: dict[str, Any],
                     read: set[tuple[str, ...]], typos_only: bool = False) -> None:
    """Raise :class:`ConfigError` for the first override the recipe does not know.

    A top-level key must be known. Deeper sections are often copied before they are read (a
    tokenizer's options), so there an unknown key is an error only when it is close to a known
    one (a typo); so is every key when ``typos_only`` (the build failed, maybe before reading
    it).
    """
    for leaf in _leaves(overrides):
        found = _unknown(leaf, defaults, read)
        if found is None:
            continue
        prefix, known = found
        key = prefix[-1]
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        if not close and (typos_only or len(prefix) > 1):
            continue
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        dotted = ".".join(prefix)
        raise ConfigError(f"create_model({name!r}): unknown option {dotted!r}{hint} "
                          f"(valid here: {', '.join(known) or 'none'})")


# what a builder raises when a configuration does not fit its recipe
_CONFIG_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError)


def call_plugin(kind: str, name: str, target: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any], *, returns: type | None = None,
                config_error: type[MmencError] | None = None, where: str = "") -> Any:
    """``target(*args, **kwargs)`` for the ``kind`` ``name`` of the catalogue (a model's
    builder, a converter), with every failure typed.

    mmenc's own errors pass through; with ``config_error``, the errors of a configuration that
    does not fit (:data:`_CONFIG_ERRORS`) become that error, prefixed by ``where``; anything
    else a plugin's code raises (``SystemExit`` included), a target that is not callable and a
    result that is not a ``returns`` become a :class:`PluginError` naming the plugin, the entry
    and the reason.
    """
    entry = catalogue().entry(kind, name)
    label = "recipe" if kind == "model" else kind
    owner = f"plugin {entry.plugin.name!r}: {label} {name!r}"
    if not callable(target):
        raise PluginError(f"{owner}: its target is {type(target).__name__} {target!r:.40}, "
                          "not a callable")
    try:
        result = target(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a plugin's code may raise anything
        if isinstance(exc, MmencError):
            raise
        if config_error is not None and isinstance(exc, _CONFIG_ERRORS):
            raise config_error(f"{where}: config does not fit {label} {name!r} "
                               f"({type(exc).__name__}: {exc})") from None
        raise PluginError(f"{owner}: failed ({type(exc).__name__}: {exc})") from exc
    if returns is not None and not isinstance(result, returns):
        raise PluginError(f"{owner}: returned {type(result).__name__}, not an "
                          f"{returns.__module__}.{returns.__name__}")
    return result


def _build(name: str, overrides: dict[str, Any]) -> Encoder:
    spec = catalogue().get("model", name)
    defaults = spec.default_config()
    # overrides may come from a file (a pretrain YAML): no size goes unchecked to a builder
    where = f"create_model({name!r})"
    check_sizes(merge_config(defaults, overrides), where, ConfigError)
    builder = resolve(spec.builder)
    read: set[tuple[str, ...]] = set()
    config = _ReadLog(merge_config(defaults, overrides), read)

    def known_options() -> set[tuple[str, ...]]:
        if overrides and (_TYPED,) not in read:  # a builder that reads plain dicts
            read.update(_looked_up_by(builder))
        return read

    try:
        # without overrides the configuration is the plugin's own: its failure is the plugin's
        model: Encoder = call_plugin("model", spec.name, builder, (config,),
                                     {"directory": None}, returns=Encoder,
                                     config_error=ConfigError if overrides else None,
                                     where=where)
    except MmencError as exc:
        # a misspelt nested key often breaks the build first: name it rather than the symptom
        _check_overrides(name, defaults, overrides, known_options(), typos_only=True)
        if isinstance(exc, ConfigError) and not str(exc).startswith(where):
            raise ConfigError(f"{where}: {exc}") from None  # a typed config's reader
        raise
    _check_overrides(name, defaults, overrides, known_options())
    model.recipe = spec.name
    model.config = _plain(model.config)
    return model


# -- the entry points --------------------------------------------------------------------------
def create_model(name: str, pretrained: bool | str | Path | None = None,
                 **overrides: Any) -> Encoder:
    """A model of the recipe ``name``, randomly initialised unless ``pretrained`` says where its
    weights are.

    Args:
        name: a recipe of the catalogue (``mmenc models``), or ``"local-dir:PATH"`` for a model
            saved by :meth:`mmenc.Encoder.save_pretrained` (as :func:`mmenc.load`).
        pretrained: None/False for random weights; a ``.safetensors`` file of this recipe
            (with the same overrides it was trained with) or an mmenc model folder whose
            recipe is ``name``. mmenc has no model hub: ``True`` or a tag is an error that says
            how to get weights (``mmenc convert``).
        overrides: entries of the recipe's default configuration to change, nested dicts key
            by key; a key the recipe does not know is a :class:`~mmenc.errors.ConfigError`.
    """
    if name.startswith(LOCAL_DIR):
        if overrides:
            raise ConfigError(f"create_model({name!r}): a saved model keeps its own "
                              f"configuration; drop {', '.join(sorted(overrides))}")
        from mmenc.model import load

        return load(name[len(LOCAL_DIR):])
    if name not in catalogue().names("model") and (Path(name) / "config.json").is_file():
        raise ConfigError(f"create_model({name!r}): {name} is a saved model folder; load it "
                          f"with mmenc.load({name!r}) (or create_model('local-dir:{name}'))")
    if pretrained is None or pretrained is False:
        return _build(name, overrides)
    return _pretrained(name, pretrained, overrides)


def _pretrained(name: str, pretrained: bool | str | Path,
                overrides: dict[str, Any]) -> Encoder:
    from mmenc.model import _load_with_ties, load, read_config

    spec = catalogue().get("model", name)  # an unknown recipe is reported first
    path = Path(pretrained) if not isinstance(pretrained, bool) else None
    if path is None or (not path.exists() and path.suffix != ".safetensors"
                        and len(path.parts) == 1):
        tag = "" if path is None else f" {str(pretrained)!r}"
        raise CheckpointError(
            f"create_model({name!r}, pretrained={pretrained!r}): no pretrained weights{tag} are "
            "available; mmenc has no model hub. Import official weights with `mmenc convert` "
            "and pass the folder (pretrained=PATH), or load it with mmenc.load(PATH)")
    if path.is_dir():
        recipe = read_config(path)["recipe"]
        if recipe != spec.name:
            raise CheckpointError(f"{path}: holds a {recipe!r} model, not {spec.name!r}; "
                                  f"load it with mmenc.load({str(path)!r})")
        if overrides:
            raise ConfigError(f"create_model({name!r}, pretrained={str(path)!r}): a saved model "
                              f"keeps its own configuration; drop {', '.join(sorted(overrides))}")
        return load(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or folder (pretrained= takes a "
                              ".safetensors file or an mmenc model folder)")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model = _build(name, overrides)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    _load_with_ties(model, state, str(path))
    return model


def list_models(pattern: str | None = None, modality: str | None = None) -> list[str]:
    """Recipe names, sorted (timm's and open_clip's ``list_models``).

    Args:
        pattern: an fnmatch pattern (``"clip-*"``, ``"*-tiny"``); None lists every recipe.
        modality: only recipes that encode this modality.
    """
    return [entry.spec.name for entry in catalogue().models(pattern, modality)]


def get_tokenizer(name_or_model: str | Path | Encoder,
                  modality: str | None = None) -> Tokenizer:
    """The tokenizer of a model, a saved model folder or a recipe (open_clip's spelling).

    Args:
        name_or_model: an :class:`~mmenc.Encoder`, an mmenc model folder, ``"local-dir:PATH"``
            or a recipe name (its tokenizers are built without building the model).
        modality: which tokenizer; by default the model's only one, or ``"text"`` when the model
            has a text tokenizer among several (as open_clip's ``get_tokenizer``).
    """
    tokenizers = _tokenizers(name_or_model)
    label = getattr(name_or_model, "recipe", str(name_or_model))
    if modality is None:
        if len(tokenizers) == 1:
            return next(iter(tokenizers.values()))
        if "text" in tokenizers:
            return tokenizers["text"]
        raise ConfigError(f"{label} has tokenizers for {', '.join(tokenizers)}: pass "
                          "get_tokenizer(name, modality=...)")
    if modality not in tokenizers:
        from mmenc.errors import UnknownNameError

        raise UnknownNameError(f"modality of {label}", modality, tokenizers)
    return tokenizers[modality]


def _tokenizers(name_or_model: str | Path | Encoder) -> dict[str, Tokenizer]:
    if isinstance(name_or_model, Encoder):
        return dict(name_or_model.tokenizers)
    name = str(name_or_model)
    if name.startswith(LOCAL_DIR) or (name not in catalogue().names("model")
                                      and Path(name).is_dir()):
        from mmenc.model import load

        return dict(load(name.removeprefix(LOCAL_DIR)).tokenizers)
    configs = catalogue().get("model", name).default_config().get("tokenizers")
    if isinstance(configs, dict) and configs:
        from mmenc.builtin.towers import build_tokenizers

        return build_tokenizers(configs)
    return dict(_build(name, {}).tokenizers)


def convert(fmt: str, src: str | Path, out_dir: str | Path | None = None,
            **options: Any) -> Encoder:
    """Import a checkpoint in format ``fmt`` (see ``mmenc convert --list``).

    The converted model is returned and, when ``out_dir`` is given, saved there in mmenc's
    format.
    """
    spec = catalogue().get("converter", fmt)
    model: Encoder = call_plugin("converter", fmt, resolve(spec.target), (Path(src),),
                                 options, returns=Encoder, config_error=CheckpointError,
                                 where=str(src))
    if out_dir is not None:
        model.save_pretrained(out_dir)
    return model
