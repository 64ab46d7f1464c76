"""Hostile images: emoji rendered from the Noto Color Emoji font, mutated and re-encoded."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path
from typing import Any

from benchmarks.reliability import mutate

TARGETS = (("vit-tiny", "image"), ("clip-tiny", "image"), ("albef-tiny", "image"),
           ("bridgetower-tiny", "image"))
MUTATIONS = ("valid", *mutate.GENERIC, "ihdr_size", "ihdr_size_crc", "ihdr_depth",
             "chunk_length", "splice", "aspect_wide", "aspect_tall", "bomb_declared",
             "large_real", "tiny", "mode", "format", "animated", "truncated_jpeg", "pil_object",
             "empty", "garbage", "non_image", "path_missing", "path_directory")
HEAVY = ("aspect_wide", "aspect_tall", "large_real")
"""Mutations that cost seconds per input: left out of quick runs."""


def prepare(cache: Path, count: int) -> int:
    """Render the first ``count`` emoji (in the data set's stable order) to ``cache/images``."""
    from mmenc.data.emoji import emoji_items, render

    folder = cache / "images"
    folder.mkdir(parents=True, exist_ok=True)
    done = len(list(folder.glob("*.png")))
    if done >= count:
        return done
    for item in emoji_items():
        if done >= count:
            break
        path = folder / f"{item.id}.png"
        if path.is_file():
            continue
        image = render(item.char, 64)
        if image is not None:
            image.save(path)
            done += 1
    return done


def load_base(cache: Path) -> list[bytes]:
    files = sorted((cache / "images").glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no base images in {cache / 'images'}: run prepare first")
    return [f.read_bytes() for f in files]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int, depth: int = 8, color: int = 2) -> bytes:
    """A PNG whose IHDR declares ``width x height`` followed by a small IDAT and IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) \
        + png_chunk(b"IEND", b"")


def _encode(image: Any, fmt: str, **kw: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kw)
    return out.getvalue()


def make(name: str, rng: random.Random, base: list[bytes], tmp: Path) -> tuple[str, Any]:
    from PIL import Image

    data = base[rng.randrange(len(base))]
    if name == "valid":
        return name, data
    if name in mutate.GENERIC:
        return name, mutate.generic(name, data, rng)
    if name == "ihdr_size":  # IHDR body starts at byte 16; the CRC no longer matches
        return name, mutate.put_u32(data, rng.choice((16, 20)), rng.choice(mutate.EXTREME_U32),
                                    True)
    if name == "ihdr_size_crc":
        side = rng.choice((0, 1, 2**31 - 1, 65_535, 100_000))
        return name, png_header(side, rng.choice((1, 64, side)))
    if name == "ihdr_depth":
        return name, png_header(64, 64, rng.choice((0, 3, 16, 255)), rng.choice((0, 1, 5, 255)))
    if name == "chunk_length":  # the IDAT (or whatever follows IHDR) declares a wild length
        return name, mutate.put_u32(data, 33, rng.choice(mutate.EXTREME_U32), True)
    if name == "splice":
        return name, mutate.splice(data, base[rng.randrange(len(base))], rng)
    if name == "aspect_wide":
        return name, _encode(Image.new("RGB", (rng.choice((20_000, 60_000)), rng.choice((1, 2))),
                                       "red"), "PNG")
    if name == "aspect_tall":
        return name, _encode(Image.new("L", (rng.choice((1, 2, 3)), 40_000), 9), "PNG")
    if name == "bomb_declared":
        side = rng.choice((20_000, 50_000, 100_000))
        return name, png_header(side, side, 1, 0)
    if name == "large_real":
        side = rng.choice((2_000, 4_000))
        return name, _encode(Image.new("RGB", (side, side), "blue"), "PNG")
    if name == "tiny":
        return name, _encode(Image.new("RGB", rng.choice(((1, 1), (2, 2), (1, 64))), "red"),
                             "PNG")
    if name == "mode":
        image = Image.open(io.BytesIO(data))
        mode = rng.choice(("1", "L", "LA", "P", "I", "I;16", "F", "CMYK", "YCbCr", "RGBA"))
        fmt = {"CMYK": "JPEG", "YCbCr": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
        return name, _encode(image.convert(mode) if mode != "I;16" else image.convert("I")
                             .convert("I;16"), fmt)
    if name == "format":
        image = Image.open(io.BytesIO(data)).convert("RGB")
        fmt = rng.choice(("GIF", "BMP", "TIFF", "WEBP", "JPEG", "ICO", "PPM", "TGA"))
        return name, _encode(image, fmt)
    if name == "animated":
        frames = [Image.open(io.BytesIO(b)).convert("P") for b in rng.sample(base, 3)]
        return name, _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    if name == "truncated_jpeg":
        jpeg = _encode(Image.open(io.BytesIO(data)).convert("RGB"), "JPEG")
        return name, jpeg[: rng.randrange(2, len(jpeg))]
    if name == "pil_object":
        mode = rng.choice(("F", "I", "RGBA", "P", "1"))
        image = Image.new(mode, (rng.choice((1, 2, 33)), 33))
        if mode == "F":
            image.putdata([float("nan")] * (image.width * image.height))
        return name, image
    if name == "empty":
        return name, b""
    if name == "garbage":
        return name, mutate.garbage(rng)
    if name == "non_image":
        return name, rng.choice((None, 42, "not an image", ["a"], 3.5))
    if name == "path_missing":
        return name, str(tmp / "no-such-file.png")
    if name == "path_directory":
        return name, str(tmp)
    raise AssertionError(name)
