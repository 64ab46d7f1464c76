"""Emoji images and their English names, rendered from the installed Noto Color Emoji font.

Sources: Debian ``fonts-noto-color-emoji`` (the bitmap font, opened at size 109 with
``embedded_color=True``) and PyPI ``emoji`` (names). Nothing is copied into the project. The
group key is the emoji without skin-tone modifiers, so every skin-tone variant of a person lands
in the same split.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmenc.data import held_out

FONT_PATHS = (
    Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),
    Path("/usr/share/fonts/noto/NotoColorEmoji.ttf"),
)
SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}
FONT_SIZE = 109  # the only size the bitmap font has


@dataclass(frozen=True)
class EmojiItem:
    """One emoji: its characters, English name and split group."""

    char: str
    name: str

    @property
    def group(self) -> str:
        return "".join(c for c in self.char if c not in SKIN_TONES)

    @property
    def test(self) -> bool:
        return held_out(self.group)

    @property
    def id(self) -> str:
        return "emoji-" + "-".join(f"{ord(c):x}" for c in self.char)


def font_path() -> Path:
    for path in FONT_PATHS:
        if path.is_file():
            return path
    raise FileNotFoundError(
        "the emoji data set needs the Debian package fonts-noto-color-emoji "
        f"(looked for {', '.join(map(str, FONT_PATHS))}); scripts/setup.sh installs it")


@functools.lru_cache(maxsize=1)
def _font() -> Any:
    from PIL import ImageFont

    return ImageFont.truetype(str(font_path()), FONT_SIZE)


def render(char: str, size: int = 64) -> Any:
    """The emoji as a ``size x size`` RGB image on white, or None when the font lacks it."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGBA", (160, 160), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((8, 8), char, font=_font(), embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)


def emoji_name(code: str) -> str:
    return code.strip(":").replace("_", " ").strip()


def emoji_items() -> list[EmojiItem]:
    """Every fully-qualified emoji with an English name, in a stable order."""
    import emoji

    fully = emoji.STATUS["fully_qualified"]
    items = [EmojiItem(char, emoji_name(data["en"])) for char, data in emoji.EMOJI_DATA.items()
             if data.get("status") == fully and data.get("en")]
    return sorted(items, key=lambda it: it.id)


def emoji_dataset(size: int = 64) -> list[tuple[EmojiItem, Any]]:
    """``(item, image)`` for every emoji the installed font can draw."""
    out = []
    for item in emoji_items():
        image = render(item.char, size)
        if image is not None:
            out.append((item, image))
    return out


def write_emoji_manifests(out: str | Path, size: int = 64) -> tuple[Path, Path, int]:
    """Render every emoji to ``out/images/*.png`` and write ``train.jsonl`` / ``test.jsonl``
    (``{"id", "image", "text"}``, image paths relative to ``out``). Returns both manifests and
    the number of emoji the font could not draw."""
    import json

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines: dict[bool, list[str]] = {True: [], False: []}
    missing = 0
    for item in emoji_items():
        path = out / "images" / f"{item.id}.png"
        if not path.is_file():
            image = render(item.char, size)
            if image is None:
                missing += 1
                continue
            image.save(path)
        lines[item.test].append(json.dumps(
            {"id": item.id, "image": f"images/{path.name}", "text": item.name}))
    train, test = out / "train.jsonl", out / "test.jsonl"
    train.write_text("\n".join(lines[False]) + "\n", encoding="utf-8")
    test.write_text("\n".join(lines[True]) + "\n", encoding="utf-8")
    return train, test, missing
