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
