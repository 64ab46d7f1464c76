"""ALBEF started from pretrained towers: the text encoder and fusion layers from one BERT-style
text tower (lower layers -> text, upper layers -> fusion self-attention and FFN, fresh
cross-attention), the image tower from another model, and the distillation weight's ramp."""

from __future__ import annotations

import copy
from pathlib import Path

import mmenc
import pytest
import torch
from mmenc.builtin.recipes import text_tower, vision_tower
from mmenc.errors import ConfigError
from mmenc.train.config import ModelConfig
from mmenc.train.loop import build_model

from mmenc_vl.objectives import VisionTextPretraining, alpha_ramp
from mmenc_vl.recipes import albef_config, vit_tower

# the special tokens away from BERT's ids (0, 101, 103), so that taking them is visible
VOCAB = ["[UNK]", "[PAD]", "[SEP]", "[CLS]", "a", "[MASK]", "red", "blue", "green", "square",
         "circle", "face", "cat", "dog", "heart", "star"]


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return path


def wordpiece(vocab, max_length=12):
    return {"tokenizer": "text", "kind": "wordpiece", "vocab": str(vocab),
            "max_length": max_length}


@pytest.fixture(scope="module")
def text_source(vocab, tmp_path_factory):
    """A saved 4-layer BERT-style text encoder (post-norm, two token types, a pooler)."""
    tower = {**text_tower(32, 4, 2, 64, vocab_size=len(VOCAB), max_length=30, pad_id=1,
                          eps=1e-12, pooler=True),
             "padding_aware_positions": False, "type_vocab_size": 2}
    model = mmenc.create_model("text-tiny", towers={"text": tower},
                               tokenizers={"text": wordpiece(vocab, 30)})
    with torch.no_grad():  # not the values a fresh model would have
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("source") / "bert"
    model.save_pretrained(folder)
    return folder


def albef_overrides(vocab, text_layers=2, fusion_layers=2, vision_dim=48):
    return albef_config(text_layers, fusion_layers, 32, 2, 64,
                        vit_tower(vision_dim, 2, 2, 2 * vision_dim, 32, 8), 16,
                        vocab_size=len(VOCAB), max_length=12, text_tok=wordpiece(vocab),
                        queue_size=8)


def test_text_layers_are_the_sources_lower_layers_and_fusion_its_upper(vocab, text_source):
    torch.manual_seed(0)
    fresh = mmenc.create_model("albef-tiny", **albef_overrides(vocab))
    torch.manual_seed(0)
    model = build_model(ModelConfig("albef-tiny", albef_overrides(vocab),
                                    warm_start={"text": str(text_source)}))
    source = mmenc.load(text_source).towers["text"].state_dict()
    text = model.towers["text"].state_dict()
    for i in range(2):
        for key, value in source.items():
            if key.startswith(f"trunk.layers.{i}."):
                assert torch.equal(text[key], value), key
    for key in ("embeddings.word.weight", "embeddings.token_type.weight",
                "embeddings.norm.weight", "embeddings.norm.bias"):
        assert torch.equal(text[key], source[key]), key
    rows = text["embeddings.position.weight"].shape[0]
    assert rows == 14 < source["embeddings.position.weight"].shape[0]
    assert torch.equal(text["embeddings.position.weight"],
                       source["embeddings.position.weight"][:rows])

    fused = model.fusion.trunk.layers
    before = fresh.fusion.trunk.layers
    for j in range(2):
        layer = fused[j].state_dict()
        shared = [k for k in layer if not k.startswith(("cross_attn.", "cross_norm."))]
        cross = [k for k in layer if k.startswith(("cross_attn.", "cross_norm."))]
        assert shared and cross
        for key in shared:  # self-attention, FFN and their norms: source layer 2 + j
            assert torch.equal(layer[key], source[f"trunk.layers.{2 + j}.{key}"]), key
        for key in cross:  # BERT has no cross-attention: as freshly initialised
            assert torch.equal(layer[key], before[j].state_dict()[key]), key
    # the momentum copies start equal to the warm-started encoders
    for (name, p), (_, m) in zip(model.towers["text"].named_parameters(),
                                 model.momentum["towers"]["text"].named_parameters(),
                                 strict=True):
        assert torch.equal(p, m), name
    assert torch.equal(model.fusion.trunk.layers[1].ffn.fc1.weight,
                       model.momentum["fusion"].trunk.layers[1].ffn.fc1.weight)


def test_the_sources_tokenizer_gives_the_special_ids(vocab, text_source, tmp_path):
    model = build_model(ModelConfig("albef-tiny", albef_overrides(vocab),
                                    warm_start={"text": str(text_source)}))
    ids = {VOCAB.index(t) for t in ("[PAD]", "[CLS]", "[MASK]")}
    assert {model.config[k] for k in ("pad_token_id", "cls_token_id", "mask_token_id")} == ids
    assert (model.config["pad_token_id"], model.config["mask_token_id"]) == (1, 5)
    batch = model.tokenize(["a red square", "cat"], "text")
    assert batch.ids[0].tolist() == [3, 4, 6, 9, 2]  # [CLS] a red square [SEP]
    assert batch.ids[1, -1] == 1  # padded with [PAD]
    model.save_pretrained(tmp_path / "albef")
    again = mmenc.load(tmp_path / "albef")
    assert again.config["mask_token_id"] == 5
    assert torch.equal(again.tokenize(["a red square"], "text").ids, batch.ids[:1])
    assert torch.equal(again.fusion.trunk.layers[0].attn.qkv.weight,
                       model.fusion.trunk.layers[0].attn.qkv.weight)


def test_a_split_that_does_not_add_up_or_other_widths_are_refused(vocab, text_source):
    with pytest.raises(ConfigError, match="4 layers but this ALBEF has 3 text"):
        build_model(ModelConfig("albef-tiny", albef_overrides(vocab, 3, 2),
                                warm_start={"text": str(text_source)}))
    wide = albef_overrides(vocab)
    wide["towers"]["text"]["trunk"]["ffn_dim"] = 96
    wide["fusion"]["ffn_dim"] = 96
    with pytest.raises(ConfigError, match=r"ffn.fc1.weight is \(96, 32\) here but \(64, 32\)"):
        build_model(ModelConfig("albef-tiny", wide, warm_start={"text": str(text_source)}))


def test_the_image_tower_comes_from_another_model(vocab, tmp_path):
    image = {"towers": {"image": vision_tower(48, 3, 2, 96, 32, 8)}}
    clip = mmenc.create_model("clip-tiny", **image)
    clip.save_pretrained(tmp_path / "clip")
    model = build_model(ModelConfig("albef-tiny", albef_overrides(vocab),
                                    warm_start={"image": str(tmp_path / "clip")}))
    assert len(model.towers["image"].trunk.layers) == 3
    for (name, p), q, m in zip(clip.towers["image"].named_parameters(),
                               model.towers["image"].parameters(),
                               model.momentum["towers"]["image"].parameters(), strict=True):
        assert torch.equal(p, q) and torch.equal(p, m), name
        assert q.requires_grad and not m.requires_grad
    model.save_pretrained(tmp_path / "albef")
    again = mmenc.load(tmp_path / "albef")
    assert torch.equal(again.towers["image"].trunk.layers[2].attn.qkv.weight,
                       clip.towers["image"].trunk.layers[2].attn.qkv.weight)
    narrow = copy.deepcopy(albef_overrides(vocab, vision_dim=64))
    with pytest.raises(ConfigError, match="48 wide, this ALBEF's 64"):
        build_model(ModelConfig("albef-tiny", narrow,
                                warm_start={"image": str(tmp_path / "clip")}))
    text_only = tmp_path / "text-only"
    mmenc.create_model("text-tiny").save_pretrained(text_only)
    with pytest.raises(ConfigError, match="no 'image' tower"):
        build_model(ModelConfig("albef-tiny", albef_overrides(vocab),
                                warm_start={"image": str(text_only)}))


def test_alpha_ramps_over_the_first_epoch_as_albefs_pretrain_loop():
    # ALBEF's Pretrain.py, epoch 0: alpha * min(1, i / len(data_loader)), i from 0
    assert [alpha_ramp(0.4, i, 4) for i in range(6)] == pytest.approx(
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.4])


class _Recorder(torch.nn.Module):
    pretraining, recipe = True, "recorder"

    def __init__(self):
        super().__init__()
        self.config = {"alpha": 0.4}
        self.alphas = []

    def pretraining_losses(self, text, image, alpha=None, generator=None):
        self.alphas.append(alpha)
        return torch.zeros(()), {}


def test_the_objective_ramps_alpha_per_training_step_and_resumes_the_ramp():
    model = _Recorder().train()
    objective = VisionTextPretraining(alpha_ramp_steps=4)
    for _ in range(3):
        objective(model, None, None)
    model.eval()
    objective(model, None, None)  # an evaluation call does not advance the ramp
    assert model.alphas == pytest.approx([0.0, 0.1, 0.2, 0.3])
    resumed = VisionTextPretraining(alpha_ramp_steps=4)
    resumed.load_state_dict(objective.state_dict())
    model.train()
    for _ in range(3):
        resumed(model, None, None)
    assert model.alphas[4:] == pytest.approx([0.3, 0.4, 0.4])
    capped = VisionTextPretraining(alpha=0.2, alpha_ramp_steps=2)
    for _ in range(3):
        capped(model, None, None)
    assert model.alphas[7:] == pytest.approx([0.0, 0.1, 0.2])
    plain = VisionTextPretraining()
    plain(model, None, None)
    assert model.alphas[-1] is None and "steps_done" not in plain.state_dict()
    with pytest.raises(ConfigError, match="alpha_ramp_steps"):
        VisionTextPretraining(alpha_ramp_steps=0)


def test_the_example_config_is_the_pairings_minilm_albef(vocab):
    import yaml
    from mmenc.factory import merge_config
    from mmenc.registry import catalogue
    from mmenc.train.config import load_config

    from mmenc_vl.pairing import albef_minilm

    root = Path(__file__).resolve().parents[3]
    example = yaml.safe_load((root / "examples" / "albef-minilm.yaml").read_text())
    defaults = catalogue().get("model", "albef-tiny").default_config()
    built = merge_config(defaults, example["model"]["overrides"])
    wanted = albef_minilm(vocab, 3)
    for key in ("towers", "fusion", "embed_dim", "pretraining", "queue_size", "init",
                "momentum", "alpha", "temp"):
        assert built[key] == wanted[key], key
    assert built["tokenizers"]["image"] == wanted["tokenizers"]["image"]
    assert built["tokenizers"]["text"]["max_length"] == 32
    config = load_config(example)  # every key known, the objective's ramp option included
    assert config.objectives[0].config == {"alpha_ramp_steps": 98}
    assert config.model.warm_start == {"text": "runs/minilm-l6"}


# -- BridgeTower -------------------------------------------------------------------------------
def bridgetower_overrides(vocab, text_depth=4, itc_start="sources", post_norm=()):
    from mmenc.builtin.recipes import image_tokenizer

    from mmenc_vl.recipes import bridge, bridgetower_config

    text = {**text_tower(32, text_depth, 2, 64, vocab_size=len(VOCAB), max_length=12, pad_id=1,
                         eps=1e-12),
            "padding_aware_positions": False, "type_vocab_size": 2}
    config = bridgetower_config(text, vision_tower(48, 2, 2, 96, 32, 8),
                                {**bridge(32, 2, 2, 64), "post_norm": list(post_norm)},
                                wordpiece(vocab), image_tokenizer(32), 32)
    config.update(pretraining=True, itm_head=True, itc_start=itc_start)
    return config


@pytest.fixture(scope="module")
def bound_source(text_source, tmp_path_factory):
    """A bound model whose hub is ``text_source``, with an image tower, a random projection
    and a random (orthogonal) rotation of the hub space."""
    from mmenc.bind.model import build_bound

    torch.manual_seed(3)
    image = {"recipe": "clip-tiny", "modality": "image",
             "overrides": {"towers": {"image": vision_tower(48, 2, 2, 96, 32, 8)}}}
    model = build_bound({"hub": {"name": "model", "path": str(text_source)}, "dims": [32],
                         "tower_specs": {"image": image}})
    with torch.no_grad():
        model.rotation.copy_(torch.linalg.qr(torch.randn(32, 32))[0])
    folder = tmp_path_factory.mktemp("bound") / "bound"
    model.save_pretrained(folder)
    return folder


def colour_images(tmp_path):
    from PIL import Image

    paths = []
    for i, rgb in enumerate([(220, 30, 30), (30, 200, 40), (30, 40, 220)]):
        img = Image.new("RGB", (32, 32), (128, 128, 128))
        img.paste(rgb, (4 + 4 * i, 4, 28, 28 - 4 * i))
        paths.append(str(tmp_path / f"{i}.png"))
        img.save(paths[-1])
    return paths


def test_bridgetower_starts_its_itc_as_the_bound_dual_encoder(vocab, text_source, bound_source,
                                                               tmp_path):
    model = build_model(ModelConfig("bridgetower-tiny", bridgetower_overrides(vocab),
                                    warm_start={"text": str(text_source),
                                                "image": str(bound_source)})).eval()
    bound = mmenc.load(bound_source).eval()
    texts = ["a red square", "green", "a blue circle face"]
    images = colour_images(tmp_path)
    with torch.no_grad():
        want = torch.nn.functional.normalize(bound.encode(images, "image"), dim=-1) \
            @ torch.nn.functional.normalize(bound.encode(texts, "text"), dim=-1).T
        got = torch.nn.functional.normalize(model.encode(images, "image"), dim=-1) \
            @ torch.nn.functional.normalize(model.encode(texts, "text"), dim=-1).T
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert (want - want.mean()).abs().max() > 1e-2  # the similarities are not all alike
    assert model.pooling["text"] == mmenc.load(text_source).pooling["text"]
    # the whole text tower is the source's; the tokenizer and its mask id too
    source = mmenc.load(text_source).towers["text"].state_dict()
    for key, value in model.towers["text"].state_dict().items():
        if key != "embeddings.position.weight":
            assert torch.equal(value, source[key]), key
    assert model.config["mask_token_id"] == VOCAB.index("[MASK]")
    # pre-training runs from there; the saved model reloads the same ITC
    model.train()
    batch_text = model.tokenize(texts, "text")
    loss, logs = model.pretraining_losses(batch_text, model.tokenize(images, "image"),
                                          generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and logs["loss_mlm"] > 0
    model.eval().save_pretrained(tmp_path / "bt")
    again = mmenc.load(tmp_path / "bt").eval()
    with torch.no_grad():
        torch.testing.assert_close(again.encode(images, "image"), model.encode(images, "image"))
    assert again.config["itc_start"] == "sources" and again.pooling["text"] == model.pooling["text"]


def test_bridgetower_fresh_itc_keeps_its_own_transform(vocab, text_source, bound_source):
    torch.manual_seed(0)
    fresh = mmenc.create_model("bridgetower-tiny",
                               **bridgetower_overrides(vocab, itc_start="fresh"))
    torch.manual_seed(0)
    model = build_model(ModelConfig("bridgetower-tiny",
                                    bridgetower_overrides(vocab, itc_start="fresh"),
                                    warm_start={"text": str(text_source),
                                                "image": str(bound_source)}))
    for m in ("text", "image"):
        assert torch.equal(model.fusion.transform[m].weight, fresh.fusion.transform[m].weight)
        assert torch.equal(model.proj[m].weight, fresh.proj[m].weight)
    clip = mmenc.load(bound_source).towers["image"].encoder.towers["image"]
    for (name, p), q in zip(clip.named_parameters(), model.towers["image"].parameters(),
                            strict=True):
        assert torch.equal(p, q), name


def test_bridgetower_warm_starts_that_cannot_hold_are_config_errors(vocab, text_source,
                                                                    bound_source):
    with pytest.raises(ConfigError, match="has 4 layers, this BridgeTower's text tower 3"):
        build_model(ModelConfig("bridgetower-tiny", bridgetower_overrides(vocab, text_depth=3),
                                warm_start={"text": str(text_source)}))
    with pytest.raises(ConfigError, match="remove 'image' from fusion.post_norm"):
        build_model(ModelConfig("bridgetower-tiny",
                                bridgetower_overrides(vocab, post_norm=("image",)),
                                warm_start={"image": str(bound_source)}))
    with pytest.raises(ConfigError, match="config.itc_start"):
        mmenc.create_model("bridgetower-tiny", **bridgetower_overrides(vocab, itc_start="warm"))


def test_the_example_config_is_the_pairings_minilm_bridgetower(vocab):
    import yaml
    from mmenc.factory import merge_config
    from mmenc.registry import catalogue
    from mmenc.train.config import load_config

    from mmenc_vl.pairing import bridgetower_minilm

    root = Path(__file__).resolve().parents[3]
    example = yaml.safe_load((root / "examples" / "bridgetower-minilm.yaml").read_text())
    defaults = catalogue().get("model", "bridgetower-tiny").default_config()
    built = merge_config(defaults, example["model"]["overrides"])
    wanted = bridgetower_minilm(vocab, itc_start="sources")
    for key in ("towers", "fusion", "embed_dim", "pretraining", "itm_head", "init", "pooling",
                "itc_start", "temp"):
        assert built.get(key) == wanted.get(key), key
    assert built["tokenizers"]["image"] == wanted["tokenizers"]["image"]
    assert built["tokenizers"]["text"]["max_length"] == 32
    config = load_config(example)
    assert set(config.model.warm_start) == {"text", "image"}
    assert (config.steps, config.batch_size, config.optim.lr) == (150, 32, 1e-4)
