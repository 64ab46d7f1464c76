"""A slice of the reliability campaign (benchmarks/reliability): hostile inputs of every kind
through the public path, in worker processes under a time and memory limit.

The target is that every input is either encoded or refused with a typed mmenc error: no
crash, hang, untyped exception, silent NaN/empty output or blown memory limit. The heavy
mutations (inputs of megabytes, millions of notes) run only with MMENC_RELIABILITY_HEAVY=1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.reliability import gen_code, gen_text, mutate  # noqa: E402
from benchmarks.reliability.run import FAILURES, KINDS, WorkerProcess, run_case  # noqa: E402
from benchmarks.reliability.worker import (  # noqa: E402
    check_output,
    classify,
    describe,
    make_case,
    mutations,
)

PER_KIND = 24


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability-cache")


def _campaign(out: Path, cache: Path, *args: str) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks/reliability/run.py"), "--seed", "0",
           "--out", str(out), "--cache", str(cache), "--base-midi", "30", "--base-images", "30",
           *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "table.json").read_text())


def _failures(summary: dict) -> str:
    lines = [f"{r['kind']}/{r.get('mutation')}: {r['outcome']} {r.get('error') or ''} "
             f"{(r.get('message') or '')[:120]} [{r.get('where') or ''}] on {r.get('input')}"
             for r in summary["failures"]]
    return "\n".join(lines)


def _assert_no_failures(summary: dict) -> None:
    bad = {kind: {c: row[c] for c in FAILURES if row[c]} for kind, row in summary["table"].items()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{bad}\n{_failures(summary)}"


@pytest.mark.slow
def test_light_slice_every_input_is_encoded_or_refused(tmp_path, cache):
    summary = _campaign(tmp_path / "light", cache, "--per-modality", str(PER_KIND),
                        "--mutations", "light")
    table = summary["table"]
    assert list(table) == list(KINDS)
    assert all(row["inputs"] == PER_KIND for row in table.values())
    records = [json.loads(line) for line in (tmp_path / "light/results.jsonl").open()]
    # the unmutated inputs are real data: they must encode, or the harness refuses everything
    valid = [r for r in records if r.get("mutation") == "valid"]
    assert len(valid) >= len(KINDS) and all(r["outcome"] == "ok" for r in valid), valid
    assert (tmp_path / "light/table.md").read_text().startswith("| | inputs | ok |")
    _assert_no_failures(summary)


@pytest.mark.skipif(os.environ.get("MMENC_RELIABILITY_HEAVY") != "1",
                    reason="heavy mutations cost seconds each: set MMENC_RELIABILITY_HEAVY=1")
def test_heavy_mutations_are_encoded_or_refused(tmp_path, cache):
    counts = [f"--count={kind}={len(mutations(kind, 'heavy'))}" for kind in KINDS]
    summary = _campaign(tmp_path / "heavy", cache, "--mutations", "heavy", *counts)
    _assert_no_failures(summary)


@pytest.mark.parametrize("kind", ["text", "code"])
def test_cases_are_deterministic_and_cover_every_mutation(kind, tmp_path):
    base = {"text": gen_text, "code": gen_code}[kind].load_base(tmp_path)
    names = mutations(kind, "light")
    first = [make_case(kind, i, 7, base, tmp_path, "light") for i in range(len(names))]
    again = [make_case(kind, i, 7, base, tmp_path, "light") for i in range(len(names))]
    other = [make_case(kind, i, 8, base, tmp_path, "light") for i in range(len(names))]
    assert [m for m, _ in first] == list(names)
    assert [describe(x) for _, x in first] == [describe(x) for _, x in again]
    assert [describe(x) for _, x in first] != [describe(x) for _, x in other]
    assert set(names) | set(mutations(kind, "heavy")) == set(mutations(kind))


def test_byte_mutations_change_data_and_keep_within_bounds():
    rng = random.Random(0)
    data = bytes(range(256)) * 4
    for name in mutate.GENERIC:
        out = mutate.generic(name, data, rng)
        assert out != data, name
    assert mutate.put_u32(b"abcdefgh", 2, 0xFFFFFFFF, True) == b"ab\xff\xff\xff\xffgh"
    assert mutate.put_u32(b"abc", 2, 1, True) == b"abc"  # past the end: unchanged
    assert len(mutate.truncate(data, rng)) < len(data)


# -- the harness itself: what it records when a worker misbehaves ---------------------------------
FAKE_WORKER = r"""
import json, os, signal, sys, time
print(json.dumps({"phase": "ready"}), flush=True)
for line in sys.stdin:
    task = json.loads(line)
    print(json.dumps({"phase": "start", "mutation": "m", "input": "x"}), flush=True)
    if task["kind"] == "hang":
        time.sleep(60)
    elif task["kind"] == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif task["kind"] == "exit":
        os._exit(3)
    print(json.dumps({"kind": task["kind"], "index": task["index"], "outcome": "ok"}), flush=True)
"""


@pytest.mark.parametrize(("behaviour", "outcome", "message"), [
    ("answer", "ok", None),
    ("hang", "hang", "no answer after"),
    ("crash", "crash", "killed by signal 11"),
    ("exit", "crash", "exited with status 3"),
])
def test_worker_hangs_and_deaths_are_recorded(tmp_path, behaviour, outcome, message):
    worker = WorkerProcess(argparse.Namespace(), tmp_path, tmp_path / "worker.log",
                           command=[sys.executable, "-c", FAKE_WORKER])
    try:
        record, usable = run_case(worker, behaviour, 0, timeout=1.0)
    finally:
        worker.kill()
    assert record["outcome"] == outcome
    assert usable == (outcome == "ok")
    if message:
        assert message in record["message"]


def test_exceptions_and_outputs_are_classified():
    import torch

    from mmenc.errors import CheckpointError, InputError

    assert classify(InputError("x", "bad")) == "refused"
    assert classify(CheckpointError("bad")) == "refused"
    assert classify(MemoryError()) == "memory"
    assert classify(RuntimeError("DefaultCPUAllocator: can't allocate memory")) == "memory"
    assert classify(ValueError("bad")) == "untyped"
    assert classify(SystemExit(1)) == "untyped"
    assert check_output(torch.ones(1, 4))[0] == "ok"
    assert check_output(torch.tensor([[1.0, float("nan")]]))[0] == "nan_empty"
    assert check_output(torch.zeros(1, 4))[0] == "nan_empty"
    assert check_output(torch.zeros(1, 0))[0] == "nan_empty"
    assert check_output(torch.ones(2, 4))[0] == "nan_empty"
