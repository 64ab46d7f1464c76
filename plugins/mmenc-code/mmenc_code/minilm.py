"""UniXcoder started from the converted all-MiniLM-L6-v2, pretrained with its own objectives on
the standard-library training split, and compared on the held-out modules.

:func:`minilm_config` is the ``mmenc pretrain`` configuration (``examples/unixcoder-minilm.yaml``
is the same in YAML); :func:`random_minilm` saves the same text encoder with fresh weights, so
that the same configuration trains the same architecture from scratch; :func:`save_start` saves
a configuration's untrained start; :func:`evaluate_models` evaluates saved models next to BM25
(``python -m mmenc_code.minilm random | start | eval``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Echo = Callable[[str], None]

SIZES = {"trunk": {"dim": 384, "depth": 6, "heads": 12, "ffn_dim": 1536}, "vocab_size": 30522}
"""all-MiniLM-L6-v2's encoder: the sizes the recipe must have to take its weights."""
LENGTHS = {"code": 96, "text": 32, "ast": 96}
ALL = "all"
CONTRASTIVE = "contrastive"


def objectives(which: str = ALL) -> list[dict[str, Any]]:
    """UniXcoder's objectives on the shared encoder: contrastive text <-> code and ast <-> code,
    and (``all``) masked LM, unidirectional LM and span denoising on code."""
    out: list[dict[str, Any]] = [
        {"name": "contrastive", "modalities": ["text", "code"]},
        {"name": "contrastive", "modalities": ["ast", "code"], "label": "ast-code"},
    ]
    if which == ALL:
        out += [{"name": "masked-modeling", "modalities": ["code"]},
                {"name": "unidirectional-lm", "modalities": ["code"]},
                {"name": "span-denoising", "modalities": ["code"],
                 "config": {"noise": 0.15, "span": 3}}]
    return out


def minilm_config(data: Path | str, minilm: Path | str, out: Path | str, steps: int,
                  which: str = ALL, batch_size: int = 16, lr: float = 5e-5,
                  every: int | None = None) -> dict[str, Any]:
    """The ``mmenc pretrain`` configuration: ``unixcoder-tiny`` at MiniLM's sizes, its encoder
    and tokenizers started from the saved model ``minilm`` (``warm_start: {text: ...}``)."""
    return {
        "model": {"recipe": "unixcoder-tiny",
                  "overrides": {"encoder": SIZES,
                                "tokenizers": {v: {"max_length": n} for v, n in LENGTHS.items()}},
                  "warm_start": {"text": str(minilm)}},
        "objectives": objectives(which),
        "data": {"train": str(Path(data) / "train.jsonl"), "modalities": ["code", "text", "ast"]},
        "batch_size": batch_size, "steps": steps, "log_every": 10, "seed": 0,
        "optim": {"lr": lr, "warmup_steps": max(1, steps // 10), "weight_decay": 0.01,
                  "min_lr": lr / 10},
        "checkpoint": {"every": every or steps, "keep": 3},
        "output_dir": str(out),
    }


def random_minilm(minilm: Path | str, out: Path | str, seed: int = 0) -> Path:
    """The saved model ``minilm`` with freshly initialised weights (BERT's scheme), tokenizer
    kept: a warm start from it is the same architecture trained from scratch."""
    import torch

    import mmenc
    from mmenc.nn import init_weights

    model = mmenc.load(minilm)
    torch.manual_seed(seed)
    init_weights(model)
    model.save_pretrained(out)
    return Path(out)


def save_start(config: dict[str, Any] | str | Path, out: Path | str) -> Path:
    """The model a ``mmenc pretrain`` configuration starts from (recipe, overrides, warm start),
    saved untrained: step 0 of the run."""
    from mmenc.train.config import load_config
    from mmenc.train.loop import build_model

    model = build_model(load_config(config).model)
    model.save_pretrained(out)
    return Path(out)


def evaluate_models(data: Path | str, models: list[str], echo: Echo = print) -> dict[str, Any]:
    """Both held-out tasks (:func:`mmenc_code.pairing.evaluate`) for each saved model (or
    ``bm25``), with the CPU seconds each took; prints a table."""
    import torch

    import mmenc
    from mmenc.demo import table
    from mmenc.retrieval.lexical import Bm25Scorer
    from mmenc_code.pairing import evaluate

    paths = {"test": Path(data) / "test.jsonl", "functions": Path(data) / "functions.jsonl"}
    rows: dict[str, Any] = {}
    for name in models:
        start = time.process_time()
        model = Bm25Scorer() if name == "bm25" else mmenc.load(name).eval()
        with torch.no_grad():
            report = evaluate(model, paths)
        report.pop("reports")
        rows[name] = {**report, "cpu_s": round(time.process_time() - start, 1)}
    for task in ("docstring->code", "function->function"):
        echo(task)
        echo(table({name: row[task] for name, row in rows.items()}))
    return rows


def main(argv: list[str] | None = None) -> None:
    """``python -m mmenc_code.minilm`` ``random MINILM OUT`` | ``start CONFIG OUT`` |
    ``eval DATA MODEL|bm25 ... [--json FILE]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mmenc_code.minilm")
    sub = parser.add_subparsers(dest="command", required=True)
    rnd = sub.add_parser("random", help="MiniLM with fresh weights (a from-scratch start)")
    rnd.add_argument("minilm")
    rnd.add_argument("out")
    start = sub.add_parser("start", help="save a pretrain config's starting model (step 0)")
    start.add_argument("config")
    start.add_argument("out")
    ev = sub.add_parser("eval", help="held-out stdlib retrieval of saved models and bm25")
    ev.add_argument("data")
    ev.add_argument("models", nargs="+")
    ev.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.command == "random":
        print(random_minilm(args.minilm, args.out))
    elif args.command == "start":
        print(save_start(args.config, args.out))
    else:
        rows = evaluate_models(args.data, args.models)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
