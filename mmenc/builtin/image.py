"""The built-in ``image`` modality and its preprocessing.

Conversion rules: every image becomes 8-bit RGB. Grayscale, palette and CMYK images are
converted; images with transparency are composited on white. Images smaller than 2x2 pixels,
unreadable or truncated files, and images over Pillow's decompression-bomb limit are refused
with an :class:`~mmenc.errors.InputError` naming the file.

Cost caps (:class:`ImageLimits`): an image of more than ``max_pixels`` pixels or with a long
side more than ``max_aspect`` times its short side is refused, from the size in the file's
header, before it is decoded (a 3 KB PNG can declare 2 x 1,000,000 pixels). The caps in force
are :data:`LIMITS`; pass ``limits=`` to :func:`load_image` or replace
``mmenc.builtin.image.LIMITS``. The aspect cap also bounds the shortest-side resize, which
scales the long side by as much as the short one: at most ``size x size * max_aspect`` pixels.
"""

from __future__ import annotations

import io
import math
import numbers
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmenc.batch import TokenBatch
from mmenc.errors import ConfigError, InputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageLimits:
    """What one image may cost; beyond a cap it is refused with an ``InputError``.

    Args:
        max_pixels: most pixels (width x height; 8000 x 8000 by default, 192 MB as RGB).
        max_aspect: largest ratio of the long side to the short side (500: the shortest-side
            resize to 224 makes at most 224 x 112,000 pixels, 75 MB).
    """

    max_pixels: int = 64_000_000
    max_aspect: float = 500.0


LIMITS = ImageLimits()
"""The caps :func:`load_image` applies when it is given none."""


def _check_size(label: object, size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise InputError(label, f"image of {width}x{height} = {width * height} pixels is too "
                                f"large (at most {limits.max_pixels}, ImageLimits.max_pixels)")
    if min(size) < 2:
        raise InputError(label, f"image of {width}x{height} pixels is too small")
    if max(size) > limits.max_aspect * min(size):
        raise InputError(label, f"image of {width}x{height} pixels is too elongated (aspect "
                                f"{max(size) / min(size):.4g}, at most {limits.max_aspect:g}, "
                                "ImageLimits.max_aspect)")


def load_image(item: object, limits: ImageLimits | None = None) -> Any:
    """Read and validate one image (a path, bytes or a PIL image) as an RGB PIL image.

    ``limits`` (default :data:`LIMITS`) is checked on the header's size before decoding.
    """
    from PIL import Image

    limits = LIMITS if limits is None else limits
    with warnings.catch_warnings():  # Pillow warns at 89 MP; the caps above decide instead
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = _open(item, limits)
    return to_rgb(image)


def _open(item: object, limits: ImageLimits) -> Any:
    from PIL import Image, UnidentifiedImageError

    label: object = item
    try:
        if isinstance(item, Image.Image):
            image = item
            _check_size(label, image.size, limits)
            image.load()
        elif isinstance(item, bytes | bytearray):
            label = f"<{len(item)} bytes>"
            image = Image.open(io.BytesIO(bytes(item)))  # lazy: reads the header only
            _check_size(label, image.size, limits)
            image.load()
        elif isinstance(item, str | Path):
            with Image.open(item) as opened:
                _check_size(label, opened.size, limits)
                opened.load()
                image = opened.copy()
        else:
            raise InputError(repr(item), f"expected an image path, bytes or PIL image, "
                             f"got {type(item).__name__}")
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(label, "file not found") from None
    except Image.DecompressionBombError as exc:
        raise InputError(label, f"image too large ({exc})") from None
    except UnidentifiedImageError:
        raise InputError(label, "not a readable image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(label, f"unreadable or truncated image ({exc})") from None
    return image


def to_rgb(image: Any) -> Any:
    """8-bit RGB; transparency composited on white."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "F"):
        image = image.point(lambda v: v / 256).convert("L")
    return image.convert("RGB")


def example_images() -> list[Any]:
    """A few small synthetic images (gradient, checkerboard, solid, transparent)."""
    from PIL import Image

    grad = Image.linear_gradient("L").resize((48, 40)).convert("RGB")
    checker = Image.new("RGB", (32, 32), "white")
    for x in range(0, 32, 8):
        for y in range(0, 32, 8):
            if (x + y) // 8 % 2:
                checker.paste((200, 30, 30), (x, y, x + 8, y + 8))
    solid = Image.new("L", (20, 30), 128)
    clear = Image.new("RGBA", (24, 24), (0, 120, 255, 90))
    return [grad, checker, solid, clear]


class ImageTokenizer:
    """PIL images -> ``TokenBatch(values=[b 3 s s])`` normalised pixels.

    Args:
        size: output side in pixels.
        resize: ``"square"`` resizes to ``size x size`` (ALBEF); ``"shortest"`` resizes the
            shortest side to ``size`` and centre-crops (CLIP).
        mean, std: per-channel normalisation.
        interpolation: ``"bicubic"`` or ``"bilinear"``.
    """

    modality = "image"
    MAX_SIZE = 4096
    """Largest output side a configuration may ask for (ViTs use 224 to 518)."""

    def __init__(self, size: int = 224, resize: str = "shortest",
                 mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD,
                 interpolation: str = "bicubic") -> None:
        # configurations come from config.json files: check them before any image is resized
        if resize not in ("square", "shortest"):
            raise ConfigError(f"image tokenizer: resize must be 'square' or 'shortest', "
                              f"got {resize!r}")
        if interpolation not in ("bicubic", "bilinear"):
            raise ConfigError(f"image tokenizer: interpolation must be 'bicubic' or "
                              f"'bilinear', got {interpolation!r}")
        # int spelled out: typeshed's int is no numbers.Integral, so mypy would read the
        # rest of __init__ as unreachable
        if isinstance(size, bool) or not isinstance(size, int | numbers.Integral) \
                or not 1 <= size <= self.MAX_SIZE:
            raise ConfigError(f"image tokenizer: size must be an integer in "
                              f"1..{self.MAX_SIZE}, got {size!r}")
        self.size, self.resize = int(size), resize
        self.mean = _channel_values("mean", mean, positive=False)
        self.std = _channel_values("std", std, positive=True)
        self.interpolation = interpolation

    def __call__(self, items: list[object]) -> TokenBatch:
        import numpy as np
        from PIL import Image

        # PIL does the resizing (as torchvision does for PIL images); one batched normalise
        resample = {"bicubic": Image.Resampling.BICUBIC,
                    "bilinear": Image.Resampling.BILINEAR}[self.interpolation]
        arrays = []
        for item in items:
            image = load_image(item)
            if self.resize == "square":
                image = image.resize((self.size, self.size), resample)
            else:
                w, h = image.size
                short, long = (w, h) if w <= h else (h, w)
                new_long = int(self.size * long / short)
                new_w, new_h = (self.size, new_long) if w <= h else (new_long, self.size)
                if (new_w, new_h) != (w, h):
                    image = image.resize((new_w, new_h), resample)
                top = int(round((new_h - self.size) / 2.0))
                left = int(round((new_w - self.size) / 2.0))
                image = image.crop((left, top, left + self.size, top + self.size))
            arrays.append(np.asarray(image, dtype=np.uint8))
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return TokenBatch(values=(pixels - mean) / std)

    def config(self) -> dict[str, object]:
        return {"tokenizer": "image", "size": self.size, "resize": self.resize,
                "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation}

    def save(self, directory: str) -> None:
        """Nothing to write: the configuration is all there is."""


def _channel_values(name: str, values: object, positive: bool) -> tuple[float, ...]:
    """One or three finite numbers (strictly positive for ``std``), or a ConfigError."""
    items = list(values) if isinstance(values, list | tuple) else []
    floats = [float(v) for v in items if isinstance(v, numbers.Real) and not isinstance(v, bool)]
    ok = len(floats) == len(items) and len(items) in (1, 3) and all(
        math.isfinite(v) and (v > 0 or not positive) for v in floats)
    if not ok:
        wanted = "positive" if positive else "finite"
        raise ConfigError(f"image tokenizer: {name} must be 1 or 3 {wanted} numbers, "
                          f"got {values!r}")
    return tuple(floats)


def image_tokenizer(config: dict[str, Any], directory: Path | None = None) -> ImageTokenizer:
    return ImageTokenizer(**{k: v for k, v in config.items() if k != "tokenizer"})
