"""Every distribution's metadata: an SPDX license expression (PEP 639), a build backend
that understands it, and the extras the main job imports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
PYPROJECTS = sorted([ROOT / "pyproject.toml", *ROOT.glob("plugins/*/pyproject.toml"),
                     ROOT / "examples" / "plugin-template" / "pyproject.toml"])


@pytest.mark.parametrize("path", PYPROJECTS, ids=lambda p: p.parent.name)
def test_license_is_an_spdx_string_and_setuptools_reads_it(path):
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert data["project"]["license"] == "Apache-2.0"
    assert not any(c.startswith("License ::") for c in data["project"].get("classifiers", []))
    assert "setuptools>=77" in data["build-system"]["requires"]


def test_the_main_jobs_reference_check_is_declared():
    """mmenc.demo checks the converted MiniLM against sentence-transformers."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert any(r.startswith("sentence-transformers") for r in
               data["project"]["optional-dependencies"]["data"])


_METADATA = """
import sys, warnings
from setuptools import build_meta
out = sys.argv[1]  # setuptools rewrites sys.argv while it builds
warnings.simplefilter("error")  # a deprecated license table would fail here
name = build_meta.prepare_metadata_for_build_wheel(out)
print(open(f"{out}/{name}/METADATA").read())
"""


def test_built_metadata_carries_the_license_expression(tmp_path):
    pytest.importorskip("setuptools", minversion="77")
    source = tmp_path / "template"
    shutil.copytree(ROOT / "examples" / "plugin-template", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    out = tmp_path / "meta"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", _METADATA, str(out)], cwd=source,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "License-Expression: Apache-2.0" in proc.stdout
