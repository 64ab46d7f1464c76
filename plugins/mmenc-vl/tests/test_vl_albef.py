"""ALBEF: the shared official fixture, fixtures of other sizes built here from timm / HF BERT,
perturbed checkpoints (the momentum copy in place of the online encoder included), what the
converter keeps for continued pre-training, downstream key names, and ITM re-ranking."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mmenc
import pytest
import torch
from click.testing import CliRunner
from mmenc.cli import main
from mmenc.errors import CheckpointError
from mmenc.parity import run_parity
from mmenc.retrieval.evaluate import evaluate_retrieval
from safetensors.torch import load_file

pytest.importorskip("transformers")
pytest.importorskip("timm")
from vl_albef_fixture import make_albef_fixture  # noqa: E402

SHARED = Path(__file__).resolve().parents[4] / "shared" / "parity"
OFFICIAL = SHARED / "albef" / "small"
ALL_OUTPUTS = {"image_embeds", "image_feat", "text_embeds", "text_feat", "fusion_embeds",
               "itm_logits", "multi_modal_embeds", "sim_i2t", "image_embeds_m",
               "image_embeds_hires", "pos_embed_interpolated"}


@pytest.fixture(scope="module")
def small_fixture(tmp_path_factory):
    return make_albef_fixture(tmp_path_factory.mktemp("albef") / "fx", seed=1)


def test_official_small_fixture_passes():
    if not OFFICIAL.is_dir():
        pytest.skip(f"{OFFICIAL} is not present")
    result = CliRunner().invoke(main, ["parity", str(OFFICIAL), "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 0, result.output
    assert report["passed"]
    assert set(report["outputs"]) == ALL_OUTPUTS
    assert max(report["outputs"].values()) <= 1e-5


@pytest.mark.parametrize("seed,sizes", [
    (1, {}),
    (2, {"vit_dim": 64, "vit_heads": 2, "vit_depth": 3, "image_size": 48, "patch": 16,
         "text_dim": 48, "text_heads": 3, "layers": 4, "fusion_layer": 2, "embed_dim": 24}),
])
def test_parity_passes_for_any_size(tmp_path, small_fixture, seed, sizes):
    fx = small_fixture if seed == 1 else make_albef_fixture(tmp_path / "fx", seed, **sizes)
    report = run_parity(fx)
    assert report.passed, report.problems
    assert set(report.outputs) == ALL_OUTPUTS
    assert max(report.outputs.values()) <= 1e-5


def _edit(fx: Path, tmp_path: Path, change) -> Path:
    out = tmp_path / "edited"
    shutil.copytree(fx, out)
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    change(ckpt["model"])
    torch.save(ckpt, out / "checkpoint.pth")
    return out


def _noise(t: torch.Tensor) -> torch.Tensor:
    return t + 1e-3 * torch.randn(t.shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("key,broken,intact", [
    ("text_encoder.bert.encoder.layer.2.crossattention.self.value.bias",
     {"fusion_embeds", "itm_logits"}, {"text_embeds", "image_embeds", "sim_i2t"}),
    ("text_encoder.bert.encoder.layer.0.output.LayerNorm.weight",
     {"text_embeds", "text_feat", "fusion_embeds"}, {"image_embeds", "image_embeds_m"}),
    ("visual_encoder.norm.bias", {"image_embeds", "image_embeds_hires", "fusion_embeds"},
     {"text_embeds", "image_embeds_m"}),
    ("visual_encoder.pos_embed", {"image_embeds", "pos_embed_interpolated"}, {"text_embeds"}),
    ("visual_encoder_m.blocks.0.attn.proj.bias", {"image_embeds_m"}, {"image_embeds"}),
    ("vision_proj.bias", {"image_feat", "sim_i2t"}, {"image_embeds", "itm_logits"}),
])
def test_perturbed_checkpoint_fails(tmp_path, small_fixture, key, broken, intact):
    fx = _edit(small_fixture, tmp_path, lambda sd: sd.__setitem__(key, _noise(sd[key])))
    report = run_parity(fx)
    assert not report.passed
    assert broken <= set(report.problems), report.problems
    assert not intact & set(report.problems)


def test_momentum_copy_in_place_of_the_online_encoder_fails(tmp_path, small_fixture):
    def swap(sd):
        for k in [k for k in sd if k.startswith("visual_encoder.")]:
            m = "visual_encoder_m." + k[len("visual_encoder."):]
            sd[k], sd[m] = sd[m], sd[k]

    report = run_parity(_edit(small_fixture, tmp_path, swap))
    assert {"image_embeds", "image_embeds_m", "image_feat"} <= set(report.problems)
    assert "text_embeds" not in report.problems


def test_pretraining_state_is_kept(small_fixture):
    sd = torch.load(small_fixture / "checkpoint.pth", weights_only=True)["model"]
    model = mmenc.convert("albef", small_fixture / "checkpoint.pth", text_heads=4,
                          vision_heads=3, fusion_layer=1)
    assert model.pretraining
    assert torch.equal(model.image_queue, sd["image_queue"])
    assert torch.equal(model.text_queue, sd["text_queue"])
    assert int(model.queue_ptr) == int(sd["queue_ptr"])
    assert float(model.temp.detach()) == pytest.approx(float(sd["temp"]))
    own = model.state_dict()
    assert torch.equal(own["momentum.proj.text.weight"], sd["text_proj_m.weight"])
    assert torch.equal(own["momentum.towers.image.embeddings.cls_token"],
                       sd["visual_encoder_m.cls_token"])
    assert torch.equal(own["momentum.fusion.trunk.layers.0.cross_norm.bias"],
                       sd["text_encoder_m.bert.encoder.layer.1.crossattention.output.LayerNorm.bias"])
    assert torch.equal(own["mlm_head.bias"], sd["text_encoder.cls.predictions.bias"])
    assert torch.equal(own["momentum.mlm_head.dense.weight"],
                       sd["text_encoder_m.cls.predictions.transform.dense.weight"])
    assert not any(p.requires_grad for p in model.momentum.parameters())
    # the MLM decoder is tied to the online word embeddings
    hidden = torch.randn(1, 2, 32)
    logits = model.mlm_head(hidden, model.towers["text"].embeddings.word.weight)
    assert logits.shape == (1, 2, sd["text_encoder.cls.predictions.bias"].shape[0])


def test_downstream_key_names_and_roundtrip(tmp_path, small_fixture):
    sd = torch.load(small_fixture / "checkpoint.pth", weights_only=True)["model"]
    downstream = {}
    for k, v in sd.items():
        if k.startswith(("text_encoder.cls.", "text_encoder_m.cls.")):
            continue
        downstream[k.replace("text_encoder.bert.", "text_encoder.")
                   .replace("text_encoder_m.bert.", "text_encoder_m.")] = v
    torch.save({"model": downstream}, tmp_path / "retrieval.pth")
    opts = {"text_heads": 4, "vision_heads": 3, "fusion_layer": 1}
    a = mmenc.convert("albef", tmp_path / "retrieval.pth", **opts)
    b = mmenc.convert("albef", small_fixture / "checkpoint.pth", **opts)
    assert not a.pretraining and a.itm_head is not None  # kept for re-ranking
    assert torch.equal(a.itm_head.weight, sd["itm_head.weight"])
    sb = b.state_dict()
    for k, v in a.state_dict().items():
        assert torch.equal(v, sb[k]), k

    b.save_pretrained(tmp_path / "saved")
    c = mmenc.load(tmp_path / "saved").eval()
    sc = c.state_dict()
    assert sc.keys() == sb.keys() and all(torch.equal(sc[k], sb[k]) for k in sb)

    downstream["text_encoder.mystery.weight"] = torch.ones(2)
    torch.save({"model": downstream}, tmp_path / "retrieval.pth")
    with pytest.raises(CheckpointError, match="mystery"):
        mmenc.convert("albef", tmp_path / "retrieval.pth", **opts)


def test_match_scores_rerank_retrieval():
    from mmenc.builtin.image import example_images

    torch.manual_seed(0)
    model = mmenc.create_model("albef-tiny", pretraining=True).eval()
    images = example_images()[:3]
    texts = ["a red square", "green gradient", "blue circle"][: len(images)]
    scores = model.match_scores(texts, images, a_modality="text", b_modality="image")
    assert scores.shape == (len(images),)
    assert ((scores > 0) & (scores < 1)).all()
    # pairs are scored independently: reversing the pairs reverses the scores
    flipped = model.match_scores(texts[::-1], images[::-1], a_modality="text",
                                 b_modality="image")
    assert torch.allclose(flipped, scores.flip(0), atol=1e-5)
    same = model.match_scores(images, texts, a_modality="image", b_modality="text")
    assert torch.allclose(same, scores, atol=1e-6)
    with torch.no_grad():
        logits = model.itm_logits(model.tokenize(texts, "text"), model.tokenize(images, "image"))
    assert torch.allclose(logits.softmax(-1)[:, 1], scores, atol=1e-6)

    pairs = list(zip(texts, images, strict=True))
    report = evaluate_retrieval(model, pairs, "text", "image", rerank=2,
                                echo=lambda *a, **k: None)
    assert report["rerank"]["status"] == "done"
    assert set(report["metrics_rerank"]) == {"text->image", "image->text"}
    with pytest.raises(ValueError, match="pairs"):
        model.match_scores(texts, images[:1], a_modality="text", b_modality="image")


def test_no_itm_head_is_a_clear_error():
    model = mmenc.create_model("albef-tiny").eval()
    with pytest.raises(ValueError, match="no ITM head"):
        model.match_scores(["a"], [mmenc_image()], a_modality="text", b_modality="image")


def mmenc_image():
    from mmenc.builtin.image import example_images

    return example_images()[0]


def test_reference_outputs_are_what_the_fixture_says(small_fixture):
    refs = load_file(str(small_fixture / "reference_outputs.safetensors"))
    assert set(refs) == ALL_OUTPUTS
    assert torch.equal(refs["fusion_embeds"], refs["multi_modal_embeds"])
    assert refs["image_embeds_hires"].shape[1] == refs["pos_embed_interpolated"].shape[1]


def test_pretraining_step_updates_momentum_and_queues():
    from mmenc.builtin.image import example_images

    torch.manual_seed(0)
    model = mmenc.create_model("albef-tiny", pretraining=True, queue_size=6).train()
    for module in model.modules():  # deterministic forward for the checks below
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    images = example_images()[:4]
    texts = ["a red square on white", "green gradient", "blue circle", "yellow noise"]
    text, image = model.tokenize(texts, "text"), model.tokenize(images, "image")
    online = model.proj["image"].weight.detach().clone()
    teacher = model.momentum["proj"]["image"].weight.detach().clone()
    loss, logs = model.pretraining_losses(text, image, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and logs["loss_itc"] > 0 and logs["loss_itm"] > 0
    assert logs["loss"] == pytest.approx(logs["loss_itc"] + logs["loss_itm"] + logs["loss_mlm"],
                                         rel=1e-5)
    # momentum copies moved 0.5% of the way to the online weights
    assert torch.allclose(model.momentum["proj"]["image"].weight,
                          0.995 * teacher + 0.005 * online, atol=1e-7)
    # the queue holds the momentum features of this batch, wrapping around its 6 columns
    with torch.no_grad():
        feats_m = model.momentum_embed(image, "image")
    assert int(model.queue_ptr) == 4
    assert torch.allclose(model.image_queue[:, :4].T, feats_m, atol=1e-6)
    loss.backward()
    for name in ("itm_head.weight", "mlm_head.dense.weight", "temp", "proj.text.weight",
                 "fusion.trunk.layers.0.cross_attn.kv.weight",
                 "towers.image.trunk.layers.0.attn.qkv.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.momentum.parameters())
    model.pretraining_losses(text, image)
    assert int(model.queue_ptr) == 2  # (4 + 4) % 6
    with pytest.raises(ValueError, match="pre-training state"):
        mmenc.create_model("albef-tiny").pretraining_losses(text, image)
