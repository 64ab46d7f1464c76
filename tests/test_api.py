"""The Python API in the spellings users bring from sentence-transformers, timm and open_clip:
single items, keyword aliases, strict overrides, pretrained paths, listings and tokenizers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_model

import mmenc
from mmenc.builtin.image import example_images
from mmenc.errors import CheckpointError, ConfigError, UnknownNameError

TEXTS = ["a photo of a cat", "a checkerboard", "x"]


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return mmenc.create_model("clip-tiny").eval()


@pytest.fixture(scope="module")
def clip_dir(clip, tmp_path_factory):
    return clip.save_pretrained(tmp_path_factory.mktemp("saved") / "clip")


# -- encode ----------------------------------------------------------------------------------
def test_one_string_gives_one_vector(clip):
    batch = clip.encode(TEXTS, "text")
    one = clip.encode(TEXTS[0], "text")
    assert batch.shape == (3, 32) and one.shape == (32,)
    assert torch.allclose(one, batch[0], atol=1e-6)


def test_one_image_one_path_and_one_array_give_one_vector(clip, tmp_path):
    images = example_images()
    batch = clip.encode(images, "image")
    assert clip.encode(images[1], "image").shape == (32,)
    path = tmp_path / "checker.png"
    images[1].save(path)
    from_path = clip.encode(path, "image")
    assert from_path.shape == (32,)
    assert torch.allclose(from_path, batch[1], atol=1e-5)
    assert clip.encode([path], "image").shape == (1, 32)


def test_sentence_transformers_keywords(clip):
    raw = clip.encode(TEXTS, "text", normalize=False)
    out = clip.encode(TEXTS, "text", normalize_embeddings=False, truncate_dim=8,
                      convert_to_numpy=True)
    assert isinstance(out, np.ndarray) and out.shape == (3, 8)
    assert np.allclose(out, raw[:, :8].numpy(), atol=1e-6)
    assert not np.allclose(np.linalg.norm(out, axis=1), 1.0)
    unit = clip.encode(TEXTS, "text", truncate_dim=8, convert_to_numpy=True,
                       convert_to_tensor=True)  # convert_to_tensor wins, as in ST
    assert isinstance(unit, torch.Tensor)
    assert torch.allclose(unit.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="disagree"):
        clip.encode(TEXTS, "text", dim=4, truncate_dim=8)


def test_modality_is_required_only_when_ambiguous(clip):
    with pytest.raises(TypeError, match=r"encode\(items, modality=\.\.\.\).*") as info:
        clip.encode(["x"])
    assert "text" in str(info.value) and "image" in str(info.value)
    text_only = mmenc.create_model("text-tiny")
    assert text_only.encode("x").shape == text_only.encode("x", "text").shape


def test_open_clip_spellings(clip):
    raw = clip.encode(TEXTS, "text", normalize=False)
    assert torch.allclose(clip.encode_text(TEXTS), raw, atol=1e-6)  # not normalised, as open_clip
    images = example_images()
    assert torch.allclose(clip.encode_image(images, normalize=True),
                          clip.encode(images, "image"), atol=1e-6)


def test_model_similarity_is_cosine(clip):
    a = clip.encode(TEXTS, "text", normalize=False)
    b = clip.encode(example_images(), "image", normalize=False)
    sim = clip.similarity(a, b)
    expected = torch.stack([torch.stack([torch.nn.functional.cosine_similarity(x, y, dim=0)
                                         for y in b]) for x in a])
    assert sim.shape == (3, 4) and torch.allclose(sim, expected, atol=1e-5)


# -- create_model ----------------------------------------------------------------------------
def test_misspelt_override_is_an_error_with_close_matches():
    with pytest.raises(ConfigError, match=r"'embed_dimm'.*did you mean 'embed_dim'") as info:
        mmenc.create_model("clip-tiny", embed_dimm=64)
    assert "towers" in str(info.value)  # the valid keys are listed
    with pytest.raises(ConfigError, match=r"towers\.text\.trunk\.dimm.*'dim'"):
        mmenc.create_model("clip-tiny", towers={"text": {"trunk": {"dimm": 48}}})


def test_known_overrides_still_apply():
    model = mmenc.create_model("clip-tiny", embed_dim=16)
    assert model.encode("x", "text").shape == (16,)
    assert model.config["embed_dim"] == 16 and type(model.config["towers"]) is dict
    # optional settings a builder reads without a default entry are known too
    assert mmenc.create_model("albef-tiny", pretraining=True, queue_size=6).pretraining


def test_pretrained_without_weights_says_so_in_one_line():
    for tag in (True, "openai"):
        with pytest.raises(CheckpointError, match="no pretrained weights.*mmenc convert") as e:
            mmenc.create_model("clip-tiny", pretrained=tag)
        assert "\n" not in str(e.value)


def test_pretrained_from_a_safetensors_file_and_a_folder(clip, clip_dir, tmp_path):
    images = example_images()
    want = clip.encode(images, "image")
    file = tmp_path / "weights.safetensors"
    save_model(clip, str(file))
    for source in (file, clip_dir):
        got = mmenc.create_model("clip-tiny", pretrained=source).encode(images, "image")
        assert torch.allclose(got, want, atol=1e-6)
    local = mmenc.create_model(f"local-dir:{clip_dir}")
    assert torch.allclose(local.encode(images, "image"), want, atol=1e-6)
    assert torch.allclose(mmenc.Encoder.from_pretrained(clip_dir).encode(images, "image"),
                          want, atol=1e-6)
    with pytest.raises(CheckpointError, match="'clip-tiny' model, not 'vit-tiny'"):
        mmenc.create_model("vit-tiny", pretrained=clip_dir)
    with pytest.raises(CheckpointError):  # weights of another size do not fit
        mmenc.create_model("clip-tiny", pretrained=file, embed_dim=16)
    with pytest.raises(CheckpointError, match="no such file"):
        mmenc.create_model("clip-tiny", pretrained=tmp_path / "missing.safetensors")


def test_a_model_without_a_recipe_name_is_not_saved(tmp_path):
    model = mmenc.create_model("clip-tiny")
    for name in ("", None, "  "):
        model.recipe = name
        folder = tmp_path / f"nameless-{name!r}"
        with pytest.raises(ConfigError, match="has no recipe name") as e:
            model.save_pretrained(folder)
        assert str(folder) in str(e.value) and "\n" not in str(e.value)
        assert not folder.exists()  # nothing written, not even the folder
    model.recipe = "clip-tiny"
    assert mmenc.load(model.save_pretrained(tmp_path / "named")).recipe == "clip-tiny"


def test_a_saved_folder_as_the_name_points_at_load(clip_dir):
    with pytest.raises(ConfigError, match=r"mmenc\.load"):
        mmenc.create_model(str(clip_dir))


# -- listing and tokenizers ------------------------------------------------------------------
def test_list_models_patterns_and_modality():
    assert mmenc.list_models("clip-*") == ["clip-tiny"]
    every = mmenc.list_models()
    assert every == sorted(every) and "clip-tiny" in every and "text-tiny" in every
    images = mmenc.list_models(modality="image")
    assert "clip-tiny" in images and "text-tiny" not in images
    assert mmenc.list_models("*-tiny", modality="text") == [
        m for m in mmenc.list_models("*-tiny") if m in mmenc.list_models(modality="text")]


def test_get_tokenizer(clip, clip_dir):
    tok = mmenc.get_tokenizer("clip-tiny")  # the text tokenizer, as open_clip
    ids = tok(TEXTS)
    assert torch.equal(ids.ids, clip.tokenizers["text"](TEXTS).ids)
    assert mmenc.get_tokenizer(clip, "image") is clip.tokenizers["image"]
    assert torch.equal(mmenc.get_tokenizer(clip_dir)(TEXTS).ids, ids.ids)
    with pytest.raises(UnknownNameError):
        mmenc.get_tokenizer("clip-tiny", "audio")


def test_dir_lists_the_lazy_exports():
    names = dir(mmenc)
    for name in ("create_model", "list_models", "get_tokenizer", "load", "Encoder",
                 "similarity", "build_zero_shot_classifier"):
        assert name in names
        assert getattr(mmenc, name) is not None


# -- zero-shot classifier ----------------------------------------------------------------------
def test_zero_shot_classifier_in_open_clip_order(clip):
    classes = ["gradient", "checkerboard", "solid colour", "transparent"]
    templates = [lambda c: f"a photo of a {c}.", lambda c: f"a {c} pattern"]
    ours = mmenc.build_zero_shot_classifier(clip, classes, templates)
    theirs = mmenc.build_zero_shot_classifier(clip, mmenc.get_tokenizer("clip-tiny"), classes,
                                              templates, num_classes_per_batch=2)
    assert theirs.shape == (32, 4) and torch.allclose(ours, theirs, atol=1e-5)
    with pytest.raises(ValueError, match="own tokenizer"):
        mmenc.build_zero_shot_classifier(clip, object(), classes, templates)


def test_single_item_kinds():
    from pathlib import Path

    from mmenc.conventions import is_single_item

    for item in ("x", b"x", Path("a.png"), {"path": "a.png"}, np.zeros(8), torch.zeros(8),
                 (np.zeros(8), 16000), example_images()[0]):
        assert is_single_item(item), type(item)
    for batch in (["x"], ("a", "b"), [np.zeros(8)], (np.zeros(8), np.zeros(8))):
        assert not is_single_item(batch)


def test_a_failing_build_keeps_its_own_error_unless_a_key_is_misspelt():
    # a nested option the recipe's tokenizer reads from a copy is not reported as unknown
    with pytest.raises(ValueError, match="relative position table"):
        mmenc.create_model("midibert-cp-tiny", tokenizers={"midi": {"max_len": 100}})
    with pytest.raises(ConfigError, match="did you mean 'max_len'"):
        mmenc.create_model("midibert-cp-tiny", tokenizers={"midi": {"max_lenn": 100}})
