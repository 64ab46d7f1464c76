"""The ``code`` and ``ast`` modalities: source code as text, validated.

A code item is a ``str``, UTF-8 ``bytes``, or a :class:`pathlib.Path` of a source file. Code that
does not parse is still code (the AST view marks the broken region); what is refused is what
cannot be source at all: undecodable bytes, binary data, and empty fragments.
"""

from __future__ import annotations

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


def _label(item: object) -> str:
    if isinstance(item, Path):
        return str(item)
    return repr(item[:40] if isinstance(item, str | bytes | bytearray) else item)


def load_code(item: object) -> str:
    """One code fragment as ``str``.

    Raises:
        InputError: not text (wrong type, undecodable or binary bytes, NUL characters), or
            empty / whitespace only.
    """
    label = _label(item)
    if isinstance(item, Path):
        try:
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
