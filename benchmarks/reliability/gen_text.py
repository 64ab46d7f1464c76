"""Hostile strings: WordNet glosses (or standard-library docstrings) and code, mutated.

The string mutations are shared by the ``text`` and ``code`` generators.
"""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path
from typing import Any

from benchmarks.reliability import mutate

WORDNET = Path("/usr/share/wordnet")
TARGETS = (("text-tiny", "text"), ("clip-tiny", "text"), ("code-text-tiny", "text"),
           ("unixcoder-tiny", "text"), ("midi-text-tiny", "text"), ("albef-tiny", "text"),
           ("bridgetower-tiny", "text"), ("audio-text-tiny", "text"))
STRING_MUTATIONS = ("valid", "lone_surrogate", "surrogate_pair_halves", "nul", "control",
                    "long_line", "huge", "many_lines", "empty", "whitespace", "combining",
                    "bidi", "emoji", "private_use", "byte_flips", "bytes_valid",
                    "bytes_invalid", "bytes_bom", "crlf", "non_str")
MUTATIONS = STRING_MUTATIONS
HEAVY = ("long_line", "huge", "many_lines", "combining")
"""Mutations that cost seconds per input: left out of quick runs."""


def glosses(limit: int = 5_000) -> list[str]:
    """WordNet glosses (``data.noun`` ...), in file order; docstrings if WordNet is absent."""
    out: list[str] = []
    for part in ("noun", "verb", "adj", "adv"):
        path = WORDNET / f"data.{part}"
        if not path.is_file():
            continue
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(" ") or "|" not in line:
                    continue
                out.append(line.split("|", 1)[1].strip())
                if len(out) >= limit:
                    return out
    if not out:
        import ast

        for source in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:60]:
            tree = ast.parse(source.read_text(encoding="utf-8", errors="replace"))
            out += [d for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                    and (d := ast.get_docstring(n))]
    return out


def load_base(cache: Path) -> list[str]:
    return glosses()


def mutate_string(name: str, text: str, rng: random.Random) -> Any:
    """One of :data:`STRING_MUTATIONS` applied to ``text``."""
    at = rng.randrange(len(text) + 1)
    if name == "valid":
        return text
    if name == "lone_surrogate":
        return text[:at] + chr(rng.randrange(0xD800, 0xE000)) + text[at:]
    if name == "surrogate_pair_halves":
        return text[:at] + "\ud83d" * 3 + "\ude00" + text[at:]
    if name == "nul":
        return text[:at] + "\x00" + text[at:]
    if name == "control":
        return "".join(chr(rng.randrange(1, 32)) for _ in range(rng.choice((3, 200)))) + text
    if name == "long_line":
        return text[:at] + "x" * 1_000_000 + text[at:]
    if name == "huge":
        return (text + "\n") * max(1, 8_000_000 // (len(text) + 1))
    if name == "many_lines":
        return "\n" * 200_000 + text
    if name == "empty":
        return ""
    if name == "whitespace":
        return rng.choice((" ", "\n\t  \r\n", "\u3000\u00a0", "\u200b" * 10))
    if name == "combining":
        return text[:at] + "a" + "\u0301" * rng.choice((50, 100_000)) + text[at:]
    if name == "bidi":
        return "\u202e" + text + "\u2066\u2069" * 100
    if name == "emoji":
        return "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466" * 500 + text
    if name == "private_use":
        return "".join(chr(rng.randrange(0xF0000, 0x10FFFE)) for _ in range(200))
    if name == "byte_flips":
        flipped = mutate.flip_bytes(text.encode("utf-8"), rng)
        return flipped.decode("utf-8", errors="surrogateescape")
    if name == "bytes_valid":
        return text.encode("utf-8")
    if name == "bytes_invalid":
        return mutate.flip_bytes(text.encode("utf-8"), rng) + b"\xff\xfe\xc0"
    if name == "bytes_bom":
        return rng.choice((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")) + text.encode("utf-8")
    if name == "crlf":
        return text.replace("\n", "\r\n") + "\r" * 100
    if name == "non_str":
        return rng.choice((None, 42, 3.5, ["a", "b"], {"text": text}, ...))
    raise AssertionError(name)


def make(name: str, rng: random.Random, base: list[str], tmp: Path) -> tuple[str, Any]:
    return name, mutate_string(name, base[rng.randrange(len(base))], rng)
