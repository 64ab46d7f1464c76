"""The ``code`` and ``ast`` modalities: source code as text, validated.

A code item is a ``str``, UTF-8 ``bytes``, or a :class:`pathlib.Path` of a source file. Code that
does not parse is still code (the AST view marks the broken region); what is refused is what
cannot be source at all: undecodable bytes, strings holding lone surrogates (what decoding
with ``errors="surrogateescape"`` leaves for undecodable bytes), binary data, empty fragments
(a leading byte-order mark is dropped first, so a file holding only a BOM is empty), and items
beyond the cost cap of :class:`CodeLimits`. What one item costs to tokenize is capped by the
tokenizers (:mod:`mmenc_code.tokenizer`: characters per token, AST depth).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mmenc.errors import InputError

EXAMPLES = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(3):\n    print(i)",
    "class Stack:\n    def push(self, x):\n        self.items.append(x)\n",
    "def broken(:\n    return",
]

# control characters other than \t \n \v \f \r (and ESC, used by ANSI colour codes)
_BINARY = frozenset(range(32)) - {9, 10, 11, 12, 13, 27}
_SURROGATE = re.compile("[\ud800-\udfff]")
BOM = "\ufeff"


@dataclass(frozen=True)
class CodeLimits:
    """What one code item may be; beyond a cap it is refused with an ``InputError``.

    Args:
        max_chars: most characters in one fragment or file (files are checked on their size
            in bytes before they are read).
    """

    max_chars: int = 4_000_000


LIMITS = CodeLimits()
"""The caps :func:`load_code` applies when it is given none (replace it to change them for
every caller)."""


def _label(item: object) -> str:
    if isinstance(item, Path):
        return str(item)
    return repr(item[:40] if isinstance(item, str | bytes | bytearray) else item)


def load_code(item: object, limits: CodeLimits | None = None) -> str:
    """One code fragment as ``str``, without a leading byte-order mark.

    Raises:
        InputError: not text (wrong type, undecodable or binary bytes, NUL characters, lone
            surrogates), empty / whitespace only, or longer than ``limits.max_chars``
            (default :data:`LIMITS`).
    """
    limits = LIMITS if limits is None else limits
    label = _label(item)
    if isinstance(item, Path):
        try:
            size = item.stat().st_size
            if size > 4 * limits.max_chars:  # UTF-8 takes at most 4 bytes a character
                raise InputError(label, f"too large: {size} bytes (at most "
                                        f"{4 * limits.max_chars}, CodeLimits.max_chars x 4)")
            item = item.read_bytes()
        except OSError as exc:
            raise InputError(label, f"cannot read the file ({exc.strerror})") from None
    if isinstance(item, bytes | bytearray):
        try:
            item = bytes(item).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(label, f"not UTF-8 source ({exc.reason} at byte {exc.start})"
                             ) from None
    if not isinstance(item, str):
        raise InputError(label, f"code must be a str, bytes or a Path, got {type(item).__name__}")
    if len(item) > limits.max_chars:
        raise InputError(label, f"too long: {len(item)} characters (at most {limits.max_chars}, "
                                "CodeLimits.max_chars)")
    surrogate = _SURROGATE.search(item)
    if surrogate:
        raise InputError(label, f"lone surrogate U+{ord(surrogate.group()):04X} at character "
                                f"{surrogate.start()}: not valid Unicode (undecodable bytes "
                                "read with surrogateescape?)")
    if item.startswith(BOM):
        item = item[1:]
    if "\x00" in item:
        raise InputError(label, "contains NUL characters: binary data, not source code")
    sample = item[:4096]
    control = sum(1 for ch in sample if ord(ch) in _BINARY)
    if control > max(2, len(sample) // 100):
        raise InputError(label, f"{control} control characters in the first {len(sample)}: "
                                "binary data, not source code")
    if not item.strip():
        raise InputError(label, "empty code fragment")
    return item


def example_code() -> list[str]:
    return list(EXAMPLES)
