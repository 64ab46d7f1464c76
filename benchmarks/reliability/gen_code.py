"""Hostile code: slices of the standard library's source files, mutated."""

from __future__ import annotations

import random
import sys
import sysconfig
from pathlib import Path
from typing import Any

from benchmarks.reliability import gen_text, mutate
from benchmarks.reliability.gen_text import STRING_MUTATIONS, mutate_string

SKIP = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "ensurepip", "site-packages",
        "dist-packages", "__pycache__"}
TARGETS = (("code-text-tiny", "code"), ("unixcoder-tiny", "code"), ("unixcoder-tiny", "ast"))
MUTATIONS = (*STRING_MUTATIONS, "deep_parens", "deep_blocks", "deep_brackets_closed",
             "binary", "binary_bytes", "latin1_bytes", "tabs", "unterminated",
             "path_valid", "path_missing", "path_directory", "path_binary")
HEAVY = (*gen_text.HEAVY, "deep_blocks")
"""Mutations that cost seconds per input: left out of quick runs."""


def source_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py")
                  if not SKIP & set(p.relative_to(root).parts))


def load_base(cache: Path) -> list[Path]:
    return source_files()


def _slice(path: Path, rng: random.Random) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    if not lines:
        return "pass\n"
    start = rng.randrange(len(lines))
    text = "".join(lines[start:start + rng.choice((1, 5, 20, 80))])
    return text if text.strip() else "pass\n"


def make(name: str, rng: random.Random, base: list[Path], tmp: Path) -> tuple[str, Any]:
    path = base[rng.randrange(len(base))]
    if name in STRING_MUTATIONS:
        return name, mutate_string(name, _slice(path, rng), rng)
    depth = rng.choice((100, 1_000, 100_000))
    if name == "deep_parens":
        return name, "x = " + "(" * depth + "1" + ")" * rng.choice((0, depth))
    if name == "deep_blocks":
        return name, "".join(" " * i + "if x:\n" for i in range(min(depth, 5_000))) + "pass\n"
    if name == "deep_brackets_closed":
        return name, "x = " + "[" * depth + "]" * depth
    if name == "binary":
        return name, mutate.garbage(rng, 4096).decode("latin-1")
    if name == "binary_bytes":
        return name, mutate.garbage(rng, 4096)
    if name == "latin1_bytes":
        return name, ("# caf\xe9\n" + _slice(path, rng)).encode("latin-1", errors="replace")
    if name == "tabs":
        return name, _slice(path, rng).replace("    ", "\t") + "\t  \tpass\n"
    if name == "unterminated":
        return name, 'def f():\n    s = """' + _slice(path, rng)
    if name == "path_valid":
        return name, path
    if name == "path_missing":
        return name, tmp / "no-such-file.py"
    if name == "path_directory":
        return name, tmp
    if name == "path_binary":
        return name, Path(sys.executable).resolve()
    raise AssertionError(name)
