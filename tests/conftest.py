"""Shared fixtures: running mmenc in a fresh interpreter with extra plugins on ``PYTHONPATH``.

A fresh process is what a user gets: its catalogue is built from the entry points it finds, and
its ``sys.modules`` tells what listing the catalogue imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

# Runs CLI commands in one process and reports, after each, which watched modules are imported.
_CLI_SCRIPT = """
import json, sys
from click.testing import CliRunner
from mmenc.cli import main
commands, watch = json.loads(sys.argv[1]), json.loads(sys.argv[2])
results = []
for args in commands:
    res = CliRunner().invoke(main, args, prog_name="mmenc")
    error = res.exception if not isinstance(res.exception, SystemExit) else None
    results.append({"code": res.exit_code, "stdout": res.stdout, "output": res.output,
                    "exception": None if error is None else repr(error),
                    "imported": sorted(m for m in watch if m in sys.modules)})
print(json.dumps(results))
"""


def clean_env(pythonpath: Path | None, **extra: str) -> dict[str, str]:
    """The current environment without mmenc's switches, with ``pythonpath`` and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMENC_")}
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    env.update(extra)
    return env


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run(args, pythonpath, cwd=None, **env)``: ``python ARGS`` in a fresh interpreter."""

    def run(args: Sequence[str], pythonpath: Path | None, cwd: Path | None = None,
            **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], env=clean_env(pythonpath, **env),
                              cwd=cwd, capture_output=True, text=True, timeout=300)

    return run


@pytest.fixture
def run_cli(run_python: Callable[..., subprocess.CompletedProcess[str]]) -> Callable[..., Any]:
    """``run_cli(commands, pythonpath, watch=(), **env)``: each command's exit code, output and
    the watched modules imported after it, all in one fresh process."""

    def run(commands: Sequence[Sequence[str]], pythonpath: Path | None,
            watch: Sequence[str] = (), **env: str) -> list[dict[str, Any]]:
        proc = run_python(["-c", _CLI_SCRIPT, json.dumps([list(c) for c in commands]),
                           json.dumps(list(watch))], pythonpath, **env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    return run
