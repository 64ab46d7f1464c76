"""The built-in ``text`` modality and its tokenizer (HF ``tokenizers``).

An empty string is valid text: it tokenizes to the special tokens alone (``[CLS] [SEP]``).

Cost caps (:class:`TextLimits`, in force: :data:`LIMITS`): a text longer than ``max_chars`` is
refused; before BPE a text is cut to ``max_length * chars_per_token`` characters, more than the
window can use (BPE's cost grows faster than the length of one long word).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmenc.batch import TokenBatch
from mmenc.errors import CheckpointError, InputError

EXAMPLES = [
    "a photo of a cat",
    "grinning face with big eyes",
    "Return the sum of two numbers.",
    "",
]


@dataclass(frozen=True)
class TextLimits:
    """What one text may cost.

    Args:
        max_chars: longest text accepted (longer: an ``InputError``).
        chars_per_token: the tokenizer cuts a text to ``max_length * chars_per_token``
            characters before BPE (counted in its ``stats["cut"]``).
    """

    max_chars: int = 4_000_000
    chars_per_token: int = 32


LIMITS = TextLimits()
"""The caps in force (replace it to change them for every caller)."""
_SURROGATE = re.compile("[\ud800-\udfff]")


def load_text(item: object, limits: TextLimits | None = None) -> str:
    """Validate one text item: a ``str``, or UTF-8 ``bytes``; NUL characters, lone surrogates
    (left by ``surrogateescape`` decoding) and texts over ``limits.max_chars`` are refused."""
    limits = LIMITS if limits is None else limits
    if isinstance(item, bytes | bytearray):
        raw = bytes(item)
        try:
            item = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(repr(raw[:40]), f"not UTF-8 text ({exc.reason})") from None
    if not isinstance(item, str):
        raise InputError(repr(item), f"text must be a str, got {type(item).__name__}")
    if "\x00" in item:
        raise InputError(repr(item[:40]), "contains NUL characters: binary data, not text")
    if len(item) > limits.max_chars:
        raise InputError(repr(item[:40]), f"too long: {len(item)} characters (at most "
                                          f"{limits.max_chars}, TextLimits.max_chars)")
    surrogate = _SURROGATE.search(item)
    if surrogate:
        raise InputError(repr(item[:40]), f"lone surrogate U+{ord(surrogate.group()):04X} at "
                                          f"character {surrogate.start()}: not valid Unicode")
    return item


def example_text() -> list[str]:
    return list(EXAMPLES)


def _byte_level_tokenizer() -> Any:
    """A byte-level tokenizer with no merges: every UTF-8 byte is a token (for tiny models)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tok


def _wordpiece_from_vocab(vocab_file: Path, lowercase: bool) -> Any:
    """BERT's WordPiece tokenizer from a ``vocab.txt``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordPiece.from_file(str(vocab_file), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return tok


class TextTokenizer:
    """Strings -> ``TokenBatch(ids [b n], mask [b n])`` with HF ``tokenizers``.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` that adds the model's special tokens.
        max_length: longer texts are truncated (the special tokens are kept).
        pad_id: the pad token id.
        file: file name used when the tokenizer is saved with a model.
        clean: the catalogue name of a registered text cleaner applied to each text first (a
            pipeline's own caption cleaning, e.g. ALBEF's ``albef-caption``); it may raise
            :class:`mmenc.InputError` for a text it refuses. The import path of a registered
            cleaner (older configurations) maps to its name; nothing else is accepted.
    """

    modality = "text"

    def __init__(self, tokenizer: Any, max_length: int = 128, pad_id: int = 0,
                 file: str = "tokenizer-text.json", clean: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = pad_id
        self.file = file
        self.clean: str | None = None
        self._clean: Any = None
        if clean is not None:
            from mmenc.specs import resolve
            from mmenc.trust import find_cleaner, registered_cleaners

            spec = find_cleaner(clean, registered_cleaners())
            self.clean, self._clean = spec.name, resolve(spec.target)
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.no_padding()
        self.stats: Counter[str] = Counter()

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def __call__(self, items: list[object]) -> TokenBatch:
        texts = [load_text(t) for t in items]
        if self._clean is not None:
            texts = [self._clean(t) for t in texts]
        keep = self.max_length * LIMITS.chars_per_token
        self.stats["cut"] += sum(len(t) > keep for t in texts)
        texts = [t[:keep] for t in texts]
        encodings = self.tokenizer.encode_batch(texts)
        n = max(len(e.ids) for e in encodings)
        ids = torch.full((len(texts), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(texts), n, dtype=torch.bool)
        for i, enc in enumerate(encodings):
            ids[i, : len(enc.ids)] = torch.tensor(enc.ids, dtype=torch.long)
            mask[i, : len(enc.ids)] = True
        return TokenBatch(ids=ids, mask=mask, pad_id=self.pad_id)

    def config(self) -> dict[str, object]:
        out: dict[str, object] = {"tokenizer": "text", "kind": "hf-tokenizers",
                                  "file": self.file, "max_length": self.max_length,
                                  "pad_id": self.pad_id}
        if self.clean is not None:
            out["clean"] = self.clean
        return out

    def save(self, directory: str) -> None:
        self.tokenizer.no_truncation()
        try:
            self.tokenizer.save(str(Path(directory) / self.file))
        finally:
            self.tokenizer.enable_truncation(self.max_length)


class NoTokenizer:
    """Stands in for the vocabulary of a checkpoint converted without tokenizer files: the
    model runs on token ids, and tokenizing raw text says what is missing."""

    modality = "text"

    def __init__(self, pad_id: int = 0) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[object]) -> TokenBatch:
        raise CheckpointError(
            "this model has no tokenizer: its checkpoint came without tokenizer.json or "
            "vocab.txt; convert it again with -o tokenizer=DIR (a folder holding them)")

    def config(self) -> dict[str, object]:
        return {"tokenizer": "text", "kind": "none", "pad_id": self.pad_id}

    def save(self, directory: str) -> None:
        """Nothing to write."""


def text_tokenizer(config: dict[str, Any],
                   directory: Path | None = None) -> TextTokenizer | NoTokenizer:
    """Build a text tokenizer from its configuration.

    ``config["kind"]``: ``"hf-tokenizers"`` reads ``config["file"]`` (a ``tokenizer.json``)
    from ``directory``; ``"bytes"`` builds the byte-level tokenizer of the tiny recipes;
    ``"wordpiece"`` reads ``config["vocab"]`` (BERT's ``vocab.txt``) from ``directory``.
    """
    from tokenizers import Tokenizer

    kind = config.get("kind", "bytes")
    max_length = int(config.get("max_length", 128))
    if kind == "none":
        return NoTokenizer(int(config.get("pad_id", 0)))
    if kind == "bytes" and directory is None:
        return TextTokenizer(_byte_level_tokenizer(), max_length, pad_id=1,
                             clean=config.get("clean"))

    def located(key: str, default: str) -> Path:
        name = Path(str(config.get(key, default)))
        if directory is not None:  # a saved model reads its own folder only
            from mmenc.trust import folder_file

            return folder_file(directory, name, f"tokenizer {key}")
        if name.is_absolute():  # a new model reading a vocabulary from elsewhere
            return name
        raise CheckpointError(f"text tokenizer {kind!r} needs the directory holding its "
                              f"files (or an absolute {key!r})")

    if kind == "wordpiece":
        tok = _wordpiece_from_vocab(located("vocab", "vocab.txt"),
                                    bool(config.get("lowercase", True)))
        return TextTokenizer(tok, max_length, pad_id=int(tok.token_to_id("[PAD]") or 0),
                             clean=config.get("clean"))
    path = located("file", "tokenizer-text.json")
    if kind == "bytes" and not path.is_file():
        return TextTokenizer(_byte_level_tokenizer(), max_length, pad_id=1,
                             clean=config.get("clean"))
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception type
        raise CheckpointError(f"{path}: not a readable tokenizer.json ({exc})") from None
    pad_id = int(config.get("pad_id", 0))
    return TextTokenizer(tok, max_length, pad_id=pad_id, clean=config.get("clean"))


def hf_tokenizer_config(folder: Path, max_length: int, pad_id: int = 0) -> dict[str, Any]:
    """The tokenizer configuration of an HF model folder (``tokenizer.json`` preferred;
    ``kind: none`` when the folder has no tokenizer files)."""
    if (folder / "tokenizer.json").is_file():
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        pad = (data.get("padding") or {}).get("pad_id")
        if pad is None:
            vocab = (data.get("model") or {}).get("vocab") or {}
            pad = vocab.get("[PAD]", vocab.get("<pad>", 0)) if isinstance(vocab, dict) else 0
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise CheckpointError(f"{folder / 'tokenizer.json'}: the padding id must be a "
                                  f"non-negative integer, got {pad!r}")
        return {"tokenizer": "text", "kind": "hf-tokenizers", "file": "tokenizer.json",
                "max_length": max_length, "pad_id": pad}
    if (folder / "vocab.txt").is_file():
        return {"kind": "wordpiece", "vocab": "vocab.txt", "max_length": max_length}
    return {"kind": "none", "pad_id": pad_id}
