"""BridgeTower: the shared official fixture, fixtures of other sizes and seeds built here from HF
BridgeTowerModel, perturbed checkpoints, the research repo's Lightning container, round trips
and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mmenc
import pytest
import torch
from click.testing import CliRunner
from mmenc.batch import TokenBatch
from mmenc.cli import main
from mmenc.errors import CheckpointError
from mmenc.parity import run_parity
from safetensors.torch import load_file

pytest.importorskip("transformers")
from vl_bridgetower_fixture import make_bridgetower_fixture  # noqa: E402

SHARED = Path(__file__).resolve().parents[4] / "shared" / "parity"
OFFICIAL = SHARED / "bridgetower" / "small"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def small_fixture(tmp_path_factory):
    return make_bridgetower_fixture(tmp_path_factory.mktemp("bt") / "fx", seed=3)


def test_official_small_fixture_passes():
    if not OFFICIAL.is_dir():
        pytest.skip(f"{OFFICIAL} is not present")
    code, out = run("parity", str(OFFICIAL), "--json")
    report = json.loads(out)
    assert code == 0, out
    assert report["passed"]
    names = set(load_file(str(OFFICIAL / "reference_outputs.safetensors")))
    assert set(report["outputs"]) == names
    assert {"text_features", "image_features", "pooler_output", "hidden_text_04",
            "hidden_image_04", "cross_text_02", "cross_image_02"} <= names
    assert max(report["outputs"].values()) <= 1e-5


def test_hf_reference_reproduces_the_shared_fixture():
    """The reference used for other sizes (installed transformers) agrees with the fixture's."""
    from transformers import BridgeTowerModel

    if not OFFICIAL.is_dir():
        pytest.skip(f"{OFFICIAL} is not present")
    model = BridgeTowerModel.from_pretrained(OFFICIAL / "checkpoint").eval()
    inputs = load_file(str(OFFICIAL / "inputs.safetensors"))
    refs = load_file(str(OFFICIAL / "reference_outputs.safetensors"))
    with torch.no_grad():
        out = model(**inputs)
    for name in ("text_features", "image_features", "pooler_output"):
        assert (getattr(out, name) - refs[name]).abs().max() <= 1e-6


@pytest.mark.parametrize("seed,sizes", [
    (3, {}),
    (7, {"text_hidden": 32, "text_layers": 2, "text_heads": 4, "text_ffn": 48,
         "vision_hidden": 128, "vision_layers": 2, "cross_layers": 2, "image_size": 32,
         "patch": 8}),
    (11, {"text_hidden": 40, "text_layers": 4, "text_heads": 5, "text_ffn": 80,
          "vision_hidden": 64, "vision_layers": 4, "cross_layers": 1, "image_size": 64}),
])
def test_parity_passes_for_any_size(tmp_path, small_fixture, seed, sizes):
    fx = small_fixture if seed == 3 else make_bridgetower_fixture(tmp_path / "fx", seed, **sizes)
    report = run_parity(fx)
    assert report.passed, report.problems
    refs = load_file(str(fx / "reference_outputs.safetensors"))
    assert set(report.outputs) == set(refs)
    cross = sizes.get("cross_layers", 2)
    assert f"cross_image_{cross - 1:02d}" in refs and f"cross_image_{cross:02d}" not in refs
    assert max(report.outputs.values()) <= 1e-5


@pytest.mark.parametrize("key,broken,intact", [
    ("cross_modal_image_layers.1.crossattention.self.value.bias",
     {"image_features", "cross_image_01"}, {"cross_image_00", "cross_text_01", "hidden_text_03"}),
    ("cross_modal_text_link_tower.0.LayerNorm.weight",
     {"cross_text_01", "text_features", "pooler_output"}, {"cross_text_00", "hidden_text_03"}),
    ("vision_model.visual.ln_post.bias",
     {"cross_image_00", "cross_text_00"}, {"hidden_image_03", "hidden_text_03"}),
    ("cross_modal_text_pooler.dense.bias", {"pooler_output"}, {"text_features"}),
    ("text_model.encoder.layer.2.output.LayerNorm.bias",
     {"hidden_text_03", "cross_text_01"}, {"hidden_text_02", "hidden_image_03"}),
])
def test_perturbed_checkpoint_fails(tmp_path, small_fixture, key, broken, intact):
    fx = tmp_path / "fx"
    shutil.copytree(small_fixture, fx)
    weights = fx / "checkpoint" / "pytorch_model.bin"
    sd = torch.load(weights, weights_only=True)
    sd[key] = sd[key] + 1e-3 * torch.randn(sd[key].shape,
                                           generator=torch.Generator().manual_seed(0))
    torch.save(sd, weights)
    report = run_parity(fx)
    assert not report.passed
    assert broken <= set(report.problems), report.problems
    assert not intact & set(report.problems)


def test_swapped_query_key_fails(tmp_path, small_fixture):
    fx = tmp_path / "fx"
    shutil.copytree(small_fixture, fx)
    weights = fx / "checkpoint" / "pytorch_model.bin"
    sd = torch.load(weights, weights_only=True)
    p = "cross_modal_text_layers.0.crossattention.self."
    sd[p + "key.weight"], sd[p + "value.weight"] = sd[p + "value.weight"], sd[p + "key.weight"]
    torch.save(sd, weights)
    report = run_parity(fx)
    assert "cross_text_00" in report.problems and "cross_image_00" not in report.problems


def _to_lightning(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF key names -> the research repo's (METER-style Lightning module) names."""
    out = {}
    v = "vision_model.visual."
    for k, t in sd.items():
        if k.endswith("position_ids"):
            continue
        if k.startswith("text_model."):
            k = "text_transformer." + k[len("text_model."):]
        elif k == v + "embeddings.patch_embedding.weight":
            k = "vit_model.visual.conv1.weight"
        elif k == v + "embeddings.class_embedding":
            k = "vit_model.visual.class_embedding"
        elif k == v + "embeddings.position_embedding.weight":
            k = "vit_model.visual.positional_embedding"
        elif k.startswith(v):
            k = "vit_model.visual." + k[len(v):]
        out[k] = t
    return out


def test_lightning_ckpt_matches_hf_folder(tmp_path, small_fixture):
    sd = torch.load(small_fixture / "checkpoint" / "pytorch_model.bin", weights_only=True)
    lightning = _to_lightning(sd)
    lightning["itm_score.fc.weight"] = torch.randn(2, 96)  # ITM head over pooler_output: kept
    lightning["itm_score.fc.bias"] = torch.randn(2)
    lightning["mlm_score.bias"] = torch.zeros(300)  # an MLM head without decoder: left out
    lightning["vit_model.ln_final.weight"] = torch.ones(48)  # CLIP text leftovers too
    ckpt = tmp_path / "epoch=9.ckpt"
    torch.save({"epoch": 9, "state_dict": lightning}, ckpt)
    with pytest.raises(CheckpointError, match="config"):
        mmenc.convert("bridgetower", ckpt)
    a = mmenc.convert("bridgetower", ckpt, config=small_fixture / "checkpoint")
    b = mmenc.convert("bridgetower", small_fixture / "checkpoint")
    sa, sb = a.state_dict(), b.state_dict()
    assert torch.equal(sa.pop("itm_head.weight"), lightning["itm_score.fc.weight"])
    assert torch.equal(sa.pop("itm_head.bias"), lightning["itm_score.fc.bias"])
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    lightning["cross_modal_text_mystery.weight"] = torch.ones(3)
    torch.save({"state_dict": lightning}, ckpt)
    with pytest.raises(CheckpointError, match="cross_modal_text_mystery"):
        mmenc.convert("bridgetower", ckpt, config=small_fixture / "checkpoint")


def test_convert_cli_save_load_roundtrip(tmp_path, small_fixture):
    out = tmp_path / "converted"
    code, text = run("convert", "--from", "bridgetower", str(small_fixture / "checkpoint"),
                     str(out))
    assert code == 0, text
    model = mmenc.load(out).eval()
    assert model.recipe == "bridgetower-base"
    inputs = load_file(str(small_fixture / "inputs.safetensors"))
    refs = load_file(str(small_fixture / "reference_outputs.safetensors"))
    text_batch = TokenBatch(ids=inputs["input_ids"], mask=inputs["attention_mask"].bool(),
                            pad_id=1)
    image_batch = TokenBatch(values=inputs["pixel_values"])
    with torch.no_grad():
        pooled = model.pooler_output(text_batch, image_batch)
        emb = model.embed(image_batch, "image")
        fused_alone = model.forward_fused({"text": text_batch.select(torch.tensor([2])),
                                           "image": image_batch.select(torch.tensor([2]))})
    assert (pooled - refs["pooler_output"]).abs().max() <= 1e-5
    assert emb.shape == (3, 48)
    # padding of the other items in the batch does not change an item's fused states
    n = int(inputs["attention_mask"][2].sum())
    assert (fused_alone["text"].hidden[0, :n] - refs["text_features"][2, :n]).abs().max() <= 1e-5


def test_unsupported_variants_are_refused(tmp_path, small_fixture):
    for change in ({"share_link_tower_layers": True}, {"link_tower_type": "interpolate"}):
        folder = tmp_path / next(iter(change))
        shutil.copytree(small_fixture / "checkpoint", folder)
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(change)
        (folder / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(CheckpointError, match=next(iter(change))):
            mmenc.convert("bridgetower", folder)


def _hf_task_model(cls_name, seed, folder, small_fixture):
    """An HF BridgeTowerFor* model at small_fixture's sizes, randomised and saved as an HF
    folder; returns the model, its reference logits on the fixture's inputs, and those inputs
    as mmenc batches."""
    import transformers
    from vl_bridgetower_fixture import hf_config, randomize

    config = hf_config()
    hf = getattr(transformers, cls_name)(config).eval()
    randomize(hf, seed)
    folder.mkdir()
    (folder / "config.json").write_text(config.to_json_string())
    torch.save(hf.state_dict(), folder / "pytorch_model.bin")
    inputs = load_file(str(small_fixture / "inputs.safetensors"))
    with torch.no_grad():
        ref = hf(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                 pixel_values=inputs["pixel_values"]).logits
    batches = (TokenBatch(ids=inputs["input_ids"], mask=inputs["attention_mask"].bool(),
                          pad_id=1),
               TokenBatch(values=inputs["pixel_values"]))
    return hf, ref, batches


def test_itm_head_matches_hf_retrieval_model(tmp_path, small_fixture):
    folder = tmp_path / "itm"
    _, ref, (text, image) = _hf_task_model("BridgeTowerForImageAndTextRetrieval", 5, folder,
                                           small_fixture)
    with torch.no_grad():
        got = mmenc.convert("bridgetower", folder).itm_logits(text, image)
    assert (got - ref).abs().max() <= 1e-5
    assert mmenc.convert("bridgetower", small_fixture / "checkpoint").itm_head is None


def test_mlm_head_matches_hf_masked_lm_model(tmp_path, small_fixture):
    folder = tmp_path / "mlm"
    hf, ref, (text, image) = _hf_task_model("BridgeTowerForMaskedLM", 6, folder, small_fixture)
    with torch.no_grad():
        model = mmenc.convert("bridgetower", folder)
        got = model.mlm_logits(text, image)
    assert model.itm_head is None and model.mlm_head is not None
    assert (got - ref).abs().max() <= 1e-5
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    state["mlm_score.transform.LayerNorm.bias"] += 0.1
    torch.save(state, folder / "pytorch_model.bin")
    with torch.no_grad():
        broken = mmenc.convert("bridgetower", folder).mlm_logits(text, image)
    assert (broken - ref).abs().max() > 1e-3


def test_match_scores_and_rerank():
    from mmenc.builtin.image import example_images
    from mmenc.retrieval.evaluate import evaluate_retrieval

    torch.manual_seed(0)
    model = mmenc.create_model("bridgetower-tiny", itm_head=True,
                               fusion={"pooler": True}).eval()
    images = example_images()[:3]
    texts = ["a red square", "green gradient", "blue circle"]
    scores = model.match_scores(texts, images, a_modality="text", b_modality="image")
    flipped = model.match_scores(images[::-1], texts[::-1], a_modality="image",
                                 b_modality="text")
    assert scores.shape == (3,) and ((scores > 0) & (scores < 1)).all()
    assert torch.allclose(flipped, scores.flip(0), atol=1e-5)
    report = evaluate_retrieval(model, list(zip(texts, images, strict=True)), "text", "image",
                                rerank=2, echo=lambda *a, **k: None)
    assert report["rerank"]["status"] == "done"
    with pytest.raises(ValueError, match="no ITM head"):
        mmenc.create_model("bridgetower-tiny").itm_logits(model.tokenize(texts, "text"),
                                                          model.tokenize(images, "image"))
