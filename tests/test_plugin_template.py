"""examples/plugin-template installed as a user would: ``pip install`` into a separate folder, then
a fresh interpreter with that folder on ``PYTHONPATH`` finds it through its entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[1] / "examples" / "plugin-template"


def _builds_without_isolation() -> bool:
    """Whether this environment can build the template offline: the SPDX ``license`` string
    (PEP 639) needs setuptools >= 77, which also builds wheels by itself."""
    try:
        version = tuple(int(p) for p in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return version >= (77, 0)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template, copied (a build writes into its source tree) and installed into
    ``site/`` without its dependencies: mmenc itself comes from this environment."""
    if any(ep.name == "template" for ep in metadata.entry_points(group="mmenc")):
        pytest.skip("mmenc-template is installed in this environment: a second copy on "
                    "PYTHONPATH would clash with it (pip uninstall mmenc-template)")
    root = tmp_path_factory.mktemp("template")
    source = root / "source"
    shutil.copytree(TEMPLATE, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input",
               "--disable-pip-version-check", "--target", str(root / "site"), str(source)]
    if _builds_without_isolation():
        command.insert(4, "--no-build-isolation")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"
    return root


def test_entry_point_registers_the_plugin(installed, run_cli):
    heavy = ["mmenc_template.modality", "mmenc_template.tokenizer", "mmenc_template.model",
             "mmenc_template.cli"]
    plugins, models = run_cli([["plugins", "--json"], ["models", "timeseries*", "--json"]],
                              installed / "site", watch=heavy)
    records = {r["name"]: r for r in json.loads(plugins["stdout"])}
    assert records["template"] == {
        "name": "template", "distribution": "mmenc-template", "version": "0.1.0",
        "module": "mmenc_template.plugin", "status": "ok", "error": None,
        "hooks": ["mmenc_register_modalities", "mmenc_register_tokenizers",
                  "mmenc_register_models", "mmenc_register_commands"],
        "registered": {"modality": ["timeseries"], "tokenizer": ["timeseries-patches"],
                       "model": ["timeseries-tiny"], "command": ["template-info"]},
    }
    assert records["mmenc"]["status"] == "ok"
    assert json.loads(models["stdout"]) == [{
        "name": "timeseries-tiny", "modalities": ["timeseries"], "fusion": "dual",
        "plugin": "template", "description": "tiny patch transformer for time series",
    }]
    assert plugins["imported"] == models["imported"] == []  # listing imports only plugin.py


def test_plugin_command(installed, run_python):
    mmenc_cli = ["-c", "from mmenc.cli import main; main(prog_name='mmenc')"]
    proc = run_python([*mmenc_cli, "template-info"], installed / "site")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["modality: timeseries", "tokenizer: timeseries-patches",
                                        "model: timeseries-tiny", "command: template-info"]
    proc = run_python([*mmenc_cli, "template-info", "--json"], installed / "site")
    assert json.loads(proc.stdout)["model"] == ["timeseries-tiny"]
    proc = run_python([*mmenc_cli, "template-info"], installed / "site",
                      MMENC_DISABLE_PLUGIN_AUTOLOAD="1")
    assert proc.returncode == 2 and "unknown command 'template-info'" in proc.stderr


@pytest.mark.slow
def test_template_passes_its_contract_checks(installed, run_python):
    where = run_python(["-c", "import mmenc_template; print(mmenc_template.__file__)"],
                       installed / "site")
    assert where.stdout.startswith(str(installed / "site")), where.stdout + where.stderr
    proc = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider",
                       str(installed / "source" / "tests")],
                      installed / "site", cwd=installed, MMENC_STRICT_PLUGINS="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary
