"""The code pairing writes, per task, a report and a recall chart with its baselines."""

from __future__ import annotations

import json
from pathlib import Path

import mmenc
from mmenc.data.stdlib import CodePair
from mmenc.retrieval.lexical import Bm25Scorer
from mmenc_code.pairing import evaluate, write_manifests, write_reports

PAIRS = [
    CodePair("a.py:1:f", "a", "Return the size.", "def size(self):\n    return self.n"),
    CodePair("b.py:1:f", "b", "Return the size.", "def size(self):\n    return len(self.xs)"),
    CodePair("c.py:1:f", "c", "Open the file.", "def open(p):\n    return io.open(p)"),
    CodePair("d.py:1:g", "d", "Open the file.", "def open_file(p):\n    return open(p)"),
]


def test_each_task_gets_report_json_and_recall_png_with_baselines(tmp_path: Path) -> None:
    paths = write_manifests(PAIRS[:1], PAIRS, tmp_path / "data")
    model = mmenc.create_model("code-text-tiny")
    rows = {"mmenc": evaluate(model, paths), "BM25": evaluate(Bm25Scorer(), paths)}
    written = write_reports(rows, tmp_path / "retrieval")
    assert set(written) == {"docstring", "function"}
    assert all("reports" not in row for row in rows.values())  # the summary stays small
    for report_path in written.values():
        report = json.loads(report_path.read_text())
        assert report["model"]["recipe"] == "code-text-tiny"
        assert set(report["baselines"]) == {"BM25"} and "chance" in report
        assert (report_path.parent / "recall.png").read_bytes()[:4] == b"\x89PNG"
    docs = json.loads(written["docstring"].read_text())
    assert docs["baselines"]["BM25"]["docstring->code"] == rows["BM25"]["docstring->code"]
