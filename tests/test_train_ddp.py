"""The same config under `torchrun --nproc_per_node 2` (gloo) matches one process with the same
global batch: each rank trains on its half, the contrastive loss sees every rank's negatives and
DDP averages the gradients."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mmenc.train.data import write_toy_pairs

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch.distributed is not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("MMENC_")}
    out.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return out


def write_config(folder: Path, manifest: Path, name: str) -> Path:
    # fp32 and no dropout (the tiny recipes have none); no batch-dependent layers in a ViT
    config = {
        "model": {"recipe": "clip-tiny"},
        "objectives": [{"name": "contrastive", "modalities": ["image", "text"]}],
        "data": {"train": str(manifest)},
        "batch_size": 8, "steps": 3, "seed": 1, "log_every": 1,
        "optim": {"lr": 1e-4}, "checkpoint": {"every": 100, "keep": 1},
        "output_dir": str(folder / name), "progress": False, "device": "cpu",
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_two_ranks_match_one_process(tmp_path):
    manifest = write_toy_pairs(tmp_path / "data", n=20, corrupt=1)
    single = subprocess.run([sys.executable, "-m", "mmenc.train.cli",
                             str(write_config(tmp_path, manifest, "one"))],
                            env=env(), capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
                          "-m", "mmenc.train.cli", str(write_config(tmp_path, manifest, "two"))],
                         env=env(), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    rows = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text()
                   .splitlines()] for name in ("one", "two")}
    assert [r["step"] for r in rows["two"]] == [1, 2, 3]
    for a, b in zip(rows["one"], rows["two"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-6, (a["step"], a["loss"], b["loss"])
        assert a["skipped"] == b["skipped"]  # the same global batches, broken item included
    assert rows["one"][-1]["skipped"] >= 1
    weights = {name: load_file(str(tmp_path / name / "model" / "model.safetensors"))
               for name in ("one", "two")}
    assert weights["one"].keys() == weights["two"].keys()
    for key, value in weights["one"].items():
        assert torch.allclose(value, weights["two"][key], rtol=0, atol=1e-6), key
    assert ddp.stdout.count("trained 3 steps") == 1  # only rank 0 reports
