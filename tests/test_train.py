"""`mmenc pretrain`: config checks, a short run with broken items, the objectives on a fusion
model, webdataset shards, and a diverging run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import mmenc
from mmenc.errors import ConfigError
from mmenc.train import load_config, pretrain
from mmenc.train import state as train_state
from mmenc.train.data import toy_image, write_toy_pairs


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest, and alike in every process, on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def base_config(manifest: Path | None, out: Path, **extra) -> dict:
    config = {
        "model": {"recipe": "clip-tiny"},
        "objectives": [{"name": "contrastive", "modalities": ["image", "text"]}],
        "data": {"train": str(manifest)},
        "batch_size": 8, "steps": 4, "log_every": 1,
        "optim": {"lr": 2e-3, "warmup_steps": 2},
        "checkpoint": {"every": 100, "keep": 1},
        "output_dir": str(out), "progress": False,
    }
    config.update(extra)
    return config


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMENC_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


# -- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize("edit,message", [
    pytest.param(lambda c: c["optim"].update(weight_decy=0.1),
                 "train.yaml: optim.weight_decy: unknown key; did you mean 'weight_decay'?",
                 id="unknown-key"),
    pytest.param(lambda c: c["optim"].update(lr="fast"),
                 "train.yaml: optim.lr: expected a number, got 'fast'", id="not-a-number"),
    pytest.param(lambda c: c.update(batch_size=8.5),
                 "train.yaml: batch_size: expected an integer, got 8.5", id="not-an-integer"),
    pytest.param(lambda c: c.pop("steps"), "train.yaml: steps: required key is missing",
                 id="missing-key"),
    pytest.param(lambda c: c["objectives"][0].update(name="contrastiv"),
                 "train.yaml: objectives[0].name: unknown objective 'contrastiv'; did you mean "
                 "'contrastive'?", id="objective-name"),
    pytest.param(lambda c: c["objectives"][0]["config"].update(temprature=0.1),
                 "train.yaml: objectives[0].config.temprature: unknown option of contrastive; "
                 "did you mean 'temperature'?", id="objective-option"),
    pytest.param(lambda c: c["model"].update(recipe="clip-tiyn"),
                 "train.yaml: model.recipe: unknown model 'clip-tiyn'; did you mean 'clip-tiny'",
                 id="recipe"),
    pytest.param(lambda c: c["objectives"][0].update(modalities=["image"]),
                 "train.yaml: objectives[0].modalities: contrastive needs 2 modalities",
                 id="arity"),
    pytest.param(lambda c: c["data"].update(shards="x-{0..1}.tar"),
                 "train.yaml: data: give exactly one of 'train'", id="two-sources"),
])
def test_bad_config_is_rejected_before_any_work(tmp_path, edit, message):
    config = base_config(tmp_path / "manifest.jsonl", tmp_path / "run")
    config["objectives"][0]["config"] = {}
    edit(config)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as info:
        pretrain(path)
    assert message in str(info.value)
    assert not (tmp_path / "run").exists()  # nothing was created: the manifest does not even exist


def test_cli_reports_config_errors(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({**base_config(tmp_path / "m.jsonl", tmp_path / "run"),
                                    "optim": {"lr": "fast"}}))
    from mmenc.cli import main

    result = CliRunner().invoke(main, ["pretrain", str(path)])
    assert result.exit_code == 1
    assert "train.yaml: optim.lr: expected a number, got 'fast'" in result.output


def test_yaml_numbers_and_defaults(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("model: {recipe: clip-tiny}\nobjectives: [{name: contrastive, modalities: "
                    "[image, text]}]\ndata: {train: m.jsonl}\nbatch_size: 4\nsteps: 2\n"
                    "output_dir: out\noptim: {lr: 1e-3}\n")
    config = load_config(path)
    assert config.optim.lr == 1e-3  # YAML reads `1e-3` as a string
    assert config.data.modalities == ["image", "text"]
    assert config.checkpoint.every == 1000 and config.optim.grad_clip == 1.0


# -- a short run ----------------------------------------------------------------------------
def test_short_run_skips_broken_items_and_learns(tmp_path):
    manifest = write_toy_pairs(tmp_path / "data", n=24, corrupt=2, missing=1)
    config = base_config(manifest, tmp_path / "run", steps=30, log_every=3,
                         checkpoint={"every": 10, "keep": 2})
    result = pretrain(config)
    out = tmp_path / "run"

    assert result.step == 30 and result.output_dir == out
    # 27 lines, 3 broken: each pass over the data meets each broken item once
    assert set(result.skipped) == {"image: not a readable image", "image: file not found"}
    passes = 30 * 8 // 24 - 1  # full passes over the 27 lines (the last one may be partial)
    assert result.skipped["image: not a readable image"] >= 2 * passes
    assert result.skipped["image: file not found"] >= passes
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(3, 31, 3))
    assert {"loss", "contrastive/loss", "contrastive/acc_a2b", "lr", "items_per_s",
            "skipped"} <= set(rows[0])
    assert rows[-1]["skipped_reasons"] == result.skipped
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["step", "loss", "contrastive/loss"]
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in train_state.checkpoints(out)] == ["ckpt-00000020", "ckpt-00000030"]
    # the toy task is learnable: the loss falls well below chance (ln 8 = 2.08)
    first = sum(r["loss"] for r in rows[:2]) / 2
    last = sum(r["loss"] for r in rows[-2:]) / 2
    assert last < first - 0.3, (first, last)

    model = mmenc.load(result.model_dir)
    images = model.encode([toy_image("red", "circle"), toy_image("blue", "square")], "image")
    texts = model.encode(["a red circle", "a blue square"], "text")
    assert images.shape == texts.shape == (2, 32)

    with pytest.raises(ConfigError, match="holds checkpoints"):
        pretrain(config)


def test_every_objective_on_a_fusion_model(tmp_path):
    manifest = write_toy_pairs(tmp_path / "data", n=16)
    config = base_config(manifest, tmp_path / "run", steps=2, model={"recipe": "merged-tiny"},
                         objectives=[
                             {"name": "contrastive", "modalities": ["image", "text"],
                              "config": {"queue_size": 16, "alpha": 0.4, "momentum": 0.99}},
                             {"name": "masked-modeling", "modalities": ["text"], "weight": 0.5,
                              "config": {"mask_prob": 0.3}},
                             {"name": "matching", "modalities": ["image", "text"]},
                         ])
    result = pretrain(config)
    metrics = result.metrics
    for key in ("contrastive/loss", "masked-modeling/loss", "masked-modeling/acc",
                "matching/loss", "matching/acc"):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    state, _ = train_state.read(result.checkpoint)
    assert any(k.startswith("tasks.matching.objective.loss.head") for k in state)
    assert any(k.startswith("tasks.contrastive.objective.teacher.") for k in state)
    assert any(k.startswith("rng.0.gen.masked-modeling") for k in state)


def test_webdataset_shards(tmp_path):
    import webdataset as wds

    (tmp_path / "shards").mkdir()
    names = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("black", "circle"),
             ("cyan", "square"), ("purple", "triangle")]
    for shard in range(2):
        with wds.TarWriter(str(tmp_path / "shards" / f"shard-{shard:06d}.tar")) as sink:
            for i, (color, shape) in enumerate(names):
                sink.write({"__key__": f"{shard}-{i:04d}", "png": toy_image(color, shape),
                            "txt": f"a {color} {shape}"})
            sink.write({"__key__": f"{shard}-broken", "png": b"not an image", "txt": "broken"})
    config = base_config(None, tmp_path / "run", steps=3, batch_size=4,
                         data={"shards": str(tmp_path / "shards" / "shard-{000000..000001}.tar"),
                               "extensions": {"image": "png", "text": "txt"}})
    result = pretrain(config)
    assert result.step == 3
    assert result.skipped == {"image: not a readable image": 1}  # 12 items read, one broken


def test_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    manifest = write_toy_pairs(tmp_path / "data", n=16)
    # a learning rate of 1e30 sends the weights far past float32 at the first update
    config = base_config(manifest, tmp_path / "run", steps=6,
                         optim={"lr": 1e30, "grad_clip": None},
                         checkpoint={"every": 1, "keep": 3})
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    mmenc_cli = str(Path(sys.executable).parent / "mmenc")
    proc = subprocess.run([mmenc_cli, "pretrain", str(path)], capture_output=True, text=True,
                          env=cli_env(), timeout=300)
    assert proc.returncode != 0
    found = re.search(r"step (\d+): loss is (nan|inf) \(contrastive: (nan|inf)\); stopped; "
                      r"last good checkpoint: (\S+)", proc.stderr)
    assert found, proc.stderr
    bad_step, last = int(found.group(1)), Path(found.group(4))
    kept = train_state.checkpoints(tmp_path / "run")
    assert kept and kept[-1] == last
    assert int(last.name.split("-")[1]) == bad_step - 1  # nothing written after the bad step
    assert not (tmp_path / "run" / "model").exists()
    train_state.read(last)
    mmenc.load(last / "model")


def test_warm_start_takes_the_tower_of_a_saved_model(tmp_path):
    source = mmenc.create_model("text-tiny")
    source.save_pretrained(tmp_path / "text-tiny")
    manifest = write_toy_pairs(tmp_path / "data", n=8)
    config = base_config(manifest, tmp_path / "run", steps=1, batch_size=4,
                         model={"recipe": "clip-tiny",
                                "warm_start": {"text": str(tmp_path / "text-tiny")}},
                         optim={"lr": 0.0})  # no update: the tower must be the source's
    result = pretrain(config)
    trained = mmenc.load(result.model_dir)
    expected = source.towers["text"].state_dict()
    for key, value in trained.towers["text"].state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_frozen_tower_is_not_trained(tmp_path):
    manifest = write_toy_pairs(tmp_path / "data", n=8)
    config = base_config(manifest, tmp_path / "run", steps=2, batch_size=4,
                         model={"recipe": "clip-tiny", "freeze": ["towers.text"]},
                         optim={"lr": 1e-2})
    torch.manual_seed(0)
    result = pretrain(config)
    trained = mmenc.load(result.model_dir)
    torch.manual_seed(0)
    initial = mmenc.create_model("clip-tiny")
    for key, value in trained.towers["text"].state_dict().items():
        assert torch.equal(value, initial.towers["text"].state_dict()[key]), key
    assert not torch.equal(trained.towers["image"].state_dict()["embeddings.patch.weight"],
                           initial.towers["image"].state_dict()["embeddings.patch.weight"])
    bad = base_config(manifest, tmp_path / "run2", steps=1, batch_size=4,
                      model={"recipe": "clip-tiny", "freeze": ["towers.audio"]})
    with pytest.raises(ConfigError, match="towers.audio"):
        pretrain(bad)


def test_example_config_is_valid():
    config = load_config(Path(__file__).resolve().parents[1] / "examples" / "pretrain-tiny.yaml")
    assert config.model.recipe == "clip-tiny" and config.batch_size == 16


def test_manifest_paths_and_file_objects(tmp_path):
    from mmenc.builtin.image import load_image
    from mmenc.builtin.text import load_text
    from mmenc.train.data import Batcher, ManifestStream, load_item

    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "0.txt").write_text("a red circle", encoding="utf-8")
    toy_image("red", "circle").save(tmp_path / "0.png")
    lines = [{"id": 0, "image": "0.png", "text": {"path": "captions/0.txt"}},
             {"id": 1, "image": {"path": "gone.png"}, "text": "a caption"},
             {"id": 2, "text": "no image at all"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    stream = ManifestStream(tmp_path / "m.jsonl", seed=0)
    loaders = {"image": load_image, "text": load_text}
    results = {}
    for position in range(3):
        raw = stream.get(position)
        item, reason = load_item(raw, loaders)
        results[raw["text"] if isinstance(raw["text"], str) else "file"] = (item, reason)
    item, reason = results["file"]
    assert reason is None and item["text"] == "a red circle" and item["image"].size == (32, 32)
    assert results["a caption"] == (None, "image: file not found")
    assert results["no image at all"] == (None, "image: missing from the item")
    # with every item broken but one, a batch of 4 repeats it from the following epochs
    batcher = Batcher(stream, loaders, batch_size=4)
    assert [x["text"] for x in batcher.next_batch()] == ["a red circle"] * 4
    assert 10 <= batcher.position <= 12  # the 4th good item is in the 4th pass of 3 lines
    assert sum(batcher.skipped.values()) == batcher.position - 4


def test_a_null_override_reads_as_the_recipes_none(tmp_path):
    """``embed_dim: null`` (no projection, as the code pairing asks) is not a type error."""
    config = base_config(tmp_path / "m.jsonl", tmp_path / "run")
    config["model"]["overrides"] = {"embed_dim": None}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    assert load_config(path).model.overrides == {"embed_dim": None}
