"""Metrics of a run: ``metrics.jsonl`` (every logged row, in full), ``metrics.csv`` (the scalar
columns), TensorBoard scalars when ``tensorboard`` is installed, and ``loss.png`` at the end.

A resumed run first drops the rows logged after its checkpoint (the crashed run may have got
further), so the files read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
LOSS_PNG = "loss.png"


def tensorboard_available() -> bool:
    """Whether ``torch.utils.tensorboard`` can be used (it needs the ``tensorboard`` package)."""
    return importlib.util.find_spec("tensorboard") is not None


class MetricsLogger:
    """Appends metric rows to the run's files.

    Args:
        output_dir: the run's folder.
        resume_step: keep the rows of steps up to this one from an earlier run (None: start the
            files afresh).
        tensorboard: also write TensorBoard events (under ``output_dir/tensorboard``) when
            available.
    """

    def __init__(self, output_dir: Path, resume_step: int | None = None,
                 tensorboard: bool = True) -> None:
        self.jsonl, self.csv = output_dir / METRICS_JSONL, output_dir / METRICS_CSV
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and self.jsonl.is_file():
            for line in self.jsonl.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the crash
                    continue
                if isinstance(row, dict) and row.get("step", 0) <= resume_step:
                    self.rows.append(row)
        self.columns: list[str] = _scalar_keys(self.rows[0]) if self.rows else []
        self._rewrite()
        self.writer: Any = None
        if tensorboard and tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "tensorboard"),
                                        purge_step=(resume_step or 0) + 1)

    def _rewrite(self) -> None:
        with self.jsonl.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in self.rows)
        with self.csv.open("w", encoding="utf-8", newline="") as f:
            if self.columns:
                writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self.rows)

    def log(self, row: dict[str, Any]) -> None:
        """Append one row (``step`` plus scalars; dict values go to the JSONL file only)."""
        self.rows.append(row)
        with self.jsonl.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if not self.columns:
            self.columns = _scalar_keys(row)
            with self.csv.open("w", encoding="utf-8", newline="") as f:
                csv.DictWriter(f, self.columns).writeheader()
        with self.csv.open("a", encoding="utf-8", newline="") as f:
            # the columns are those of the first row; the JSONL file keeps any later extras
            csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _scalar_keys(row: dict[str, Any]) -> list[str]:
    return [k for k, v in row.items() if isinstance(v, int | float | str | None)]


def progress_line(row: dict[str, Any], steps: int) -> str:
    """One plain progress line for logs that are not a terminal (no ``\\r`` redraws)."""
    parts = ", ".join(f"{k.split('/')[0]} {v:.4f}" for k, v in row.items()
                      if k.endswith("/loss") and isinstance(v, int | float))
    return (f"pretrain step {row['step']}/{steps}  loss {row['loss']:.4f}"
            + (f" ({parts})" if parts else "")
            + f"  {row.get('items_per_s', 0.0):.1f} items/s  skipped {row.get('skipped', 0)}")


def loss_series(rows: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """What the loss chart draws: the total, each objective's loss and each loss component an
    objective logs (``vl/loss_itc``, ``vl/loss_itm``, ...), in the order they were logged.

    An objective's loss that equals the total at every step (one objective of weight 1) is the
    total's line again and is left out.
    """
    total = [float(r["loss"]) for r in rows]
    series: dict[str, list[float]] = {"total": total}
    keys = dict.fromkeys(k for r in rows for k in r
                         if "/" in k and k.rsplit("/", 1)[1].split("_")[0] == "loss")
    for key in keys:
        values = [float(r.get(key, float("nan"))) for r in rows]
        if key.endswith("/loss") and all(abs(v - t) <= 1e-6 * max(1.0, abs(t))
                                         for v, t in zip(values, total, strict=True)):
            continue
        series[key] = values
    return series


def loss_figure(rows: Sequence[dict[str, Any]]) -> Any:
    """The loss chart as a matplotlib ``Figure`` (Agg, without pyplot's global state)."""
    from mmenc.optional import require

    require("matplotlib", "plot", "loss charts")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, values in loss_series(rows).items():
        component = not (key == "total" or key.endswith("/loss"))
        ax.plot(steps, values, label=key, linewidth=2 if key == "total" else 1,
                linestyle="--" if component else "-")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_loss(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Draw the total loss, each objective's loss and each logged loss component against the
    step (:func:`loss_series`) into ``path``.

    Returns:
        ``path``, or None when there is nothing to draw or matplotlib (``mmenc[plot]``) is not
        installed (a warning says so: the run itself is complete).
    """
    if not rows:
        return None
    try:
        figure = loss_figure(rows)
    except ImportError as exc:
        warnings.warn(f"{path.name} not drawn: {exc}", stacklevel=2)
        return None
    figure.savefig(path)
    return path
