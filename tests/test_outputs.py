"""What a person reads after a run: plain progress lines in logs, loss charts with one line per
logged loss, recall charts with their baselines and chance."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
import torch

from mmenc.retrieval.evaluate import recall_figure, write_report
from mmenc.retrieval.metrics import chance_recall
from mmenc.train.logging import loss_figure, loss_series, plot_loss, progress_line


def _rows(**series: list[float]) -> list[dict]:
    n = len(next(iter(series.values())))
    return [{"step": 10 * (i + 1), **{k.replace("__", "/"): v[i] for k, v in series.items()},
             "lr": 1e-3, "vl__mlm_acc": 0.5} for i in range(n)]


def _labels(fig) -> dict[str, list[float]]:
    return {line.get_label(): list(line.get_ydata()) for line in fig.axes[0].get_lines()}


# -- loss chart ------------------------------------------------------------------------------
def test_one_objective_is_drawn_once():
    rows = _rows(loss=[3.0, 2.0, 1.5], contrastive__loss=[3.0, 2.0, 1.5])
    assert _labels(loss_figure(rows)) == {"total": [3.0, 2.0, 1.5]}


def test_weighted_objectives_each_get_a_line():
    rows = _rows(loss=[2.0, 1.5], contrastive__loss=[1.0, 1.0],
                 **{"masked-modeling__loss": [2.0, 1.0]})
    assert _labels(loss_figure(rows)) == {"total": [2.0, 1.5], "contrastive/loss": [1.0, 1.0],
                                          "masked-modeling/loss": [2.0, 1.0]}


def test_every_logged_loss_component_is_drawn(tmp_path):
    rows = _rows(loss=[6.0, 4.0], vl__loss=[6.0, 4.0], vl__loss_itc=[2.0, 1.0],
                 vl__loss_itm=[0.7, 0.6], vl__loss_mlm=[3.3, 2.4])
    series = loss_series(rows)
    assert list(series) == ["total", "vl/loss_itc", "vl/loss_itm", "vl/loss_mlm"]
    assert series["vl/loss_mlm"] == [3.3, 2.4]
    assert plot_loss(rows, tmp_path / "loss.png") == tmp_path / "loss.png"
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert plot_loss([], tmp_path / "none.png") is None


def test_progress_line():
    row = {"step": 20, "loss": 1.23456, "contrastive/loss": 1.0, "vl/loss_itc": 9.0,
           "items_per_s": 12.34, "skipped": 2}
    line = progress_line(row, 100)
    assert line == "pretrain step 20/100  loss 1.2346 (contrastive 1.0000)  12.3 items/s  skipped 2"


_PRETRAIN = """
import sys
from pathlib import Path
import torch
from mmenc.train import pretrain
from mmenc.train.data import write_toy_pairs
torch.set_num_threads(1)
folder = Path(sys.argv[1])
manifest = write_toy_pairs(folder / "data", n=12)
pretrain({"model": {"recipe": "clip-tiny"},
          "objectives": [{"name": "contrastive", "modalities": ["image", "text"]}],
          "data": {"train": str(manifest)}, "batch_size": 4, "steps": 4, "log_every": 2,
          "checkpoint": {"every": 4, "keep": 1}, "output_dir": str(folder / "run"),
          "progress": True})
"""


def test_pretrain_writes_plain_lines_when_stderr_is_not_a_terminal(tmp_path):
    result = subprocess.run([sys.executable, "-c", _PRETRAIN, str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("pretrain step")]
    assert [ln.split()[2] for ln in lines] == ["2/4", "4/4"]
    assert "\r" not in result.stderr


# -- recall chart ----------------------------------------------------------------------------
def _brute_force_chance(relevant: torch.Tensor, k: int) -> float:
    g = relevant.shape[1]
    hits = []
    for row in relevant.tolist():
        orders = list(itertools.permutations(range(g)))
        hits.append(sum(any(row[j] for j in order[:k]) for order in orders) / len(orders))
    return sum(hits) / len(hits)


def test_chance_recall_is_the_random_rankings_recall():
    relevant = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)
    chance = chance_recall(relevant, ks=(1, 2, 3))
    for k in (1, 2, 3):
        assert chance[f"R@{k}"] == pytest.approx(_brute_force_chance(relevant, k))
    assert chance_recall(torch.eye(40, dtype=torch.bool), ks=(10,)) == {
        "R@10": pytest.approx(0.25)}


def _report() -> dict:
    rel = torch.eye(20, dtype=torch.bool)
    return {"model": {"recipe": "clip-tiny"}, "query_modality": "text",
            "gallery_modality": "image",
            "metrics": {"text->image": {"R@1": 0.3, "R@5": 0.6, "R@10": 0.8},
                        "image->text": {"R@1": 0.2, "R@5": 0.5, "R@10": 0.7}},
            "chance": {"text->image": chance_recall(rel), "image->text": chance_recall(rel)}}


def test_recall_chart_draws_baselines_and_chance(tmp_path):
    baselines = {"BM25": {"text->image": {"R@1": 0.1, "R@5": 0.3, "R@10": 0.4}}}
    fig = recall_figure(_report(), baselines=baselines)
    ax = fig.axes[0]
    bars = {c.get_label(): [b.get_height() for b in c] for c in ax.containers}
    assert bars == {"text->image": [0.3, 0.6, 0.8], "image->text": [0.2, 0.5, 0.7],
                    "BM25: text->image": [0.1, 0.3, 0.4]}
    assert all(p.get_hatch() == "//" for p in ax.containers[2])
    chance = [c for c in ax.collections if c.get_label().startswith("chance")]
    heights = sorted({round(float(seg[0][1]), 6) for c in ax.collections
                      for seg in c.get_segments()})
    assert chance and heights == [0.05, 0.25, 0.5]  # K/20 for one partner among 20
    assert "chance (random ranking)" in ax.get_legend_handles_labels()[1]

    paths = write_report(_report(), tmp_path / "out", baselines=baselines)
    saved = json.loads(paths["report"].read_text())
    assert saved["baselines"] == baselines and "chance" in saved
    assert paths["plot"].stat().st_size > 0


def test_a_baseline_without_directions_is_drawn_as_one_series():
    fig = recall_figure(_report(), baselines={"emoji name lookup": {"R@1": 0.4, "R@5": 0.5,
                                                                    "R@10": 0.6}})
    bars = {c.get_label(): [b.get_height() for b in c] for c in fig.axes[0].containers}
    assert bars["emoji name lookup"] == [0.4, 0.5, 0.6]
