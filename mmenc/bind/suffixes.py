"""The modality of a query file, from its extension (``mmenc search --query-file``)."""

from __future__ import annotations

from pathlib import Path

SUFFIXES: dict[str, str] = {
    **dict.fromkeys((".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"), "audio"),
    **dict.fromkeys((".mid", ".midi"), "midi"),
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"), "image"),
    **dict.fromkeys((".py", ".pyi"), "code"),
    **dict.fromkeys((".txt", ".md"), "text"),
}


def modality_of(path: str | Path, default: str = "text") -> str:
    """``audio`` for .wav/.flac/.ogg/.mp3, ``midi`` for .mid, ``image`` for .png/.jpg/...,
    ``code`` for .py, else ``default``."""
    return SUFFIXES.get(Path(path).suffix.lower(), default)
