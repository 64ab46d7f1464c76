"""The BEATs recipes on the shared trunk: mmenc's contract checks, the front end's patch order and
padding masks, and the tokenizer path against the official waveform path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mmenc
from mmenc.nn import Trunk
from mmenc.testing import MODEL_CHECKS, check_modality, check_name, check_objective, check_tokenizer
from mmenc_audio.audio import example_audio, load_audio
from mmenc_audio.frontend import official_padding_mask, preprocess, to_patches


@pytest.mark.parametrize("recipe", ["beats-tiny", "beats-tokenizer-tiny", "audio-text-tiny"])
@pytest.mark.parametrize("check", MODEL_CHECKS, ids=check_name)
def test_model_contract(check, recipe) -> None:
    check(mmenc.catalogue().get("model", recipe))


def test_component_contracts() -> None:
    cat = mmenc.catalogue()
    check_modality(cat.get("modality", "audio"))
    check_tokenizer(cat.get("tokenizer", "audio-fbank"))
    for name in ("masked-acoustic-labels", "tokenizer-distillation"):
        check_objective(cat.get("objective", name))


def test_base_recipe_has_the_published_shape() -> None:
    model = mmenc.create_model("beats-base")
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 90.4e6) < 0.2e6  # BEATs iter3: 90.4 M
    trunk = model.config["trunk"]
    assert (trunk["norm"], trunk["relative"], trunk["conv_pos"], trunk["num_buckets"]) == \
        ("deepnorm", "gated", 128, 320)
    assert isinstance(model.trunk, Trunk) and model.trunk.final_norm is None


def test_patches_follow_the_conv2d_time_major_order() -> None:
    feats = torch.randn(2, 50, 128)
    weight = torch.randn(5, 1, 16, 16)
    conv = F.conv2d(feats[:, None], weight, stride=16).flatten(2).transpose(1, 2)  # [b n e]
    ours = F.linear(to_patches(feats), weight.flatten(1))
    assert ours.shape == (2, 24, 5)
    assert torch.allclose(ours, conv, atol=1e-4)


def test_official_padding_mask_trims_and_groups() -> None:
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, 5:] = True
    # 10 % 4 = 2 dropped, then pairs: [0,1] [2,3] [4,5] [6,7] -> padded only when both are
    assert official_padding_mask(mask, 4).tolist() == [[False, False, False, True]]
    assert official_padding_mask(mask, 5).tolist() == [[False, False, False, True, True]]


def test_tokenizer_path_matches_the_waveform_path_on_unpadded_clips() -> None:
    torch.manual_seed(0)
    model = mmenc.create_model("beats-tiny").eval()
    clip = load_audio(example_audio()[0])
    batch = model.tokenize([clip], "audio")
    with torch.no_grad():
        f = model.forward_features(batch, "audio", output_hidden_states=True)
        o = model.extract_features(torch.from_numpy(clip)[None], output_hidden_states=True)
    assert torch.allclose(f.hidden, o.hidden, atol=1e-5)
    assert len(f.hidden_states) == len(o.hidden_states) == 3
    assert torch.equal(preprocess(torch.from_numpy(clip)[None]), o.fbank)


def test_a_clips_tokens_do_not_depend_on_its_batch() -> None:
    torch.manual_seed(0)
    model = mmenc.create_model("beats-tiny").eval()
    clips = example_audio()
    alone = model.encode(clips[3:4], "audio")
    together = model.encode(clips, "audio")
    assert torch.allclose(alone[0], together[3], atol=1e-5)


def test_classifier_and_labels_heads() -> None:
    torch.manual_seed(0)
    model = mmenc.create_model("beats-tiny", num_classes=5).eval()
    batch = model.tokenize(example_audio(), "audio")
    with torch.no_grad():
        probs = model.classify(batch)
    assert probs.shape == (4, 5) and bool(((probs > 0) & (probs < 1)).all())
    tok = mmenc.create_model("beats-tokenizer-tiny").eval()
    with torch.no_grad():
        labels = tok.labels(batch)
    assert labels.shape == batch.mask.shape
    assert bool((labels[~batch.mask] == -1).all()) and bool((labels[batch.mask] >= 0).all())
    assert int(labels.max()) < 32
    with pytest.raises(ValueError, match="no classifier head"):
        tok.classify(batch)
    with pytest.raises(ValueError, match="no acoustic quantiser"):
        model.labels(batch)


def test_saved_model_rebuilds(tmp_path) -> None:
    model = mmenc.create_model("beats-tiny", tokenizers={"audio": {"max_seconds": 2.0}})
    model.save_pretrained(tmp_path)
    loaded = mmenc.load(tmp_path)
    assert loaded.tokenizers["audio"].max_seconds == 2.0
    clips = [np.full(5000, 0.05, dtype=np.float32)]
    assert torch.equal(model.encode(clips, "audio"), loaded.encode(clips, "audio"))
