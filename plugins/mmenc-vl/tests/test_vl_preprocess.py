"""ALBEF's caption cleaning and the official image preprocessing of the recipes."""

from __future__ import annotations

import json

import mmenc
import pytest
import torch
from mmenc.errors import InputError

from mmenc_vl.preprocess import albef_caption


@pytest.mark.parametrize("raw,clean", [
    ("A Man's dog, running!", "a mans dog running"),
    ("  <person> rides a bike-path / road.  ", "person rides a bike path road"),
    ('Two "cats" (black; white) on a mat: #1 ~', "two cats black white on a mat 1"),
    ("tabs\t\tand\n\nnewlines", "tabs and newlines"),
])
def test_albef_caption(raw, clean):
    assert albef_caption(raw) == clean


def test_albef_caption_truncates_and_refuses_empty():
    assert albef_caption(" ".join(f"w{i}" for i in range(40))) == " ".join(
        f"w{i}" for i in range(30))
    assert albef_caption("a b c d", max_words=2) == "a b"
    for bad in ("", "  ", "?!..", None):
        with pytest.raises(InputError):
            albef_caption(bad)


@pytest.mark.parametrize("recipe,size,resize", [
    ("bridgetower-base", 288, "shortest"), ("albef-base", 256, "square"),
])
def test_image_preprocessing_of_the_recipes(recipe, size, resize):
    cfg = mmenc.catalogue().get("model", recipe).default_config()["tokenizers"]["image"]
    assert (cfg["size"], cfg["resize"], cfg["interpolation"]) == (size, resize, "bicubic")
    assert cfg["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert cfg["std"] == pytest.approx([0.26862954, 0.26130258, 0.27577711])


@pytest.mark.parametrize("recipe", ["bridgetower-tiny", "albef-tiny"])
def test_image_modes_are_converted_and_bad_images_refused(recipe):
    import io

    from PIL import Image

    model = mmenc.create_model(recipe).eval()
    rgb = Image.linear_gradient("L").resize((40, 30)).convert("RGB")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: composited on white
    white = Image.new("RGB", (40, 30), (255, 255, 255))
    items = [rgb.convert("L"), rgb.convert("CMYK"), rgba, white, rgb.resize((3000, 7))]
    emb = model.encode(items, "image")
    assert emb.shape[0] == len(items) and torch.isfinite(emb).all()
    assert torch.allclose(emb[2], emb[3], atol=1e-5)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    for bad in (buf.getvalue()[:60], b"", b"not an image", Image.new("RGB", (1, 5))):
        with pytest.raises(InputError):
            model.encode([bad], "image")


def test_albef_tokenizer_cleans_captions_and_keeps_it_when_saved(tmp_path):
    import mmenc
    from mmenc.errors import InputError

    model = mmenc.create_model("albef-base")
    tok = model.tokenizers["text"]
    assert torch.equal(tok(["A Dog, running!"]).ids, tok(["a dog running"]).ids)
    with pytest.raises(InputError, match="empty after ALBEF's cleaning"):
        tok(["?!"])
    small = mmenc.create_model("albef-tiny", tokenizers={"text": {"clean": "albef-caption"}})
    small.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["config"]["tokenizers"]["text"]["clean"] == "albef-caption"
    again = mmenc.load(tmp_path / "m").tokenizers["text"]
    assert again.clean == "albef-caption"
    assert torch.equal(again(["Two CATS."]).ids, again(["two cats"]).ids)


def _with_clean(folder, value):
    path = folder / "config.json"
    meta = json.loads(path.read_text())
    meta["config"]["tokenizers"]["text"]["clean"] = value
    path.write_text(json.dumps(meta))


def test_a_saved_import_path_of_the_registered_cleaner_still_loads(tmp_path):
    """Folders saved while cleaners were named by import path keep loading: the path of the
    registered cleaner maps to its name, and the model saves the name from then on."""
    import mmenc

    mmenc.create_model("albef-tiny").save_pretrained(tmp_path / "m")
    _with_clean(tmp_path / "m", "mmenc_vl.preprocess:albef_caption")
    model = mmenc.load(tmp_path / "m")
    tok = model.tokenizers["text"]
    assert tok.clean == "albef-caption"
    assert torch.equal(tok(["A Dog, running!"]).ids, tok(["a dog running"]).ids)
    model.save_pretrained(tmp_path / "again")
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert saved["config"]["tokenizers"]["text"]["clean"] == "albef-caption"


@pytest.mark.parametrize("value", ["mmenc_vl.preprocess:_RUNS.sub", "mmenc_vl.albef:build_albef",
                                   "mmenc_vl_canary_module:albef_caption", "albef_caption"])
def test_other_cleaner_strings_are_refused_without_importing(tmp_path, value):
    import sys

    import mmenc
    from mmenc.errors import CheckpointError

    mmenc.create_model("albef-tiny").save_pretrained(tmp_path / "m")
    _with_clean(tmp_path / "m", value)
    with pytest.raises(CheckpointError, match=r"config\.json: config\.tokenizers\.text\.clean: "
                       r".*registered: .*albef-caption"):
        mmenc.load(tmp_path / "m")
    assert "mmenc_vl_canary_module" not in sys.modules
