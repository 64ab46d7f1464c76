"""Code <-> text on the standard library: data, a from-scratch UniXcoder, and its evaluation.

The split is mmenc's (:mod:`mmenc.data.stdlib`): whole top-level modules are held out. Training
sees the other modules only, their functions and docstrings, and so does the BPE vocabulary.

Two retrieval tasks on the held-out modules:

- docstring -> function: the docstring's first paragraph finds the function's code (without
  its docstring); identical function bodies count as relevant;
- function -> function: a function finds the other functions documented with the same
  summary (one behaviour, several implementations: methods overridden in sibling classes,
  backends of one interface).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmenc_code.recipes import unixcoder_config

Echo = Callable[[str], None]


def splits() -> tuple[list[Any], list[Any]]:
    """``(train, test)`` standard-library pairs."""
    from mmenc.data.stdlib import stdlib_pairs

    pairs = stdlib_pairs()
    return [p for p in pairs if not p.test], [p for p in pairs if p.test]


def function_pairs(test: list[Any]) -> list[dict[str, str]]:
    """Function -> function pairs: every ordered pair of distinct functions sharing a
    docstring summary."""
    groups: dict[str, list[str]] = defaultdict(list)
    for p in test:
        if p.code not in groups[p.docstring]:
            groups[p.docstring].append(p.code)
    return [{"query": a, "function": b} for codes in groups.values() if len(codes) > 1
            for a in codes for b in codes if a != b]


def write_manifests(train: list[Any], test: list[Any], out: Path) -> dict[str, Path]:
    """``train.jsonl`` (``code``, ``text``, ``ast`` views of each function), ``test.jsonl``
    (``docstring`` / ``code``) and ``functions.jsonl`` (``query`` / ``function``)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"train": out / "train.jsonl", "test": out / "test.jsonl",
             "functions": out / "functions.jsonl"}
    with paths["train"].open("w", encoding="utf-8") as f:
        for p in train:
            f.write(json.dumps({"id": p.id, "code": p.code, "text": p.docstring, "ast": p.code})
                    + "\n")
    with paths["test"].open("w", encoding="utf-8") as f:
        for p in test:
            f.write(json.dumps({"id": p.id, "docstring": p.docstring, "code": p.code}) + "\n")
    with paths["functions"].open("w", encoding="utf-8") as f:
        for row in function_pairs(test):
            f.write(json.dumps(row) + "\n")
    return paths


def train_vocabulary(train: list[Any], out: Path, vocab_size: int = 8000) -> Path:
    """A byte-level BPE trained on the training functions and docstrings."""
    from mmenc_code.tokenizer import save_vocabulary, train_bpe

    tok = train_bpe([t for p in train for t in (p.code, p.docstring)], vocab_size)
    return save_vocabulary(tok, out)


def pretrain_config(data: Path, vocabulary: Path, out: Path, steps: int, vocab_size: int,
                    dim: int = 256, depth: int = 4, batch_size: int = 64,
                    code_length: int = 192, text_length: int = 64,
                    lr: float = 5e-4) -> dict[str, Any]:
    """UniXcoder from scratch: contrastive docstring <-> code with in-batch negatives."""
    config = unixcoder_config(dim, depth, dim // 64, 4 * dim, vocab_size, max_length=code_length,
                              views=("code", "text"), kind="bpe")
    for view, length in (("code", code_length), ("text", text_length)):
        config["tokenizers"][view].update(file=str(vocabulary), max_length=length)
    config["encoder"]["dropout"] = 0.1
    return {
        "model": {"recipe": "unixcoder-tiny", "overrides": config},
        "objectives": [{"name": "contrastive", "modalities": ["text", "code"]}],
        "data": {"train": str(data / "train.jsonl"), "modalities": ["code", "text"]},
        "batch_size": batch_size, "steps": steps, "log_every": 25, "seed": 0,
        "optim": {"lr": lr, "warmup_steps": max(1, steps // 20), "weight_decay": 0.01,
                  "min_lr": 1e-5},
        "checkpoint": {"every": max(1, steps // 2), "keep": 1},
        "output_dir": str(out),
    }


def warm_config(data: Path, minilm: Path, out: Path, steps: int, batch_size: int = 64,
                code_length: int = 128, lr: float = 3e-5) -> dict[str, Any]:
    """A code-text dual encoder whose towers both start from the converted MiniLM: the text
    tower frozen, the code tower trained contrastively (no projection, so step 0 is MiniLM's
    zero-shot space)."""
    return {
        "model": {"recipe": "code-text-tiny", "overrides": {"embed_dim": None},
                  "warm_start": {"code": str(minilm), "text": str(minilm)},
                  "freeze": ["towers.text"]},
        "objectives": [{"name": "contrastive", "modalities": ["text", "code"]}],
        "data": {"train": str(data / "train.jsonl"), "modalities": ["code", "text"]},
        "batch_size": batch_size, "steps": steps, "log_every": 25, "seed": 0,
        "optim": {"lr": lr, "warmup_steps": max(1, steps // 10), "weight_decay": 0.01,
                  "min_lr": lr / 10},
        "checkpoint": {"every": max(1, steps // 2), "keep": 1},
        "output_dir": str(out),
    }


def evaluate(model: Any, paths: dict[str, Path], code_modality: str = "code",
             text_modality: str = "text") -> dict[str, Any]:
    """Both tasks' reports for a model (or the ``bm25`` scorer)."""
    from mmenc.retrieval.evaluate import evaluate_retrieval, read_manifest

    quiet = {"batch_size": 32, "echo": lambda _: None, "show_progress_bar": False}
    doc = evaluate_retrieval(model, read_manifest(paths["test"]), text_modality, code_modality,
                             query_key="docstring", gallery_key="code", **quiet)
    fun = evaluate_retrieval(model, read_manifest(paths["functions"]), code_modality,
                             code_modality, query_key="query", gallery_key="function",
                             exclude_identical=True, **quiet)
    return {"docstring->code": doc["metrics"]["docstring->code"],
            "code->docstring": doc["metrics"]["code->docstring"],
            "function->function": fun["metrics"]["query->function"],
            "counts": {"docstring": doc["counts"], "function": fun["counts"]}}


def run(out: Path, steps: int, minilm: Any | None = None, echo: Echo = print,
        **sizes: Any) -> dict[str, Any]:
    """The whole pairing: data, vocabulary, pretraining, and the table against BM25 (and the
    converted MiniLM when given)."""
    import shutil

    from mmenc.model import load
    from mmenc.retrieval.lexical import Bm25Scorer
    from mmenc.train import pretrain

    train, test = splits()
    paths = write_manifests(train, test, out / "data")
    vocabulary = train_vocabulary(train, out / "vocabulary")
    from tokenizers import Tokenizer

    vocab_size = Tokenizer.from_file(str(vocabulary)).get_vocab_size(with_added_tokens=True)
    echo(f"  {len(train)} training functions, {len(test)} held-out from "
         f"{len({p.module for p in test})} unseen modules; BPE vocabulary {vocab_size}")
    run_dir = out / "pretrain"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    result = pretrain(pretrain_config(out / "data", vocabulary, run_dir, steps, vocab_size,
                                      **sizes))
    seconds = time.perf_counter() - t0
    echo(f"  pretrained UniXcoder from scratch: {result.step} steps in {seconds:.0f} s "
         f"(final loss {result.metrics['loss']:.3f})")
    rows = {"UniXcoder, from scratch": evaluate(load(result.model_dir), paths),
            "BM25 (identifiers split)": evaluate(Bm25Scorer(), paths)}
    if minilm is not None:
        rows["MiniLM-L6, zero-shot"] = evaluate(minilm, paths, "text", "text")
    return {"task": "stdlib docstring -> function and function -> function (held-out modules)",
            "train_functions": len(train), "test_functions": len(test),
            "vocab_size": vocab_size, "steps": result.step, "pretrain_seconds": round(seconds),
            "model": str(result.model_dir), "rows": rows}
