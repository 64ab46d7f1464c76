"""Every ```python, ```bash and ```console block in README.md, docs/ (and the plugin docs of
every plugin) runs, and prints what the docs say it prints.

A block that cannot run here says so, and why, in an HTML comment right before it:
``<!-- no-run: needs the official checkpoint -->`` (it is reported as a skip with that reason;
a marker without a reason, or before a block of another kind, fails).

Documented output is checked where a block shows it:

- python: a comment beside a ``print(...)`` (or on the line right after one) that looks like
  output (it starts with a bracket, quote, digit, ``<``, ``...``, ``tensor(``/``torch.Size``,
  ``True``/``False``/``None``); prose comments ("# predicted class per image") are left alone;
- bash: comment lines right after a command are lines the command prints;
- console: a shell session. Each ``$ `` line (with the lines that complete it: a trailing
  ``\\``, an open quote, a here-document) is one command, run in turn in the same directory;
  the lines below it, up to the next ``$ ``, are whole lines it prints, in that order (other
  printed lines may come between them); ``...`` stands for any text.

Elsewhere the printed text must begin with the documented one, which may stop at a ``: ``,
``, `` or `` (`` that starts an explanation; ``...`` (or ``...a label...``) stands for any
text, and ``torch.Size([2, 32])`` reads as ``[2, 32]``.

Blocks run in a fresh directory holding links to the repository's ``tests/`` and ``examples/``,
with the environment's ``bin`` first on ``PATH``.
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
BLOCK = re.compile(r"^```(python|bash|console)\n(.*?)^```", re.S | re.M)
FENCE = re.compile(r"^```(\w*)", re.M)
NO_RUN = re.compile(r"<!--\s*no-run:(.*?)-->", re.S)
HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_]\w*)\1")
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


def doc_pages() -> list[Path]:
    return sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md"),
                   *ROOT.glob("plugins/*/docs/**/*.md")])


def no_run_reason(text: str, start: int) -> str | None:
    """The reason of the ``<!-- no-run: ... -->`` marker right before ``start``, if any."""
    before = text[:start].rstrip()
    if not before.endswith("-->"):
        return None
    marker = before[before.rfind("<!--"):]
    found = NO_RUN.fullmatch(marker)
    return None if found is None else found.group(1).strip()


def doc_blocks() -> list:
    params = []
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        rel = page.relative_to(ROOT).as_posix()
        for i, match in enumerate(BLOCK.finditer(text)):
            lang, code = match.groups()
            reason = no_run_reason(text, match.start())
            marks = [] if reason is None else [pytest.mark.skip(reason=f"no-run: {reason}")]
            params.append(pytest.param(lang, code, id=f"{rel}-{i}", marks=marks))
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


def matches_line(claim: str, printed: str) -> bool:
    """Whether ``printed`` is the line ``claim`` shows (a console transcript): the same words
    from start to end, ``...`` standing for any text."""
    claim, printed = _normal(ELIDED.sub("...", claim)), _normal(printed)
    parts = [re.escape(p) for p in claim.split("...")]
    return re.fullmatch(".*?".join(parts), printed, re.S) is not None


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


def _incomplete(command: str) -> bool:
    """Whether a console command needs the next line: a trailing backslash, an open quote or
    an unterminated here-document."""
    pending: list[str] = []
    for line in command.splitlines():
        if pending:
            if line.strip() == pending[0]:
                pending.pop(0)
            continue
        pending.extend(m.group(2) for m in HEREDOC.finditer(line))
    if pending or command.endswith("\\"):
        return True
    check = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True,
                           env={**os.environ, "LC_ALL": "C"})
    return check.returncode != 0 and bool(re.search(r"unexpected (EOF|end of file)",
                                                    check.stderr))


def console_steps(code: str) -> list[tuple[str, list[str]]]:
    """``(command, lines it prints)`` for each ``$ `` command of a console block."""
    steps: list[tuple[str, list[str]]] = []
    lines = code.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("$ "):
            command = line[2:]
            while i < len(lines) and _incomplete(command):
                command += "\n" + lines[i]
                i += 1
            steps.append((command, []))
        elif line.strip():
            if not steps:
                raise ValueError(f"console block: {line!r} comes before any `$ ` command")
            steps[-1][1].append(line)
    if not steps:
        raise ValueError("console block without a `$ ` command")
    return steps


def unmatched(claims: list[str], printed: list[str]) -> list[str]:
    """The claims that no printed line matches, in order: each claim after the last matched."""
    missing, at = [], 0
    for claim in claims:
        hit = next((j for j in range(at, len(printed)) if matches_line(claim, printed[j])),
                   None)
        if hit is None:
            missing.append(claim)
        else:
            at = hit + 1
    return missing


def run_console(code: str, cwd: Path, env: dict[str, str]) -> list[str]:
    """Runs each command in turn; what went wrong (a failing command ends the session)."""
    wrong = []
    for command, claims in console_steps(code):
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd,
                                env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=300)
        if result.returncode != 0:
            return [*wrong, f"$ {command}\nexited with {result.returncode}:\n{result.stdout}"]
        wrong += [f"$ {command}\nthe docs show {claim!r}; no printed line (in order) begins "
                  f"with it:\n{result.stdout}"
                  for claim in unmatched(claims, result.stdout.splitlines())]
    return wrong


@pytest.mark.slow
@pytest.mark.parametrize("lang,code", doc_blocks())
def test_doc_example_runs(lang, code, tmp_path):
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    work = tmp_path / "work"
    work.mkdir()
    for shared in ("tests", "examples"):
        (work / shared).symlink_to(ROOT / shared)
    if lang == "console":
        wrong = run_console(code, work, env)
        assert not wrong, "\n".join(wrong)
        return
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


def test_no_run_markers_say_why_and_sit_on_a_run_block():
    wrong = []
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        rel = page.relative_to(ROOT).as_posix()
        for marker in NO_RUN.finditer(text):
            line = text.count("\n", 0, marker.start()) + 1
            if not marker.group(1).strip():
                wrong.append(f"{rel}:{line}: a no-run marker without a reason")
            fence = FENCE.match(text[marker.end():].lstrip())
            if fence is None or fence.group(1) not in ("python", "bash", "console"):
                wrong.append(f"{rel}:{line}: a no-run marker not right before a python, bash "
                             "or console block")
        for marker in re.finditer(r"<!--\s*no[-_ ]?run\b(?!:)", text, re.I):
            line = text.count("\n", 0, marker.start()) + 1
            wrong.append(f"{rel}:{line}: write the marker as <!-- no-run: reason -->")
    assert not wrong, "\n".join(wrong)


def test_console_blocks_have_commands():
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            if match.group(1) == "console":
                where = f"{page.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}"
                try:
                    console_steps(match.group(2))
                except ValueError as exc:
                    pytest.fail(f"{where}: {exc}")


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


def test_console_steps_split_commands_and_their_output():
    code = ('$ echo a \\\n  b\na b\n$ python -c "\nprint(1)"\n1\n\n'
            '$ cat <<\'EOF\'\nit\'s\nEOF\nit\'s\n$ true  # it\'s quiet\n')
    assert console_steps(code) == [
        ("echo a \\\n  b", ["a b"]),
        ('python -c "\nprint(1)"', ["1"]),
        ("cat <<'EOF'\nit's\nEOF", ["it's"]),
        ("true  # it's quiet", []),
    ]
    with pytest.raises(ValueError, match="before any"):
        console_steps("output\n$ true")
    with pytest.raises(ValueError, match="before any"):
        console_steps("mmenc plugins  # a command without its prompt")
    with pytest.raises(ValueError, match="without"):
        console_steps("\n")


def test_console_output_is_matched_in_order():
    printed = ["parity bert: tolerance 1e-05", "  ok   last_hidden_state   7.1e-07", "PASSED"]
    assert unmatched(["parity bert: ...", "ok last_hidden_state ...", "PASSED"], printed) == []
    assert unmatched(["PASSED", "parity bert: ..."], printed) == ["parity bert: ..."]
    assert unmatched(["FAILED"], printed) == ["FAILED"]
    assert unmatched(["parity bert"], printed) == ["parity bert"]  # a whole line, not a prefix


def test_no_run_reason_is_read_right_before_a_block():
    text = "x\n<!-- no-run: needs ../shared -->\n```console\n$ true\n```\n"
    assert no_run_reason(text, text.index("```")) == "needs ../shared"
    text = "<!-- no-run: r -->\nsome prose\n```bash\ntrue\n```\n"
    assert no_run_reason(text, text.index("```")) is None


def test_console_session_shares_its_directory_and_checks_each_command(tmp_path):
    env = dict(os.environ)
    session = "$ echo 'two words' > f\n$ cat f\ntwo words\n$ wc -w < f\n2\n"
    assert run_console(session, tmp_path, env) == []
    wrong = run_console(session.replace("2\n", "3\n"), tmp_path, env)
    assert len(wrong) == 1 and "'3'" in wrong[0] and "wc -w" in wrong[0]
    wrong = run_console("$ false\n$ touch never\n", tmp_path, env)
    assert len(wrong) == 1 and "exited with 1" in wrong[0]
    assert not (tmp_path / "never").exists()
