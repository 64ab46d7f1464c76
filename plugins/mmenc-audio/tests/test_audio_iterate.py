"""BEATs' iterative pre-training (``mmenc audio iterate``): the objectives' ``step`` under
``mmenc pretrain``, the stages, their checkpoints and markers, resuming and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import mmenc
from mmenc.errors import ConfigError
from mmenc_audio.audio import example_audio
from mmenc_audio.codebook import RandomProjectionQuantizer
from mmenc_audio.iterate import STAGE_FILE, iterate, read_config, stages
from mmenc_audio.objectives import MaskedAcousticLabelLoss, TokenizerDistillationLoss


def _clips(folder: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        t = np.arange(int(16000 * (0.5 + 0.1 * i))) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.05 * rng.standard_normal(t.shape)
        sf.write(folder / f"c{i}.wav", wave.astype(np.float32), 16000)
        rows.append({"audio": f"c{i}.wav"})
    manifest = folder / "clips.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def _config(folder: Path, iterations: int = 2) -> dict:
    return {"output_dir": str(folder / "run"), "iterations": iterations,
            "data": {"train": str(folder / "clips.jsonl")}, "max_seconds": 1.0,
            "random_projection": {"num_codes": 16, "code_dim": 8, "seed": 1},
            "ssl": {"steps": 4, "batch_size": 4}, "distill": {"steps": 4, "batch_size": 4},
            "checkpoint": {"every": 2, "keep": 1}, "log_every": 2}


def _weights(model_dir: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_masked_label_step_labels_the_batch_with_the_random_projection() -> None:
    model = mmenc.create_model("beats-tiny").train()
    batch = model.tokenize(example_audio(), "audio")
    objective = MaskedAcousticLabelLoss(dim=32, labels={"kind": "random-projection",
                                                        "num_codes": 16, "code_dim": 8,
                                                        "seed": 5})
    assert objective.num_labels == 16
    labels = objective.labeller.label_batch(batch)
    expected = RandomProjectionQuantizer(256, 8, 16, seed=5)(batch.values)
    assert torch.equal(labels[batch.mask], expected[batch.mask])
    assert bool((labels[~batch.mask] == -100).all())
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    loss, logs = objective.step(model, {"audio": batch}, g1)
    again, _ = objective.step(model, {"audio": batch}, g2)
    assert torch.isfinite(loss) and torch.equal(loss, again)  # same generator, same masks
    assert logs["masked"] == sum(max(1, int(0.75 * int(n))) for n in batch.mask.sum(1))
    loss.backward()
    assert model.patch_embedding.weight.grad is not None
    assert not any(k.startswith("_labeller") for k in objective.state_dict())
    with pytest.raises(ConfigError, match="num_labels=8"):
        MaskedAcousticLabelLoss(num_labels=8, labels={"num_codes": 16})


def test_distillation_step_runs_the_saved_teacher(tmp_path: Path) -> None:
    teacher = mmenc.create_model("beats-tiny")
    teacher.save_pretrained(tmp_path / "teacher")
    objective = TokenizerDistillationLoss(code_dim=8, teacher=str(tmp_path / "teacher"))
    assert objective.teacher_dim == 32
    assert not any("teacher" in k for k in objective.state_dict())  # not trained, not saved
    assert all(not n.startswith("_teacher") for n, _ in objective.named_parameters())
    tokenizer = mmenc.create_model("beats-tokenizer-tiny").train()
    batch = tokenizer.tokenize(example_audio(), "audio")
    loss, logs = objective.step(tokenizer, {"audio": batch})
    assert torch.isfinite(loss) and "labels" not in logs and 1 <= logs["codes_used"] <= 32
    assert tokenizer.codebook.initted.item() == 1.0  # k-means on the first batch
    loss.backward()
    assert tokenizer.quantize_layer[0].weight.grad is not None
    with pytest.raises(ConfigError, match="teacher_dim=48"):
        TokenizerDistillationLoss(teacher_dim=48, teacher=str(tmp_path / "teacher"))
    with pytest.raises(ConfigError, match="config.teacher"):
        TokenizerDistillationLoss().step(tokenizer, {"audio": batch})


def test_stages_chain_tokenizers_and_models(tmp_path: Path) -> None:
    plan = stages(read_config(_config(tmp_path, iterations=3)))
    assert [s["name"] for s in plan] == ["iter1-model", "iter2-tokenizer", "iter2-model",
                                         "iter3-tokenizer", "iter3-model"]
    first = plan[0]["pretrain"]["objectives"][0]
    assert first["name"] == "masked-acoustic-labels"
    assert first["config"]["labels"] == {"kind": "random-projection", "num_codes": 16,
                                         "code_dim": 8, "seed": 1}
    distill = plan[3]["pretrain"]["objectives"][0]
    assert distill["config"]["teacher"] == str(tmp_path / "run" / "iter2-model" / "model")
    model3 = plan[4]["pretrain"]["objectives"][0]["config"]["labels"]
    assert model3 == {"kind": "model", "model": str(tmp_path / "run" / "iter3-tokenizer" /
                                                    "model")}
    assert plan[1]["pretrain"]["model"]["recipe"] == "beats-tokenizer-tiny"
    assert plan[2]["pretrain"]["model"]["overrides"]["tokenizers"]["audio"]["max_seconds"] == 1.0


def test_two_iterations_end_to_end_and_resume(tmp_path: Path) -> None:
    _clips(tmp_path)
    config = _config(tmp_path, iterations=1)
    first = iterate(config)
    assert [s["name"] for s in first["stages"]] == ["iter1-model"]
    model1 = _weights(first["final_model"])
    mtime = (tmp_path / "run" / "iter1-model" / "model" / "model.safetensors").stat().st_mtime_ns

    # a second iteration on top: stage 1 is skipped, not retrained
    lines: list[str] = []
    report = iterate(_config(tmp_path, iterations=2), resume=True, echo=lines.append)
    assert [(s["name"], s["skipped"]) for s in report["stages"]] == [
        ("iter1-model", True), ("iter2-tokenizer", False), ("iter2-model", False)]
    assert lines[0].startswith("iter1-model: done before")
    assert (tmp_path / "run" / "iter1-model" / "model" / "model.safetensors").stat() \
        .st_mtime_ns == mtime
    assert all(torch.equal(v, model1[k]) for k, v in _weights(first["final_model"]).items())
    for s in report["stages"]:
        assert s["steps"] == 4 and (Path(s["model_dir"]) / "model.safetensors").is_file()
        assert (tmp_path / "run" / s["name"] / STAGE_FILE).is_file()
    tok = mmenc.load(tmp_path / "run" / "iter2-tokenizer" / "model")
    assert tok.codebook.initted.item() == 1.0
    model2 = mmenc.load(report["final_model"])
    assert model2.encode(example_audio(), "audio").shape == (4, 32)
    # model 2 learnt tokenizer 2's labels: its objective's head has the tokenizer's 32 codes
    run2 = json.loads((tmp_path / "run" / "iter2-model" / "config.json").read_text())
    assert run2["objectives"][0]["config"]["labels"]["kind"] == "model"
    assert report["stages"][2]["metrics"]["masked-acoustic-labels/loss"] > 0
    assert json.loads((tmp_path / "run" / "report.json").read_text())["final_model"] == \
        report["final_model"]

    # an unfinished stage (no marker) continues from its last checkpoint to the same weights
    (tmp_path / "run" / "iter2-model" / STAGE_FILE).unlink()
    before = _weights(report["final_model"])
    again = iterate(_config(tmp_path, iterations=2), resume=True)
    assert [s["skipped"] for s in again["stages"]] == [True, True, False]
    after = _weights(again["final_model"])
    assert all(torch.equal(v, before[k]) for k, v in after.items())

    # without resume, a finished run is refused; a changed stage config is refused too
    with pytest.raises(ConfigError, match="finished stage"):
        iterate(_config(tmp_path, iterations=2))
    changed = _config(tmp_path, iterations=2)
    changed["ssl"]["steps"] = 5
    with pytest.raises(ConfigError, match="another configuration"):
        iterate(changed, resume=True)

    # the CLI on the finished run: every stage skipped
    from mmenc.cli import main

    (tmp_path / "iterate.yaml").write_text(json.dumps(_config(tmp_path, iterations=2)))
    result = CliRunner().invoke(main, ["audio", "iterate", str(tmp_path / "iterate.yaml"),
                                       "--resume", "--json"])
    assert result.exit_code == 0, result.output
    assert [s["skipped"] for s in json.loads(result.output)["stages"]] == [True, True, True]


@pytest.mark.parametrize(("change", "message"), [
    ({"iterations": 0}, "iterations"),
    ({"ssl": {"step": 3}}, "ssl.step: unknown key"),
    ({"colour": 1}, "colour: unknown key"),
    ({"tokenizer": {"recipe": "beats-tiny"}}, "has no quantizer"),
])
def test_bad_configs_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    config = {**_config(tmp_path), **change}
    with pytest.raises(ConfigError, match=message):
        stages(read_config(config))
    missing = _config(tmp_path)
    del missing["data"]
    with pytest.raises(ConfigError, match="data: required"):
        read_config(missing)
