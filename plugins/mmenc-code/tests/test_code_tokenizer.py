"""UniXcoder tokenization: the official RobertaTokenizer's ids in every mode, the truncation
rules, trained and byte-level vocabularies, saving."""

from __future__ import annotations

import pytest
import torch

import mmenc
from mmenc.errors import ConfigError, InputError
from mmenc_code.tokenizer import (
    MODES,
    UniXcoderTokenizer,
    bytes_tokenizer,
    code_tokenizer,
    roberta_tokenizer,
    train_bpe,
)

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def push(self, item):\n        self.items.append(item)\n",
    "Return the sum of two numbers.",
    "for i in range(10):\n\tprint(i, end=' ')",
    "import os\npath = os.path.join(root, 'file.txt')",
] * 20

TEXTS = [
    "def add(a, b):\n    return a + b",
    "  leading spaces and\ttabs\n\n",
    "unicode: naïve café — 数据 🙂",
    "def <mask0>(data, file_path):\n    json.dump(data, open(file_path, 'w'))",
    "x = '<mask>' if y else <mask> z",
    "a" * 3000,
]


def official_ids(hf_tok, text: str, mode: str, max_length: int) -> list[int]:
    """UniXcoder.tokenize, as documented in the official repository's README."""
    tokens = hf_tok.tokenize(text)
    if mode == "<encoder-only>":
        tokens = [hf_tok.cls_token, mode, hf_tok.sep_token] + tokens[: max_length - 4] + [
            hf_tok.sep_token]
    elif mode == "<decoder-only>":
        tokens = [hf_tok.cls_token, mode, hf_tok.sep_token] + tokens[-(max_length - 3):]
    else:
        tokens = [hf_tok.cls_token, mode, hf_tok.sep_token] + tokens[: max_length - 5] + [
            hf_tok.sep_token]
    return hf_tok.convert_tokens_to_ids(tokens)


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vocab")
    tok = train_bpe(CORPUS, vocab_size=400, ast_lang=None, min_frequency=1)
    tok.model.save(str(folder))  # vocab.json + merges.txt, as an official folder holds them
    return folder


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("max_length", [16, 64])
def test_ids_equal_the_official_tokenizer(vocab_dir, mode, max_length):
    transformers = pytest.importorskip("transformers")
    hf = transformers.RobertaTokenizer(str(vocab_dir / "vocab.json"),
                                       str(vocab_dir / "merges.txt"))
    hf.add_tokens(["<mask0>"], special_tokens=True)
    ours = UniXcoderTokenizer(roberta_tokenizer(vocab_dir), mode=mode, max_length=max_length)
    batch = ours(TEXTS)
    for row, text in enumerate(TEXTS):
        expected = official_ids(hf, text, mode, max_length)
        got = batch.ids[row][batch.mask[row]].tolist()
        assert got == expected, (text[:30], mode)
    if mode == "<decoder-only>":
        assert batch.extras["prefix_len"].tolist() == [0] * len(TEXTS)
    else:
        assert "prefix_len" not in batch.extras


def test_truncation_is_counted_and_keeps_the_right_end():
    tok = code_tokenizer({"max_length": 12, "mode": "<decoder-only>"})
    body = tok.body_ids(["x = 1\n" * 20])[0]
    batch = tok(["x = 1\n" * 20, "y"])
    assert tok.stats["truncated"] == 1 and tok.stats["items"] == 2
    assert batch.ids[0].tolist()[3:] == body[-9:]  # the end is the context of a completion
    enc = code_tokenizer({"max_length": 12})
    assert enc(["x = 1\n" * 20]).ids[0].tolist()[3:-1] == body[:8]
    assert enc.stats["truncated"] == 1


def test_byte_level_vocabulary_encodes_anything_and_decodes_back():
    tok = code_tokenizer({"max_length": 4096})
    text = "print('héllo \u2603 \U0001f600')\r\n\x1b[31m"
    ids = tok([text]).ids[0].tolist()
    assert tok.decode(ids[3:-1]) == text
    assert max(ids) < tok.vocab_size <= 1024


def test_views_share_one_vocabulary_and_ast_markers_are_single_tokens():
    model = mmenc.create_model("unixcoder-tiny")
    ast = model.tokenizers["ast"]
    ids = ast(["def f(a):\n    return a"]).ids[0].tolist()
    vocab = ast.tokenizer.get_vocab()
    assert vocab["<function_definition,left>"] in ids
    assert vocab["<function_definition,right>"] in ids
    assert model.tokenizers["code"].tokenizer.get_vocab() == vocab


def test_saved_tokenizer_rebuilds_identical_batches(tmp_path, vocab_dir):
    tok = UniXcoderTokenizer(roberta_tokenizer(vocab_dir), mode="<encoder-decoder>",
                             max_length=32)
    tok.save(str(tmp_path))
    again = code_tokenizer(tok.config(), tmp_path)
    a, b = tok(TEXTS), again(TEXTS)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.mask, b.mask)


def test_bad_items_and_configs_are_named():
    tok = code_tokenizer({})
    with pytest.raises(InputError, match="not UTF-8"):
        tok([b"\xff\xfe\x00garbage"])
    with pytest.raises(InputError, match="empty code"):
        tok(["   \n"])
    with pytest.raises(InputError, match="binary data"):
        tok([bytes(range(1, 32)) * 10])
    with pytest.raises(ConfigError, match="mode"):
        code_tokenizer({"mode": "<decoder>"})
    with pytest.raises(ConfigError, match="max_length"):
        code_tokenizer({"max_length": 4})


def test_vocabulary_without_mode_tokens_gets_them(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
                                        + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = UniXcoderTokenizer(Tokenizer(models.BPE(vocab=vocab, merges=[])))
    assert {tok.ids[m] for m in MODES} == {len(vocab), len(vocab) + 1, len(vocab) + 2}
    assert bytes_tokenizer(None).token_to_id("<encoder-only>") == 5


def test_views_with_different_vocabularies_survive_saving(tmp_path, vocab_dir):
    trained = tmp_path / "bpe.json"
    roberta_tokenizer(vocab_dir).save(str(trained))
    bpe = {"kind": "bpe", "file": str(trained), "max_length": 32}
    model = mmenc.create_model("unixcoder-tiny", tokenizers={"code": bpe, "text": bpe})
    sizes = {v: t.vocab_size for v, t in model.tokenizers.items()}
    assert sizes["code"] == sizes["text"] != sizes["ast"]  # ast keeps the byte-level default
    model.save_pretrained(tmp_path / "saved")
    again = mmenc.load(tmp_path / "saved")
    assert {v: t.vocab_size for v, t in again.tokenizers.items()} == sizes
    for view in ("code", "text", "ast"):
        assert torch.equal(again.tokenize(["def f(x): return x"], view).ids,
                           model.tokenize(["def f(x): return x"], view).ids)
