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


def write_manifests(train: list[Any], test: list[Any], out: Path,
                    extra: list[dict[str, str]] = ()) -> dict[str, Path]:  # type: ignore[assignment]
    """``train.jsonl`` (``code``, ``text``, ``ast`` views of each function, then the ``extra``
    code/text pairs), ``test.jsonl`` (``docstring`` / ``code``) and ``functions.jsonl``
    (``query`` / ``function``)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"train": out / "train.jsonl", "test": out / "test.jsonl",
             "functions": out / "functions.jsonl"}
    with paths["train"].open("w", encoding="utf-8") as f:
        for p in train:
            f.write(json.dumps({"id": p.id, "code": p.code, "text": p.docstring, "ast": p.code})
                    + "\n")
        for row in extra:
            f.write(json.dumps({"code": row["code"], "text": row["text"], "ast": row["code"]})
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
                              kind="bpe")
    for view, length in (("code", code_length), ("text", text_length), ("ast", code_length)):
        config["tokenizers"][view].update(file=str(Path(vocabulary).resolve()), max_length=length)
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


def warm_config(data: Path, minilm: Path, out: Path, steps: int, batch_size: int = 32,
                lr: float = 2e-5) -> dict[str, Any]:
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
            "counts": {"docstring": doc["counts"], "function": fun["counts"]},
            "reports": {"docstring": doc, "function": fun}}


def write_reports(rows: dict[str, Any], out: Path) -> dict[str, Path]:
    """``report.json`` and ``recall.png`` per task under ``out/<task>/``: the first row's
    report (the model trained here) with every other row drawn as a baseline. The full reports
    are taken out of ``rows``."""
    from mmenc.retrieval.evaluate import write_report

    reports = {name: row.pop("reports") for name, row in rows.items()}
    first = next(iter(reports))
    written = {}
    for task in ("docstring", "function"):
        baselines = {name: r[task]["metrics"] for name, r in reports.items() if name != first}
        written[task] = write_report(reports[first][task], out / task, baselines)["report"]
    return written


def shorter(model_dir: Path, modality: str, max_length: int, out: Path) -> Path:
    """A copy of a saved model whose tokenizer of ``modality`` cuts at ``max_length``."""
    import mmenc

    model = mmenc.load(model_dir)
    tok = model.tokenizers[modality]
    tok.max_length = max_length
    tok.tokenizer.enable_truncation(max_length)
    model.save_pretrained(out)
    return out


def run(out: Path, scratch_steps: int, warm_steps: int = 0, minilm: Path | None = None,
        echo: Echo = print, code_length: int = 96, **sizes: Any) -> dict[str, Any]:
    """The whole pairing: data, vocabulary, UniXcoder from scratch, (with ``minilm``) a code
    tower warm-started from it and MiniLM zero-shot, and BM25, on both tasks."""

    from tokenizers import Tokenizer

    from mmenc.model import load
    from mmenc.retrieval.lexical import Bm25Scorer
    from mmenc.train import pretrain_afresh

    train, test = splits()
    paths = write_manifests(train, test, out / "data")
    vocabulary = train_vocabulary(train, out / "vocabulary")
    vocab_size = Tokenizer.from_file(str(vocabulary)).get_vocab_size(with_added_tokens=True)
    echo(f"  {len(train)} training functions; {len(test)} held-out from "
         f"{len({p.module for p in test})} unseen modules; BPE vocabulary {vocab_size}")
    runs: dict[str, Any] = {}
    rows: dict[str, Any] = {}

    def train_and_eval(name: str, config: dict[str, Any], modalities: tuple[str, str]) -> None:
        result, seconds = pretrain_afresh(config)
        echo(f"  {name}: {result.step} steps in {seconds:.0f} s "
             f"(final loss {result.metrics['loss']:.3f})")
        runs[name] = {"steps": result.step, "seconds": round(seconds),
                      "model": str(result.model_dir)}
        rows[name] = evaluate(load(result.model_dir), paths, *modalities)

    train_and_eval("UniXcoder, from scratch", pretrain_config(
        out / "data", vocabulary, out / "scratch", scratch_steps, vocab_size,
        code_length=code_length, **sizes), ("code", "text"))
    if minilm is not None and warm_steps > 0:
        short = shorter(minilm, "text", code_length, out / "minilm-code")
        config = warm_config(out / "data", short, out / "warm", warm_steps, batch_size=32,
                             lr=2e-5)
        config["model"]["warm_start"]["text"] = str(minilm)
        train_and_eval("code tower from MiniLM", config, ("code", "text"))
    if minilm is not None:
        rows["MiniLM-L6, zero-shot"] = evaluate(load(minilm), paths, "text", "text")
    rows["BM25 (identifiers split)"] = evaluate(Bm25Scorer(), paths)
    charts = write_reports(rows, out / "retrieval")
    summary = {"task": "stdlib docstring -> function and function -> function (held-out "
               "modules)", "train_functions": len(train), "test_functions": len(test),
               "vocab_size": vocab_size, "runs": runs, "rows": rows,
               "reports": {task: str(path) for task, path in charts.items()}}
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


SCRATCH_STEPS, WARM_STEPS = 600, 40


def demo(out: Path, minilm: Path, steps: int | None, echo: Echo) -> dict[str, Any]:
    """The main job's code pairing (``steps`` scales both trainings; None: the defaults)."""
    from mmenc.demo import table

    scratch = SCRATCH_STEPS if steps is None else steps
    warm = WARM_STEPS if steps is None else min(WARM_STEPS, steps)
    report = run(out, scratch, warm, minilm, echo, dim=128, depth=2, text_length=32, lr=1e-3)
    for task in ("docstring->code", "function->function"):
        echo(f"  {task}")
        echo(table({name: row[task] for name, row in report["rows"].items()}))
    return report


def name_pairs(exclude_modules: set[str]) -> list[dict[str, str]]:
    """Function name -> function pairs from the standard library outside ``exclude_modules``:
    the name split into words (``read_header`` -> "read header") and the source without its
    docstring. Every function counts, documented or not, so there are many more of them than
    docstring pairs; they teach the link between words and identifiers."""
    import ast
    import warnings

    from mmenc.data.stdlib import SKIP_PARTS, stdlib_root
    from mmenc.retrieval.lexical import words

    root = stdlib_root()
    out: list[dict[str, str]] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        module = rel.parts[0].removesuffix(".py")
        if SKIP_PARTS & set(rel.parts[:-1]) or rel.parts[0].startswith("test") \
                or module in exclude_modules:
            continue
        try:
            source = path.read_text(encoding="utf-8")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            name = " ".join(words(node.name))
            body = node.body[1:] if ast.get_docstring(node) else node.body
            if len(name) < 3 or not body or node.name.startswith("__"):
                continue
            start = body[0].lineno - 1
            code = "\n".join(lines[start: node.end_lineno or start + 1]).strip()
            if len(code) > 10:
                out.append({"code": code, "text": name})
    return out
