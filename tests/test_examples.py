"""``mmenc pretrain examples/pretrain-tiny.yaml`` runs as the README writes it, from a clone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from mmenc.train.data import write_toy_pairs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pretrain-tiny.yaml"


def test_the_shipped_toy_data_is_what_write_toy_pairs_writes(tmp_path):
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    shipped = ROOT / config["data"]["train"]
    assert shipped.is_file()
    fresh = write_toy_pairs(tmp_path, n=48, corrupt=1, missing=1)
    names = sorted(p.name for p in fresh.parent.iterdir())
    assert names == sorted(p.name for p in shipped.parent.iterdir())
    for name in names:
        assert (shipped.parent / name).read_bytes() == (fresh.parent / name).read_bytes(), name


def test_the_readme_command_runs_from_the_repository_root(tmp_path):
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config.update(steps=3, log_every=1, output_dir=str(tmp_path / "run"),
                  checkpoint={"every": 3, "keep": 1})  # only shorter, elsewhere
    short = tmp_path / "pretrain-tiny.yaml"
    short.write_text(yaml.safe_dump(config), encoding="utf-8")
    mmenc = Path(sys.executable).parent / "mmenc"
    proc = subprocess.run([str(mmenc), "pretrain", str(short)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert "pretrain step 3/3" in proc.stderr  # plain progress lines in a captured log
