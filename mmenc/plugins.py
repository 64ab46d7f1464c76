"""Loading plugins one at a time, so that one broken plugin never stops the others.

pluggy stops a hook loop at the first implementation that raises, and its entry-point loader
stops at the first plugin that fails to import; mmenc therefore imports each plugin and calls
each of its hooks itself, and keeps a plugin's registrations only when all of them succeeded.

Environment:
    MMENC_PLUGINS=a,b              load only these entry-point plugins (empty: none of them)
    MMENC_DISABLE_PLUGIN_AUTOLOAD=1  load no entry-point plugin (built-ins still load)
    MMENC_STRICT_PLUGINS=1          re-raise the first plugin error with its original traceback
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from mmenc import hookspecs
from mmenc.errors import PluginError, SpecError
from mmenc.specs import SPEC_KINDS, ConverterSpec, ModelSpec, ParitySpec, spec_key

ENTRY_POINT_GROUP = "mmenc"
BUILTIN = "mmenc"

_ACCEPTS: dict[str, tuple[type, ...]] = {
    "mmenc_register_modalities": (SPEC_KINDS["modality"],),
    "mmenc_register_tokenizers": (SPEC_KINDS["tokenizer"], SPEC_KINDS["cleaner"]),
    "mmenc_register_fusions": (SPEC_KINDS["fusion"],),
    "mmenc_register_towers": (SPEC_KINDS["tower"],),
    "mmenc_register_objectives": (SPEC_KINDS["objective"],),
    "mmenc_register_models": (ModelSpec, ConverterSpec, ParitySpec),
    "mmenc_register_commands": (SPEC_KINDS["command"],),
}
_KIND_OF = {cls: kind for kind, cls in SPEC_KINDS.items()}


@dataclass
class PluginRecord:
    """What ``mmenc plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    status: str = "ok"  # ok | error | disabled
    error: str | None = None
    traceback: str | None = None
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "status": self.status,
            "error": self.error,
            "hooks": self.hooks,
            "registered": self.registered,
        }


@dataclass(frozen=True)
class PluginSource:
    """A plugin to load: either an entry point or an already imported module."""

    name: str
    distribution: str
    version: str
    entry_point: metadata.EntryPoint | None = None
    module: ModuleType | None = None

    def load(self) -> ModuleType:
        if self.module is not None:
            return self.module
        assert self.entry_point is not None
        return self.entry_point.load()  # type: ignore[no-any-return]


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def builtin_source() -> PluginSource:
    from mmenc import __version__
    from mmenc.builtin import plugin

    return PluginSource(BUILTIN, "mmenc", __version__, module=plugin)


def entry_point_sources(env: Mapping[str, str]) -> tuple[list[PluginSource], list[PluginRecord]]:
    """Entry-point plugins to load, and records for the ones the environment switched off."""
    if _flag(env, "MMENC_DISABLE_PLUGIN_AUTOLOAD"):
        return [], []
    allow: set[str] | None = None
    if "MMENC_PLUGINS" in env:
        allow = {p.strip() for p in env["MMENC_PLUGINS"].split(",") if p.strip()}
    sources, disabled = [], []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "?"
        version = dist.version if dist is not None else "?"
        if allow is not None and ep.name not in allow and dist_name not in allow:
            disabled.append(
                PluginRecord(ep.name, dist_name, version, ep.value, status="disabled",
                             error="not in MMENC_PLUGINS")
            )
            continue
        sources.append(PluginSource(ep.name, dist_name, version, entry_point=ep))
    return sources, disabled


class PluginLoader:
    """Imports plugins and collects their registrations, isolating each plugin."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)

    def load(self, source: PluginSource) -> tuple[PluginRecord, list[Any]]:
        """Load one plugin; returns its record and, when it is healthy, its specs."""
        record = PluginRecord(source.name, source.distribution, source.version, "?")
        if source.entry_point is not None:
            record.module = source.entry_point.value
        try:
            module = source.load()
            record.module = module.__name__
            self._check_hook_names(module)
            self.pm.register(module, name=source.name)
            specs = self._collect(source.name, record)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, SystemExit too
            if self.strict:
                raise
            record.status = "error"
            record.error = f"{type(exc).__name__}: {exc}"
            record.traceback = traceback.format_exc()
            return record, []
        return record, specs

    def _check_hook_names(self, module: ModuleType) -> None:
        unknown = [
            n for n in dir(module)
            if n.startswith("mmenc_") and callable(getattr(module, n)) and n not in _ACCEPTS
        ]
        if unknown:
            raise PluginError(f"unknown hook(s) {', '.join(unknown)}; known: {', '.join(_ACCEPTS)}")

    def _collect(self, name: str, record: PluginRecord) -> list[Any]:
        plugin = self.pm.get_plugin(name)
        specs: list[Any] = []
        for hook_name, accepts in _ACCEPTS.items():
            caller = getattr(self.pm.hook, hook_name)
            impls = [i for i in caller.get_hookimpls() if i.plugin is plugin]
            if not impls:
                continue
            record.hooks.append(hook_name)

            def register(spec: Any, _hook: str = hook_name,
                         _accepts: tuple[Any, ...] = accepts) -> None:
                if not isinstance(spec, _accepts):
                    wanted = " or ".join(c.__name__ for c in _accepts)
                    raise SpecError(f"{_hook} registered {spec!r}; expected a {wanted}")
                specs.append(spec)

            for impl in impls:
                impl.function(register=register)
        for spec in specs:
            record.registered.setdefault(_KIND_OF[type(spec)], []).append(spec_key(spec))
        return specs


def load_plugins(
    env: Mapping[str, str] | None = None,
    sources: Iterable[PluginSource] | None = None,
) -> list[tuple[PluginRecord, list[Any]]]:
    """Load the built-in plugin and the entry-point plugins the environment allows.

    Args:
        env: environment to read switches from (default ``os.environ``).
        sources: extra plugin sources (modules) loaded after the entry points, for tests and
            for applications that register plugins in code.
    """
    env = os.environ if env is None else env
    loader = PluginLoader(strict=_flag(env, "MMENC_STRICT_PLUGINS"))
    found, disabled = entry_point_sources(env)
    results = [loader.load(builtin_source())]
    for source in [*found, *(sources or [])]:
        results.append(loader.load(source))
    results.extend((record, []) for record in disabled)
    return results
