"""``init_from`` in a bound tower's spec, on a kind of the core (the image tower of a CLIP
recipe): the saved model's tower weights, copied by name, or a ConfigError naming the
parameter that does not fit."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import mmenc
from mmenc.bind.towers import build_tower
from mmenc.errors import ConfigError


def test_image_tower_starts_from_a_saved_clip_model(tmp_path):
    torch.manual_seed(3)
    source = mmenc.create_model("clip-tiny")
    source.save_pretrained(tmp_path / "clip")
    torch.manual_seed(4)
    tower = build_tower("image", {"recipe": "clip-tiny", "modality": "image",
                                  "init_from": str(tmp_path / "clip")}, 16).eval()
    images = [Image.new("RGB", (32, 32), c) for c in ((200, 20, 20), (20, 20, 200))]
    saved = mmenc.load(tmp_path / "clip").eval()
    with torch.no_grad():
        want = saved.forward_features(saved.tokenize(images, "image"), "image").hidden
        got = tower.forward_features(tower.tokenizer(images)).hidden
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    fresh = build_tower("image", {"recipe": "clip-tiny", "modality": "image"}, 16).eval()
    with torch.no_grad():
        assert (fresh.forward_features(fresh.tokenizer(images)).hidden - want).abs().max() > 1e-2


@pytest.mark.parametrize("change,message", [
    ({"depth": 3}, r"parameter '.*layers\.2\..*' of the tower is not in the saved model"),
    ({"ffn_dim": 96}, r"parameter '.*' has shape \(96, 32\) in the saved model, \(64, 32\) "
                      r"in the tower"),
])
def test_another_shape_is_a_config_error_naming_the_parameter(tmp_path, change, message):
    """The tower is the recipe's (2 layers, ffn 64); the saved model's image tower is not."""
    config = mmenc.create_model("clip-tiny").config
    image = config["towers"]["image"]
    if "depth" in change:  # one more layer in the tower than in the saved model
        tower = {**image, "trunk": {**image["trunk"], **change}}
        source = {}
    else:  # a wider feed-forward in the saved model
        tower = None
        source = {"towers": {**config["towers"],
                             "image": {**image, "trunk": {**image["trunk"], **change}}}}
    mmenc.create_model("clip-tiny", **source).save_pretrained(tmp_path / "clip")
    spec = {"recipe": "clip-tiny", "modality": "image", "init_from": str(tmp_path / "clip")}
    if tower is not None:
        spec["overrides"] = {"towers": {**config["towers"], "image": tower}}
    with pytest.raises(ConfigError, match=r"tower of 'image': init_from .*" + message):
        build_tower("image", spec, 16)
