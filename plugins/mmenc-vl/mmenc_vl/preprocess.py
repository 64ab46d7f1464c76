"""Text preprocessing of the official pipelines.

ALBEF cleans every caption before BERT's tokenizer (``pre_caption`` in its datasets): lower-case;
drop the characters ``, . ' ! ? " ( ) * # : ; ~``; turn ``-`` and ``/`` into spaces and
``<person>`` into ``person``; collapse runs of two or more whitespace characters into one space;
strip surrounding spaces; keep the first ``max_words`` space-separated words (30 in
pre-training and retrieval).
"""

from __future__ import annotations

import re

from mmenc.errors import InputError

_DROPPED = re.compile(r"[,.'!?\"()*#:;~]")
_RUNS = re.compile(r"\s{2,}")


def albef_caption(caption: str, max_words: int = 30) -> str:
    """ALBEF's caption cleaning (see the module docstring).

    Raises:
        InputError: for a caption that is not a string or is empty after cleaning.
    """
    if not isinstance(caption, str):
        raise InputError(repr(caption), f"a caption must be a str, not {type(caption).__name__}")
    text = _DROPPED.sub("", caption.lower())
    for old, new in (("-", " "), ("/", " "), ("<person>", "person")):
        text = text.replace(old, new)
    text = _RUNS.sub(" ", text).rstrip("\n").strip(" ")
    words = text.split(" ")
    if len(words) > max_words:
        text = " ".join(words[:max_words])
    if not text.strip():
        raise InputError(repr(caption), "the caption is empty after ALBEF's cleaning")
    return text
