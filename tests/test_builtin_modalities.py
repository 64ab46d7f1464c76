"""The built-in text and image modalities: validation, conversion rules and preprocessing."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from mmenc.builtin.image import ImageTokenizer, load_image
from mmenc.builtin.text import load_text
from mmenc.errors import InputError


def reference_pixels(image, size, resize, tok):
    """torchvision's own pipeline, as the official code bases use it."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    image = load_image(image)
    if resize == "square":
        image = TF.resize(image, [size, size], interpolation=InterpolationMode.BICUBIC)
    else:
        image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC)
        image = TF.center_crop(image, [size, size])
    pixels = TF.to_dtype(TF.pil_to_tensor(image), torch.float32, scale=True)
    return TF.normalize(pixels, list(tok.mean), list(tok.std))


@pytest.mark.parametrize("resize", ["square", "shortest"])
@pytest.mark.parametrize("size", [32, 45])
def test_image_preprocessing_matches_torchvision(resize, size):
    images = [Image.new("RGB", (37, 91), "red"), Image.linear_gradient("L").resize((91, 37)),
              Image.effect_noise((64, 64), 40).convert("RGB"), Image.new("RGB", (size, size))]
    tok = ImageTokenizer(size, resize)
    got = tok(images).values
    want = torch.stack([reference_pixels(im, size, resize, tok) for im in images])
    assert got.shape == (4, 3, size, size)
    assert (got - want).abs().max() < 1e-5


def test_image_modes_are_converted_to_rgb():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))          # fully transparent red
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)  # composited on white
    for mode in ("L", "P", "CMYK", "I;16", "1", "LA"):
        assert load_image(Image.new(mode, (6, 5))).mode == "RGB"


def png_bytes(size=(16, 16)):
    buf = io.BytesIO()
    Image.new("RGB", size, "blue").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("item,reason", [
    (b"not an image at all", "not a readable image"),
    (png_bytes()[:60], "truncated"),
    (png_bytes((1, 40)), "too small"),
    (12345, "expected an image path"),
])
def test_bad_images_are_refused_with_a_reason(item, reason):
    with pytest.raises(InputError, match=reason):
        load_image(item)


def test_missing_image_file_names_the_path(tmp_path):
    with pytest.raises(InputError, match="gone.png: file not found"):
        load_image(tmp_path / "gone.png")


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 40)).save(path)
    with pytest.raises(InputError, match="too large"):
        load_image(path)


def test_text_validation():
    assert load_text("") == ""
    assert load_text("caf\u00e9".encode()) == "caf\u00e9"
    with pytest.raises(InputError, match="not UTF-8"):
        load_text(b"\xff\xfe\x00binary")
    with pytest.raises(InputError, match="NUL"):
        load_text("a\x00b")
    with pytest.raises(InputError, match="must be a str"):
        load_text(3.5)
