"""The catalogue: every registered modality, tokenizer, fusion, objective, model recipe,
converter, parity mapping and command, with the plugin that registered it.

Built on first use (:func:`catalogue`), never at import. A name registered twice is an error
naming both plugins: the later plugin is marked failed and none of its registrations are kept
(strict mode raises instead).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mmenc.errors import PluginError, UnknownNameError
from mmenc.plugins import PluginRecord, PluginSource, load_plugins
from mmenc.specs import SPEC_KINDS, ModelSpec, ParitySpec, spec_key

_KIND_OF = {cls: kind for kind, cls in SPEC_KINDS.items()}


@dataclass(frozen=True)
class Entry:
    """A registered spec and where it came from."""

    spec: Any
    plugin: PluginRecord


class Catalogue:
    """Registered specs by kind and name, with provenance."""

    def __init__(self, results: Iterable[tuple[PluginRecord, list[Any]]],
                 strict: bool = False) -> None:
        self.plugins: dict[str, PluginRecord] = {}
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in SPEC_KINDS}
        for record, specs in results:
            if record.name in self.plugins:
                first = self.plugins[record.name]
                record.status = "error"
                record.error = (f"plugin name {record.name!r} of {record.distribution} is already "
                                f"used by {first.distribution} {first.version}")
                self.plugins[f"{record.name} ({record.distribution})"] = record
                continue
            self.plugins[record.name] = record
            clash = self._first_clash(record, specs)
            if clash is not None:
                if strict:
                    raise PluginError(clash)
                record.status, record.error, record.registered = "error", clash, {}
                continue
            for spec in specs:
                self._entries[_KIND_OF[type(spec)]][spec_key(spec)] = Entry(spec, record)

    def _first_clash(self, record: PluginRecord, specs: list[Any]) -> str | None:
        seen: set[tuple[str, str]] = set()
        for spec in specs:
            kind, key = _KIND_OF[type(spec)], spec_key(spec)
            if (kind, key) in seen:
                return f"{kind} {key!r} is registered twice by plugin {record.name!r}"
            seen.add((kind, key))
            other = self._entries[kind].get(key)
            if other is not None:
                return (
                    f"{kind} {key!r} is registered by plugin {other.plugin.name!r} "
                    f"({other.plugin.distribution} {other.plugin.version}) and again by plugin "
                    f"{record.name!r} ({record.distribution} {record.version})"
                )
        return None

    # -- lookup --------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[kind])

    def entries(self, kind: str) -> list[Entry]:
        return [self._entries[kind][n] for n in self.names(kind)]

    def entry(self, kind: str, name: str) -> Entry:
        try:
            return self._entries[kind][name]
        except KeyError:
            error = UnknownNameError(kind, name, self._entries[kind])
            failed = self.failed_plugin_for(name)
            if failed is not None:  # the close matches of the plugins that loaded mislead
                error.args = (f"unknown {kind} {name!r}; plugin {failed!r} failed to load "
                              "(see `mmenc plugins`)",)
            raise error from None

    def failed_plugin_for(self, name: str) -> str | None:
        """The failed plugin that may have registered ``name``: one whose name (or
        distribution name) starts ``name``, or None."""
        for record in self.plugins.values():
            if record.status != "error":
                continue
            stems = {record.name, record.distribution.removeprefix("mmenc-")}
            if any(name == s or name.startswith((f"{s}-", f"{s}_")) for s in stems if s):
                return record.name
        return None

    def get(self, kind: str, name: str) -> Any:
        """The spec registered as ``name`` (close matches are listed when it is unknown)."""
        return self.entry(kind, name).spec

    def plugin(self, name: str) -> PluginRecord:
        try:
            return self.plugins[name]
        except KeyError:
            raise UnknownNameError("plugin", name, self.plugins) from None

    def models(self, pattern: str | None = None, modality: str | None = None) -> list[Entry]:
        """Model recipes whose name matches an fnmatch ``pattern`` and that encode ``modality``."""
        out = []
        for entry in self.entries("model"):
            spec: ModelSpec = entry.spec
            if pattern and not fnmatch.fnmatchcase(spec.name, pattern):
                continue
            if modality and modality not in spec.modalities:
                continue
            out.append(entry)
        return out

    def parity_for(self, system: str, kind: str | None) -> ParitySpec:
        """The parity mapping for a fixture's ``system`` (and ``kind``)."""
        table = self._entries["parity"]
        for key in ([f"{system}/{kind}"] if kind else []) + [system]:
            if key in table:
                return table[key].spec  # type: ignore[no-any-return]
        raise UnknownNameError("parity system", system if not kind else f"{system}/{kind}", table)


def build_catalogue(
    env: Mapping[str, str] | None = None, sources: Iterable[PluginSource] | None = None
) -> Catalogue:
    """A new catalogue from the built-ins, the installed entry points and ``sources``."""
    env = os.environ if env is None else env
    strict = env.get("MMENC_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}
    return Catalogue(load_plugins(env, sources), strict=strict)


_CACHE: dict[str, Catalogue] = {}


def catalogue(refresh: bool = False) -> Catalogue:
    """The process's catalogue, built from ``os.environ`` on first use."""
    if refresh or "default" not in _CACHE:
        _CACHE["default"] = build_catalogue()
    return _CACHE["default"]


def owner_of(target: str) -> str | None:
    """The plugin that registered a spec pointing at ``target`` in the process's catalogue,
    or None (no catalogue built yet, or no spec holds it). Only called to name the plugin in
    an error: it never builds the catalogue."""
    cat = _CACHE.get("default")
    if cat is None:
        return None
    for kind in SPEC_KINDS:
        for entry in cat.entries(kind):
            if target in vars(entry.spec).values():
                return entry.plugin.name
    return None
