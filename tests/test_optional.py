"""Optional dependencies: a feature whose package is missing says which extra of mmenc brings it,
and pretraining still finishes without its loss chart."""

from __future__ import annotations

import sys

import pytest

from mmenc.optional import require


def test_require_imports_an_installed_module():
    assert require("json", "none", "JSON").dumps([1]) == "[1]"


@pytest.mark.parametrize(("module", "extra", "call"), [
    ("faiss", "faiss", lambda: __import__("mmenc.retrieval.index", fromlist=["x"])._faiss()),
    ("rank_bm25", "bm25", lambda: __import__("mmenc.retrieval.lexical", fromlist=["x"])
     .Bm25Scorer().score_items(["a b"], ["a", "b"], "text", "text")),
    ("webdataset", "webdataset", lambda: __import__("mmenc.train.data", fromlist=["x"])
     .ShardStream("shard-{0..1}.tar", 0, ["text"], {})),
])
def test_a_missing_extra_is_named(monkeypatch, module, extra, call):
    monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like to import
    with pytest.raises(ImportError, match=rf"pip install 'mmenc\[{extra}\]'"):
        call()


def test_loss_chart_without_matplotlib_is_skipped_with_a_warning(monkeypatch, tmp_path):
    from mmenc.train.logging import plot_loss

    rows = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    assert plot_loss(rows, tmp_path / "loss.png") == tmp_path / "loss.png"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.warns(UserWarning, match=r"no-loss.png not drawn: .*mmenc\[plot\]"):
        assert plot_loss(rows, tmp_path / "no-loss.png") is None
    assert not (tmp_path / "no-loss.png").exists()


def test_every_extra_named_in_the_code_is_declared_and_installed_by_the_setup():
    import re
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    root = Path(__file__).resolve().parents[1]
    named = {m.group(1) for path in (root / "mmenc").rglob("*.py")
             for m in re.finditer(r'require\(\s*"[\w.]+",\s*"(\w+)"', path.read_text())}
    assert {"faiss", "plot", "webdataset", "bm25"} <= named
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert named <= set(extras)
    everything = set(re.search(r"mmenc\[([\w,]+)\]", extras["all"][0]).group(1).split(","))
    assert named | {"onnx"} <= everything
    assert '".[data,test,all]"' in (root / "scripts" / "setup.sh").read_text()
