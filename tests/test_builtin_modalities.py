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


def _bomb_png(size):
    buf = io.BytesIO()
    Image.new("1", size).save(buf, "PNG")  # 1-bit and constant: a few KB on disk
    return buf.getvalue()


@pytest.mark.parametrize("size,reason", [
    ((2, 1_000_000), r"2x1000000 pixels is too elongated \(aspect 5e\+05, at most 500"),
    ((12_000, 12_000), r"12000x12000 = 144000000 pixels is too large \(at most 64000000"),
])
def test_image_bombs_are_refused_from_the_header(tmp_path, size, reason):
    import time

    data = _bomb_png(size)
    assert len(data) < 100_000
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    start = time.perf_counter()
    for item in (data, path):
        with pytest.raises(InputError, match=reason) as info:
            load_image(item)
        assert ("bomb.png" if item is path else f"<{len(data)} bytes>") in str(info.value)
    with pytest.raises(InputError, match=reason):
        ImageTokenizer(size=16)([data])
    assert time.perf_counter() - start < 2.0  # the pixels are never decoded


def test_image_limits_are_options():
    from mmenc.builtin import image as image_module

    wide = Image.new("RGB", (300, 10))
    assert load_image(wide).size == (300, 10)
    with pytest.raises(InputError, match="aspect 30, at most 20, ImageLimits.max_aspect"):
        load_image(wide, image_module.ImageLimits(max_aspect=20))
    with pytest.raises(InputError, match="at most 2000, ImageLimits.max_pixels"):
        load_image(wide, image_module.ImageLimits(max_pixels=2000))


def test_images_at_the_aspect_cap_stay_cheap():
    """The shortest-side resize scales the long side as much as the short one; at the cap
    (2 x 1,000 pixels) that is 224 x 112,000 pixels, not 224 x 112,000,000."""
    import time

    from mmenc.builtin.image import LIMITS

    at_cap = Image.new("RGB", (2, int(2 * LIMITS.max_aspect)), "red")
    start = time.perf_counter()
    assert ImageTokenizer(size=224)([at_cap]).values.shape == (1, 3, 224, 224)
    assert time.perf_counter() - start < 5.0
    with pytest.raises(InputError, match="too elongated"):
        load_image(Image.new("RGB", (2, int(2 * LIMITS.max_aspect) + 2)))


def test_text_caps():
    import time

    from mmenc.builtin import text as text_module

    with pytest.raises(InputError, match=r"lone surrogate U\+DCE9 at character 3"):
        load_text(b"caf\xe9".decode("utf-8", "surrogateescape"))
    with pytest.raises(InputError, match=r"too long: 11 characters \(at most 10"):
        load_text("x" * 11, text_module.TextLimits(max_chars=10))
    tok = text_module.text_tokenizer({"kind": "bytes", "max_length": 16})
    start = time.perf_counter()
    batch = tok(["word " * 200_000, "short"])
    assert time.perf_counter() - start < 2.0
    assert tok.stats["cut"] == 1 and batch.ids.shape == (2, 16)
    assert torch.equal(batch.ids[0], tok(["word " * 100]).ids[0])


@pytest.mark.parametrize("pad,ok", [(3, True), (None, True), ("[PAD]", False), (-1, False),
                                    (True, False), (1.5, False)])
def test_hf_tokenizer_padding_id_is_checked(tmp_path, pad, ok):
    import json

    from mmenc.builtin.text import hf_tokenizer_config
    from mmenc.errors import CheckpointError

    vocab = {"<pad>": 7, "a": 0}
    (tmp_path / "tokenizer.json").write_text(json.dumps(
        {"padding": {"pad_id": pad}, "model": {"vocab": vocab}}))
    if ok:
        expected = 7 if pad is None else pad
        assert hf_tokenizer_config(tmp_path, 16)["pad_id"] == expected
    else:
        with pytest.raises(CheckpointError, match="tokenizer.json: the padding id"):
            hf_tokenizer_config(tmp_path, 16)
