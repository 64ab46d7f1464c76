"""Docstring <-> function pairs from the Python standard library on this machine.

Each function or method with a docstring gives one pair: the docstring's first paragraph, and
the function's source without its docstring. The group key is the top-level module
(``email`` for ``email/utils.py``); test suites, IDLE, lib2to3, turtledemo and ensurepip are
skipped. Source lines are sliced by ``lineno`` / ``end_lineno``.
"""

from __future__ import annotations

import ast
import sysconfig
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mmenc.data import held_out

SKIP_PARTS = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "ensurepip", "site-packages",
              "__pycache__", "dist-packages"}


@dataclass(frozen=True)
class CodePair:
    """One function: where it is, its docstring summary and its code."""

    id: str
    module: str
    docstring: str
    code: str

    @property
    def test(self) -> bool:
        return held_out(self.module)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def first_paragraph(doc: str) -> str:
    para = doc.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in para.splitlines()).strip()


def _without_docstring(lines: list[str], fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    doc = fn.body[0]
    start, end = fn.lineno - 1, fn.end_lineno or fn.lineno
    if fn.decorator_list:
        start = fn.decorator_list[0].lineno - 1
    keep = [
        line for i, line in enumerate(lines[start:end], start=start)
        if not (doc.lineno - 1 <= i <= (doc.end_lineno or doc.lineno) - 1)
    ]
    return "\n".join(keep).rstrip()


def file_pairs(path: Path, module: str, root: Path) -> Iterator[CodePair]:
    try:
        source = path.read_text(encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    lines = source.splitlines()
    rel = path.relative_to(root).as_posix()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc = ast.get_docstring(node)
        if not doc:
            continue
        summary = first_paragraph(doc)
        code = _without_docstring(lines, node)
        if len(summary) < 3 or len(code.splitlines()) < 2:
            continue
        yield CodePair(f"{rel}:{node.lineno}:{node.name}", module, summary, code)


def stdlib_pairs(root: Path | None = None) -> list[CodePair]:
    """Every docstring/function pair of the standard library, sorted by id."""
    root = root or stdlib_root()
    pairs: list[CodePair] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP_PARTS & set(rel.parts[:-1]) or rel.parts[0].startswith("test"):
            continue
        module = rel.parts[0].removesuffix(".py")
        pairs.extend(file_pairs(path, module, root))
    return sorted(pairs, key=lambda p: p.id)
