"""A check that a recipe's configuration survives saving: what plugins' config tests share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmenc.model import Encoder, load


def saved_and_reloaded(model: Encoder, directory: Path) -> tuple[Encoder, Path, dict[str, Any]]:
    """Save ``model`` to ``directory/a``, load it and save that to ``directory/b``; the two
    ``config.json`` configurations must be equal. Returns the loaded model, the path of the first
    ``config.json`` (for tests that then spoil it) and that file's content."""
    first = model.save_pretrained(directory / "a") / "config.json"
    loaded = load(directory / "a")
    second = loaded.save_pretrained(directory / "b") / "config.json"
    saved: dict[str, Any] = json.loads(first.read_text())
    again = json.loads(second.read_text())["config"]
    assert saved["config"] == again, f"{model.recipe}: config.json changes when saved again"
    return loaded, first, saved
