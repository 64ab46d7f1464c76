"""Every ```python and ```bash block in docs/ (and the plugin docs of every plugin) runs, and
prints what the docs say it prints.

Documented output is checked where a block shows it:

- python: a comment beside a ``print(...)`` (or on the line right after one) that looks like
  output (it starts with a bracket, quote, digit, ``<``, ``...``, ``tensor(``/``torch.Size``,
  ``True``/``False``/``None``); prose comments ("# predicted class per image") are left alone;
- bash: comment lines right after a command are lines the command prints.

The printed text must begin with the documented one, which may stop at a ``: ``, ``, `` or
`` (`` that starts an explanation; ``...`` (or ``...a label...``) stands for any text, and
``torch.Size([2, 32])`` reads as ``[2, 32]``.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.S | re.M)
OUTPUT_LIKE = re.compile(r"""^(?:[\[({'"<\-.0-9]|tensor\(|torch\.Size|True|False|None)""")
SEPARATORS = re.compile(r": |, | \(| - ")
ELIDED = re.compile(r"\.\.\.[\w -]*\.\.\.")  # "...body..." is one "..."

# Runs a block with print() recording (line, text) for lines of the block itself.
_RECORDING = """
import builtins, io, json, sys
_code, _log = sys.argv[1], sys.argv[2]
_real, _seen = builtins.print, []
def _print(*args, **kwargs):
    frame = sys._getframe(1)
    if frame.f_code.co_filename == "<doc>" and kwargs.get("file") is None:
        buf = io.StringIO()
        _real(*args, **{**kwargs, "file": buf})
        _seen.append([frame.f_lineno, buf.getvalue()])
    _real(*args, **kwargs)
builtins.print = _print
try:
    exec(compile(open(_code).read(), "<doc>", "exec"), sys.modules["__main__"].__dict__)
finally:
    open(_log, "w").write(json.dumps(_seen))
"""


def doc_blocks() -> list:
    params = []
    pages = sorted([*ROOT.glob("docs/**/*.md"), *ROOT.glob("plugins/*/docs/**/*.md")])
    for page in pages:
        for i, match in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8"))):
            lang, code = match.groups()
            rel = page.relative_to(ROOT).as_posix()
            params.append(pytest.param(lang, code, id=f"{rel}-{i}"))
    return params


def _normal(text: str) -> str:
    text = re.sub(r"torch\.Size\((\[[^\]]*\])\)", r"\1", text)
    return " ".join(text.split())


def matches(claim: str, printed: str) -> bool:
    """Whether ``printed`` begins with ``claim`` or with a part of it ending at a separator."""
    claim, printed = _normal(ELIDED.sub("...", claim)), _normal(printed)
    cuts = [m.start() for m in SEPARATORS.finditer(claim)] + [len(claim)]
    for cut in cuts:
        if cut < len(claim) and claim[:cut].rstrip().endswith("..."):
            continue  # a part ending in "..." would match anything that starts alike
        parts = [re.escape(p) for p in claim[:cut].strip().split("...")]
        if re.match(".*?".join(parts) + r"(?=\s|$)", printed, re.S):
            return True
    return False


def python_claims(code: str) -> dict[int, str]:
    """Line number -> documented output of the ``print`` on that line."""
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = code.splitlines()
    claims = {}
    for n, line in enumerate(lines, start=1):
        if not line.lstrip().startswith("print("):
            continue
        comment = comments.get(n)
        if comment is None and n < len(lines) and lines[n].lstrip().startswith("#"):
            comment = comments.get(n + 1)
        if comment and OUTPUT_LIKE.match(comment):
            claims[n] = comment
    return claims


def bash_claims(code: str) -> list[str]:
    """Comment lines right after a command: lines that command prints."""
    claims, previous = [], ""
    for line in code.splitlines():
        text = line.strip()
        if text.startswith("#") and previous and not previous.startswith("#"):
            claims.append(text.lstrip("#").strip())
            continue
        previous = text
    return claims


@pytest.mark.parametrize("lang,code", doc_blocks())
def test_doc_example_runs(lang, code, tmp_path):
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    work = tmp_path / "work"
    work.mkdir()
    (work / "tests").symlink_to(ROOT / "tests")
    log = tmp_path / "printed.json"
    if lang == "python":
        (tmp_path / "block.py").write_text(code, encoding="utf-8")
        cmd = [sys.executable, "-c", _RECORDING, str(tmp_path / "block.py"), str(log)]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", code]
    result = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    wrong = []
    if lang == "python":
        printed: dict[int, str] = {}
        for line, text in json.loads(log.read_text()):
            printed.setdefault(line, text)
        for line, claim in python_claims(code).items():
            got = printed.get(line)
            if got is None or not matches(claim, got):
                wrong.append(f"line {line}: the docs show {claim!r}, it printed {got!r}")
    else:
        out = (result.stdout + result.stderr).splitlines()
        for claim in bash_claims(code):
            if not any(matches(claim, line) for line in out):
                wrong.append(f"the docs show {claim!r}; no printed line begins with it")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("claim,printed,ok", [
    ("[32, 4]", "torch.Size([32, 4])", True),
    ("torch.Size([2, 4]), cosine", "torch.Size([2, 4])", True),
    ("1: marked, still encodable", "0", False),
    ("1: marked, still encodable", "1", True),
    ("{'corpus_id': 3, 'score': 0.99...}", "{'corpus_id': 3, 'score': 0.9912}", True),
    ("{'corpus_id': 3, 'score': 0.99...}", "{'corpus_id': 4, 'score': 0.9912}", False),
    ("[2, 7, 64], depth + 1", "torch.Size([2, 7, 64]) 3", True),
    ("[2", "torch.Size([2, 7, 64])", False),
    ("'module': the tree comes back", "module", False),
    ("[0, 5, ...body..., 2, 1, ...]: <s> ...", "[0, 5, 359, 492, 2, 1, 1]", True),
    ("[0, 5, ...body..., 2]: <s> ...", "[0, 5, 359, 492, 2, 1, 1]", False),
])
def test_documented_output_matching(claim, printed, ok):
    assert matches(claim, printed) is ok


def test_claims_are_found_beside_and_below_prints():
    code = ('x = 1\nprint(x)  # 1\nprint(x)  # the value\nprint(x)\n# [1]\n'
            'if x:\n    print(x)    # ...1\n')
    assert python_claims(code) == {2: "1", 4: "[1]", 7: "...1"}
    assert bash_claims("# intro\nmmenc x\n# x: 1 new\n\n# next\nmmenc y") == ["x: 1 new"]
