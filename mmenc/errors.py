"""Errors that name what went wrong and where."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MmencError(Exception):
    """Base class of mmenc's own errors."""


class SpecError(MmencError, ValueError):
    """A plugin registered something malformed."""


class PluginError(MmencError):
    """A plugin failed to import, raised in a hook or clashed with another plugin."""


class TargetError(PluginError, ImportError):
    """A registered ``"module:attr"`` target that cannot be imported: the module is missing,
    fails while importing, or lacks the attribute. Names the target and its plugin."""

    def __init__(self, message: str, target: str = "", plugin: str | None = None) -> None:
        super().__init__(message)
        self.target, self.plugin = target, plugin

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownNameError(MmencError, KeyError):
    """A model, format, plugin or other catalogue name that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = f" (known: {', '.join(known)})" if known and len(known) <= 12 else ""
        super().__init__(f"unknown {kind} {name!r}{hint}{listing}")
        self.kind, self.name, self.close = kind, name, close

    def __str__(self) -> str:
        return str(self.args[0])


class InputError(MmencError, ValueError):
    """A raw item (file, string, array) that cannot be used; the message names it and why."""

    def __init__(self, item: object, reason: str) -> None:
        label = str(item)
        if len(label) > 80:
            label = label[:77] + "..."
        super().__init__(f"{label}: {reason}")
        self.item, self.reason = item, reason


class CheckpointError(MmencError, ValueError):
    """A checkpoint or config that cannot be read or does not fit its recipe."""


class ConfigError(MmencError, ValueError):
    """A malformed configuration file or value."""


class EncodeError(MmencError, ValueError):
    """A model gave unusable output (NaN or Inf embeddings); the message names the items."""
