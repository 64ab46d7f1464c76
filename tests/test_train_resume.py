"""A run killed with SIGKILL and resumed ends bitwise equal to a run never stopped: killed at a
random moment after a checkpoint, and killed in the middle of a checkpoint write."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mmenc.train import state as train_state
from mmenc.train.data import write_toy_pairs

MMENC = str(Path(sys.executable).parent / "mmenc")
STEPS = 30


def config(manifest: Path, out: Path) -> dict:
    """Every kind of training state: a momentum teacher and queue, masking and negative
    sampling generators, AdamW moments, a warm-up + cosine schedule and skipped items."""
    return {
        "model": {"recipe": "clip-tiny"},
        "objectives": [
            {"name": "contrastive", "modalities": ["image", "text"],
             "config": {"queue_size": 16, "alpha": 0.4, "momentum": 0.99}},
            {"name": "masked-modeling", "modalities": ["text"], "weight": 0.5},
            {"name": "matching", "modalities": ["image", "text"], "weight": 0.5},
        ],
        "data": {"train": str(manifest)},
        "batch_size": 8, "steps": STEPS, "seed": 3, "log_every": 1,
        "optim": {"lr": 1e-3, "warmup_steps": 4, "min_lr": 1e-5},
        "checkpoint": {"every": 5, "keep": 2},
        "output_dir": str(out), "progress": False,
    }


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("MMENC_")}
    out.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return out


def write_config(folder: Path, manifest: Path, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config(manifest, folder / name)))
    return path


def run(path: Path, *args: str) -> None:
    proc = subprocess.run([MMENC, "pretrain", str(path), *args], env=env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended first: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def tensors(out: Path) -> dict[str, torch.Tensor]:
    """The final model and the final training state (objectives, optimiser, random states)."""
    weights = load_file(str(out / "model" / "model.safetensors"))
    model = {f"model.{k}": v for k, v in weights.items()}
    final = out / f"ckpt-{STEPS:08d}"
    return {**model, **load_file(str(final / train_state.STATE))}


def losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("resume")
    manifest = write_toy_pairs(folder / "data", n=20, corrupt=1, missing=1)
    run(write_config(folder, manifest, "straight"))
    return manifest, folder / "straight"


def assert_same_run(resumed: Path, straight: Path) -> None:
    a, b = tensors(resumed), tensors(straight)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:10]
    assert losses(resumed) == losses(straight)
    assert not list(resumed.glob(".tmp-*"))


def test_killed_at_a_random_moment_then_resumed(uninterrupted, tmp_path):
    manifest, straight = uninterrupted
    path = write_config(tmp_path, manifest, "killed")
    out = tmp_path / "killed"
    proc = subprocess.Popen([MMENC, "pretrain", str(path)], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: bool(train_state.checkpoints(out)), proc)
    time.sleep(random.uniform(0.0, 0.4))
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = train_state.latest(out)
    assert killed_at is not None and killed_at.name != f"ckpt-{STEPS:08d}"
    run(path, "--resume")
    assert_same_run(out, straight)


def test_killed_while_writing_a_checkpoint_then_resumed(uninterrupted, tmp_path):
    manifest, straight = uninterrupted
    path = write_config(tmp_path, manifest, "torn")
    out = tmp_path / "torn"
    proc = subprocess.Popen([MMENC, "pretrain", str(path)],
                            env=env(**{train_state.WRITE_DELAY_ENV: "60@10"}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # the second checkpoint's files are written, its marker not yet: kill it there
    torn = out / ".tmp-ckpt-00000010-"
    wait_for(lambda: any((p / train_state.SCALARS).is_file()
                         for p in out.glob(torn.name + "*")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for p in train_state.checkpoints(out)] == ["ckpt-00000005"]
    assert list(out.glob(torn.name + "*"))  # the torn write is there, and is ignored
    run(path, "--resume")
    assert_same_run(out, straight)
