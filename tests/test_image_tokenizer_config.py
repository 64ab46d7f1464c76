"""The image tokenizer checks the configuration it is given (from a model's config.json)
before any image is resized: a typed ConfigError names the field, and a saved model whose
image tokenizer configuration is broken is refused by ``mmenc.load``."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import mmenc
from mmenc.builtin.image import ImageTokenizer, image_tokenizer
from mmenc.errors import CheckpointError, ConfigError


@pytest.mark.parametrize(("field", "value"), [
    ("size", 0), ("size", -3), ("size", 10**9), ("size", "224"), ("size", 2.5), ("size", True),
    ("size", None), ("mean", "0.5"), ("mean", [0.5, 0.5]), ("mean", [float("nan")] * 3),
    ("mean", []), ("std", [0.0, 0.2, 0.2]), ("std", [-1.0] * 3), ("std", [float("inf")] * 3),
    ("std", {"r": 1}), ("interpolation", "lanczos"), ("resize", "crop"),
])
def test_a_broken_field_is_a_config_error_naming_it(field, value):
    config = {"tokenizer": "image", "size": 32, "resize": "shortest", "mean": [0.5] * 3,
              "std": [0.25] * 3, "interpolation": "bicubic", field: value}
    with pytest.raises(ConfigError, match=field):
        image_tokenizer(config)


def test_valid_configurations_still_tokenize():
    image = Image.new("RGB", (40, 30), "teal")
    for tok in (ImageTokenizer(32), ImageTokenizer(16, "square", mean=(0.5,), std=(0.5,),
                                                   interpolation="bilinear")):
        values = tok([image]).values
        assert values.shape == (1, 3, tok.size, tok.size) and torch.isfinite(values).all()
        assert image_tokenizer(tok.config()).config() == tok.config()


def test_load_refuses_a_saved_model_with_a_broken_image_tokenizer(tmp_path):
    torch.manual_seed(0)
    folder = mmenc.create_model("vit-tiny").save_pretrained(tmp_path / "vit")
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["tokenizers"]["image"]["std"] = "0.5"
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="std"):
        mmenc.load(folder)


def test_numpy_numbers_are_accepted():
    import numpy as np

    tok = image_tokenizer({"size": np.int64(16), "mean": [np.float32(0.5)] * 3,
                           "std": (np.float64(0.25),) * 3})
    assert tok.size == 16 and tok.std == (0.25, 0.25, 0.25)
    assert tok([Image.new("RGB", (20, 18), "teal")]).values.shape == (1, 3, 16, 16)
