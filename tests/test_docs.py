"""Every ```python and ```bash block in docs/ (and the plugin docs of every plugin) runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.S | re.M)


def doc_blocks() -> list:
    params = []
    pages = sorted([*ROOT.glob("docs/**/*.md"), *ROOT.glob("plugins/*/docs/**/*.md")])
    for page in pages:
        for i, match in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8"))):
            lang, code = match.groups()
            rel = page.relative_to(ROOT).as_posix()
            params.append(pytest.param(lang, code, id=f"{rel}-{i}"))
    return params


@pytest.mark.parametrize("lang,code", doc_blocks())
def test_doc_example_runs(lang, code, tmp_path):
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    if lang == "python":
        cmd = [sys.executable, "-c", code]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", code]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
