"""Bad code items: a clear error naming the item, or a counted skip in batch jobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mmenc
from mmenc.errors import InputError
from mmenc.retrieval.search import encode_robust
from mmenc_code.modality import load_code

torch.set_num_threads(1)


@pytest.mark.parametrize(("item", "reason"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL|not UTF-8"),
    (b"caf\xe9 = 1", "not UTF-8"),
    ("", "empty code"),
    (" \n\t", "empty code"),
    ("x = 1\x00", "NUL"),
    ("".join(chr(i) for i in range(1, 9)) * 50, "binary data"),
    (3.5, "must be a str"),
    (Path("/nonexistent/file.py"), "cannot read"),
])
def test_refused_with_a_reason(item, reason):
    with pytest.raises(InputError, match=reason):
        load_code(item)


def test_files_and_syntax_errors_are_code(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f(:\n    pass\n")
    assert load_code(path).startswith("def f(")
    model = mmenc.create_model("unixcoder-tiny")
    emb = model.encode([path, "def f(:", "ok = 1"], "ast")
    assert torch.isfinite(emb).all()
    assert model.tokenizers["ast"].stats["syntax_errors"] == 2


def test_batch_jobs_skip_and_count():
    model = mmenc.create_model("unixcoder-tiny")
    items = ["def f(): pass", b"\xff\xfe", "", "x" * 5000, "y = 2"]
    emb, ok, bad = encode_robust(model, items, "code", batch_size=2, dim=None)
    assert ok == [0, 3, 4] and sorted(bad) == [1, 2]
    assert torch.isfinite(emb).all() and emb.shape[0] == 3
    assert model.tokenizers["code"].stats["truncated"] >= 1


@pytest.mark.parametrize("view", ["code", "ast"])
def test_lone_surrogates_are_refused_in_every_view(view):
    """What ``surrogateescape`` decoding leaves for undecodable bytes is not valid Unicode:
    a typed error naming the item, not a failure inside BPE or tree-sitter."""
    item = b"x = 'caf\xe9'\n".decode("utf-8", "surrogateescape")
    with pytest.raises(InputError, match=r"lone surrogate U\+DCE9 at character 8"):
        load_code(item)
    model = mmenc.create_model("unixcoder-tiny")
    for mode in ("<encoder-only>", "<decoder-only>", "<encoder-decoder>"):
        model.tokenizers[view].mode = mode
        with pytest.raises(InputError, match="lone surrogate") as info:
            model.encode([item], view)
        assert "x = 'caf" in str(info.value)


def test_byte_order_marks_are_dropped_and_bom_only_files_refused(tmp_path):
    only = tmp_path / "bom_only.py"
    only.write_bytes(b"\xef\xbb\xbf")
    with pytest.raises(InputError, match=r"bom_only.py: empty code fragment"):
        load_code(only)
    with pytest.raises(InputError, match="empty code fragment"):
        load_code("\ufeff \n")
    marked = tmp_path / "marked.py"
    marked.write_bytes(b"\xef\xbb\xbfx = 1\n")
    assert load_code(marked) == "x = 1\n"
    tok = mmenc.create_model("unixcoder-tiny").tokenizers["code"]
    assert torch.equal(tok([marked]).ids, tok(["x = 1\n"]).ids)


def test_code_beyond_the_character_cap_is_refused(tmp_path):
    from mmenc_code.modality import CodeLimits

    with pytest.raises(InputError, match=r"too long: 101 characters \(at most 100, "
                                         r"CodeLimits.max_chars\)"):
        load_code("x" * 101, CodeLimits(max_chars=100))
    path = tmp_path / "big.py"
    path.write_text("y" * 500)
    with pytest.raises(InputError, match=r"big.py: too large: 500 bytes"):
        load_code(path, CodeLimits(max_chars=100))


def test_long_lines_are_cut_before_bpe():
    """A 1 MB line cost seconds per call in BPE; the window only ever uses its start."""
    import time

    from mmenc_code.tokenizer import UniXcoderTokenizer, train_bpe

    corpus = ["def f(x):\n    return x + 1\n" * 20, "import os\nprint(os.sep)\n" * 20] * 50
    tok = UniXcoderTokenizer(train_bpe(corpus, 400), max_length=64, chars_per_token=8)
    line = "a_b" * 350_000
    start = time.perf_counter()
    batch = tok([line])
    assert time.perf_counter() - start < 2.0
    assert tok.stats["cut"] == 1 and tok.stats["truncated"] == 1
    uncut = UniXcoderTokenizer(tok.tokenizer, max_length=64, chars_per_token=10**6)
    assert torch.equal(batch.ids, uncut([line[:20_000]]).ids)  # same window
    def decoder(chars_per_token):
        return UniXcoderTokenizer(tok.tokenizer, "code", "<decoder-only>", 64,
                                  chars_per_token=chars_per_token)

    tail = "x = 1\n" * 5000 + "return total\n"
    cut = decoder(8)
    assert torch.equal(cut([tail]).ids, decoder(10**6)([tail]).ids)  # the end is kept
    assert cut.stats["cut"] == 1


def test_deep_nesting_is_refused_in_the_ast_view():
    import time

    from mmenc_code.tokenizer import MAX_AST_DEPTH

    model = mmenc.create_model("unixcoder-tiny")
    tok = model.tokenizers["ast"]
    tok.chars_per_token = 10**6  # no cut: the depth cap alone bounds the walk
    nested = "x = " + "(" * 100_000 + "1" + ")" * 100_000
    start = time.perf_counter()
    with pytest.raises(InputError, match=f"nested deeper than {MAX_AST_DEPTH} levels"):
        tok([nested])
    assert time.perf_counter() - start < 10.0
    shallow = "x = " + "(" * 50 + "1" + ")" * 50
    assert tok([shallow]).ids.shape[0] == 1
    tok.max_depth = 20
    with pytest.raises(InputError, match="nested deeper than 20 levels"):
        tok([shallow])


def test_caps_are_saved_with_the_model(tmp_path):
    model = mmenc.create_model("unixcoder-tiny", tokenizers={
        "ast": {"chars_per_token": 8, "max_depth": 300}})
    model.save_pretrained(tmp_path / "m")
    tok = mmenc.load(tmp_path / "m").tokenizers["ast"]
    assert (tok.chars_per_token, tok.max_depth) == (8, 300)
