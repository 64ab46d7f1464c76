"""UniXcoder's tokenizers: byte-level BPE (HF ``tokenizers``) with the mode prefixes.

Every sequence starts with ``<s> MODE </s>``; the body is cut by the mode's rule, as the official
``UniXcoder.tokenize``:

==================== ============================================ ===========================
mode                 ids                                          attention
==================== ============================================ ===========================
``<encoder-only>``   ``<s> MODE </s>`` + body[:L-4] + ``</s>``    bidirectional
``<decoder-only>``   ``<s> MODE </s>`` + body[-(L-3):]            causal
``<encoder-decoder>`` ``<s> MODE </s>`` + body[:L-5] + ``</s>``   bidirectional (the source)
==================== ============================================ ===========================

(``L`` = ``max_length``; the decoder-only body keeps its *end*, the context of a completion.)
A decoder-only batch carries ``extras["prefix_len"] = 0`` so the model attends causally.

Cost caps: before BPE (whose cost grows faster than the length of one long word: a 1 MB line
took 13 s) an item is cut to ``max_length * chars_per_token`` characters, its start (its end in
the decoder-only mode), more than the window can use; the ``ast`` view cuts the code so before
parsing, and refuses a tree nested deeper than ``max_depth`` with an ``InputError`` (Python
itself stops at 200 nested brackets). ``stats["cut"]`` counts the items cut.

Vocabularies come from an official folder (``vocab.json`` + ``merges.txt``), from a saved
``tokenizer.json``, from :func:`train_bpe` on a corpus, or (``kind: bytes``) from the bytes alone
(no merges) for tiny models, or (``kind: wordpiece``) from a BERT WordPiece ``tokenizer.json``
whose ``[unusedN]`` slots take the UniXcoder tokens (:mod:`mmenc_code.warm_start`). The three
views of a fragment share one vocabulary: ``code`` and ``text`` tokenize the string, ``ast``
its flattened syntax tree (:mod:`mmenc_code.ast_view`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from mmenc.batch import TokenBatch
from mmenc.errors import CheckpointError, ConfigError

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
MODES = ("<encoder-only>", "<decoder-only>", "<encoder-decoder>")
SENTINELS = tuple(f"<mask{i}>" for i in range(16))
VIEWS = {"unixcoder": ("code", "code"), "unixcoder-text": ("text", "text"),
         "unixcoder-ast": ("ast", "ast")}
FILE = "tokenizer-unixcoder.json"
CHARS_PER_TOKEN = 32
"""Characters kept per position of the window before BPE (byte-level BPE tokens of code are
rarely longer than 16 characters)."""
MAX_AST_DEPTH = 1000
"""Deepest syntax tree the ``ast`` view flattens."""


def _added(token: str) -> Any:
    from tokenizers import AddedToken

    # RobertaTokenizer's <mask> swallows the space before it
    return AddedToken(token, special=True, normalized=False, lstrip=token == "<mask>")


def _byte_level(tok: Any) -> Any:
    from tokenizers import decoders, pre_tokenizers

    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def vocabulary_tokens(ast_lang: str | None = "python") -> list[str]:
    """The special tokens of a vocabulary mmenc builds: RoBERTa's five, the modes, the span
    sentinels and (with ``ast_lang``) the grammar's AST markers, in that order."""
    from mmenc_code.ast_view import markers

    return [*SPECIALS, *MODES, *SENTINELS, *(markers(ast_lang) if ast_lang else [])]


def bytes_tokenizer(ast_lang: str | None = "python") -> Any:
    """Byte-level BPE without merges: the special tokens, then one token per byte."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = vocabulary_tokens(ast_lang)
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = _byte_level(Tokenizer(models.BPE(vocab=vocab, merges=[])))
    tok.add_special_tokens([_added(t) for t in specials])
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int, ast_lang: str | None = "python",
              min_frequency: int = 2) -> Any:
    """Train a byte-level BPE on ``texts`` (code and comments), with mmenc's special tokens at
    the first ids; every byte stays encodable."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = vocabulary_tokens(ast_lang)
    tok = _byte_level(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([_added(t) for t in specials])
    return tok


def roberta_tokenizer(folder: Path) -> Any:
    """The tokenizer of an official folder: ``tokenizer.json``, or ``vocab.json`` +
    ``merges.txt`` read as ``RobertaTokenizer`` reads them; ``<mask0>`` is added as the official
    ``UniXcoder`` class adds it."""
    from tokenizers import Tokenizer, models

    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        try:
            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises its own Exception type
            raise CheckpointError(f"{folder / 'tokenizer.json'}: not a tokenizer ({exc})") from None
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        try:
            model = models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
        except Exception as exc:
            raise CheckpointError(f"{folder}: vocab.json / merges.txt unreadable ({exc})") from None
        tok = _byte_level(Tokenizer(model))
    else:
        raise CheckpointError(f"{folder}: no tokenizer.json, and no vocab.json + merges.txt")
    present = [t for t in SPECIALS if tok.token_to_id(t) is not None]
    tok.add_special_tokens([_added(t) for t in [*present, "<mask0>"]])
    return tok


class UniXcoderTokenizer:
    """Items of one view -> ``TokenBatch`` in one of UniXcoder's modes.

    Args:
        tokenizer: a byte-level BPE ``tokenizers.Tokenizer`` (or a WordPiece one renamed by
            :func:`mmenc_code.warm_start.wordpiece_specials`).
        view: ``code``, ``text`` or ``ast``.
        mode: ``<encoder-only>``, ``<decoder-only>`` or ``<encoder-decoder>``.
        max_length: the longest sequence, prefix included.
        lang: the grammar of the ``ast`` view.
        name: the catalogue name (``unixcoder``, ``unixcoder-text``, ``unixcoder-ast``).
        chars_per_token: items are cut to ``max_length * chars_per_token`` characters before
            BPE (and before parsing, in the ``ast`` view).
        max_depth: deepest syntax tree accepted by the ``ast`` view.

    ``stats`` counts the items tokenized, those cut to ``max_length`` (``truncated``), those
    cut in characters before BPE (``cut``) and (``ast`` view) those whose tree holds syntax
    errors.
    """

    def __init__(self, tokenizer: Any, view: str = "code", mode: str = "<encoder-only>",
                 max_length: int = 256, lang: str = "python", name: str = "unixcoder",
                 chars_per_token: int = CHARS_PER_TOKEN,
                 max_depth: int = MAX_AST_DEPTH) -> None:
        if mode not in MODES:
            raise ConfigError(f"unixcoder tokenizer: mode must be one of {MODES}, got {mode!r}")
        if view not in ("code", "text", "ast"):
            raise ConfigError(f"unixcoder tokenizer: view must be code, text or ast, got {view!r}")
        if not 5 < int(max_length):
            raise ConfigError(f"unixcoder tokenizer: max_length {max_length} leaves no body")
        if int(chars_per_token) < 1 or int(max_depth) < 1:
            raise ConfigError(f"unixcoder tokenizer: chars_per_token ({chars_per_token}) and "
                              f"max_depth ({max_depth}) must be positive")
        self.chars_per_token, self.max_depth = int(chars_per_token), int(max_depth)
        self.tokenizer = tokenizer
        self.modality, self.view, self.mode = view, view, mode
        self.max_length, self.lang, self.name = int(max_length), lang, name
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        ids = {t: tokenizer.token_to_id(t) for t in (*SPECIALS, *MODES, *SENTINELS)}
        missing = [t for t in ("<s>", "<pad>", "</s>") if ids[t] is None]
        if missing:
            raise CheckpointError(f"unixcoder tokenizer: the vocabulary lacks {missing}")
        for m in MODES:  # vocabulary tokens; never split from text, as convert_tokens_to_ids
            if ids[m] is None:
                tokenizer.add_tokens([m])
                ids[m] = tokenizer.token_to_id(m)
        self.ids = {t: i for t, i in ids.items() if i is not None}
        self.cls_id, self.pad_id, self.sep_id = ids["<s>"], ids["<pad>"], ids["</s>"]
        self.mask_id = ids["<mask>"]
        self.sentinel_ids = [ids[s] for s in SENTINELS if ids[s] is not None]
        self.special_ids = sorted({i for i in self.ids.values()})
        self.stats: Counter[str] = Counter()

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def texts(self, items: list[object]) -> list[str]:
        """The strings BPE sees: the loaded items, or their flattened trees."""
        from mmenc.builtin.text import load_text
        from mmenc_code.modality import _label, load_code

        if self.view == "text":
            return [self.cut(load_text(x)) for x in items]
        codes = [self.cut(load_code(x)) for x in items]
        if self.view == "code":
            return codes
        from mmenc.errors import InputError
        from mmenc_code.ast_view import TooDeep, flatten

        out = []
        for item, code in zip(items, codes, strict=True):
            try:
                flat = flatten(code, self.lang, self.max_depth)
            except TooDeep as exc:
                raise InputError(_label(item), f"{exc} (the unixcoder-ast tokenizer's "
                                               "max_depth)") from None
            self.stats["syntax_errors"] += bool(flat.errors or flat.missing)
            out.append(" ".join(flat.tokens))
        return out

    def cut(self, text: str) -> str:
        """``text`` cut to ``max_length * chars_per_token`` characters: its start, or its end in
        the decoder-only mode (counted in ``stats["cut"]``)."""
        keep = self.max_length * self.chars_per_token
        if len(text) <= keep:
            return text
        self.stats["cut"] += 1
        return text[-keep:] if self.mode == "<decoder-only>" else text[:keep]

    def body_ids(self, items: list[object]) -> list[list[int]]:
        """Token ids of each item without the mode prefix, untruncated."""
        encodings = self.tokenizer.encode_batch(self.texts(items), add_special_tokens=False)
        return [list(e.ids) for e in encodings]

    def with_mode(self, body: list[int], mode: str | None = None) -> list[int]:
        """The official layout of one body in a mode (counting a cut)."""
        mode = mode or self.mode
        n = self.max_length
        head = [self.cls_id, self.ids[mode], self.sep_id]
        if mode == "<encoder-only>":
            kept = body[: n - 4]
            ids = head + kept + [self.sep_id]
        elif mode == "<decoder-only>":
            kept = body[-(n - 3):] if body else []
            ids = head + kept
        else:
            kept = body[: n - 5]
            ids = head + kept + [self.sep_id]
        self.stats["truncated"] += len(kept) < len(body)
        return ids

    def batch(self, rows: list[list[int]], mode: str | None = None) -> TokenBatch:
        """Pad rows of ids into a batch (``prefix_len = 0`` for the decoder-only mode)."""
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), n, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        extras = {}
        if (mode or self.mode) == "<decoder-only>":
            extras["prefix_len"] = torch.zeros(len(rows), dtype=torch.long)
        return TokenBatch(ids=ids, mask=mask, pad_id=self.pad_id, extras=extras)

    def __call__(self, items: list[object]) -> TokenBatch:
        bodies = self.body_ids(items)
        self.stats["items"] += len(bodies)
        return self.batch([self.with_mode(b) for b in bodies])

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))

    @property
    def file(self) -> str:
        """Its file in a saved model: one per view, since views may hold other vocabularies."""
        return FILE if self.name == "unixcoder" else f"tokenizer-{self.name}.json"

    @property
    def kind(self) -> str:
        """The ``kind`` its saved configuration names: ``wordpiece`` for a renamed BERT
        vocabulary (:mod:`mmenc_code.warm_start`), ``bpe`` otherwise (official, trained and
        bytes-only vocabularies are all byte-level BPE)."""
        from tokenizers import models

        return "wordpiece" if isinstance(self.tokenizer.model, models.WordPiece) else "bpe"

    def config(self) -> dict[str, Any]:
        return {"tokenizer": self.name, "kind": self.kind, "file": self.file, "mode": self.mode,
                "max_length": self.max_length, "lang": self.lang,
                "chars_per_token": self.chars_per_token, "max_depth": self.max_depth}

    def save(self, directory: str) -> None:
        self.tokenizer.save(str(Path(directory) / self.file))


class NoCodeTokenizer:
    """The tokenizer of a checkpoint converted without vocabulary files: the model runs on ids,
    and tokenizing raw items says what is missing."""

    def __init__(self, name: str, pad_id: int = 1) -> None:
        self.name, self.pad_id = name, pad_id
        self.modality = VIEWS[name][0]

    def __call__(self, items: list[object]) -> TokenBatch:
        raise CheckpointError(
            "this model has no tokenizer: its checkpoint came without vocab.json + merges.txt "
            "(or tokenizer.json); convert it again with -o tokenizer=DIR")

    def config(self) -> dict[str, Any]:
        return {"tokenizer": self.name, "kind": "none", "pad_id": self.pad_id}

    def save(self, directory: str) -> None:
        """Nothing to write."""


def build(name: str, config: dict[str, Any], directory: Path | None) -> Any:
    """A tokenizer of one view from its configuration (see the module docstring)."""
    kind = config.get("kind", "bytes")
    view = VIEWS[name][1]
    options = {"mode": config.get("mode", "<encoder-only>"),
               "max_length": int(config.get("max_length", 256)),
               "lang": config.get("lang", "python"),
               "chars_per_token": int(config.get("chars_per_token", CHARS_PER_TOKEN)),
               "max_depth": int(config.get("max_depth", MAX_AST_DEPTH))}
    from mmenc_code.ast_view import GRAMMARS

    if not isinstance(options["lang"], str) or options["lang"] not in GRAMMARS:
        raise CheckpointError(f"unixcoder tokenizer: lang {options['lang']!r} is not a known "
                              f"grammar ({', '.join(GRAMMARS)})")
    if kind == "none":
        return NoCodeTokenizer(name, int(config.get("pad_id", 1)))
    file = Path(str(config.get("file", FILE)))  # inside a saved model's folder
    if directory is not None:
        from mmenc.trust import folder_file

        saved: Path | None = folder_file(directory, file, "tokenizer file")
    else:
        saved = file if file.is_absolute() else None
    if saved is not None and saved.is_file():
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(saved))
        except Exception as exc:
            raise CheckpointError(f"{saved}: not a readable tokenizer.json ({exc})") from None
        if kind == "wordpiece":  # a BERT vocabulary: specials renamed, [unusedN] slots taken
            from mmenc_code.warm_start import wordpiece_specials

            tok = wordpiece_specials(tok, options["lang"])
    elif kind == "bytes":
        tok = bytes_tokenizer(options["lang"])
    elif kind == "roberta":
        if directory is None:
            raise CheckpointError("unixcoder tokenizer 'roberta' needs the folder of vocab.json")
        tok = roberta_tokenizer(Path(directory))
    else:
        raise CheckpointError(f"unixcoder tokenizer {kind!r}: {saved or config.get('file', FILE)}"
                              " not found")
    return UniXcoderTokenizer(tok, view=view, name=name, **options)


def code_tokenizer(config: dict[str, Any], directory: Path | None = None) -> Any:
    return build("unixcoder", config, directory)


def text_tokenizer(config: dict[str, Any], directory: Path | None = None) -> Any:
    return build("unixcoder-text", config, directory)


def ast_tokenizer(config: dict[str, Any], directory: Path | None = None) -> Any:
    return build("unixcoder-ast", config, directory)


def save_vocabulary(tok: Any, directory: Path) -> Path:
    """Write a trained tokenizer where :func:`build` finds it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE
    tok.save(str(path))
    return path
