"""A saved code model's tokenizer names its grammar from a fixed table: a ``lang`` read from
config.json is never turned into an import path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import mmenc
from mmenc.errors import CheckpointError
from mmenc_code.ast_view import GRAMMARS, language


@pytest.mark.parametrize("lang", ["os", "subprocess", "python.nested", "../python", ["python"]])
def test_a_grammar_not_in_the_table_is_refused_without_importing(tmp_path: Path,
                                                                  lang: object) -> None:
    mmenc.create_model("unixcoder-tiny").save_pretrained(tmp_path / "m")
    config = tmp_path / "m" / "config.json"
    meta = json.loads(config.read_text())
    meta["config"]["tokenizers"]["ast"]["lang"] = lang
    config.write_text(json.dumps(meta))
    before = set(sys.modules)
    with pytest.raises(CheckpointError, match=r"config\.json: .*lang"):
        mmenc.load(tmp_path / "m")
    assert not {m for m in set(sys.modules) - before if m.startswith("tree_sitter_")
                and m != "tree_sitter_python"}


def test_language_takes_table_names_only() -> None:
    assert "python" in GRAMMARS and language("python") is language("python")
    with pytest.raises(ValueError, match="no tree-sitter grammar 'os'"):
        language("os")
    assert "tree_sitter_os" not in sys.modules


@pytest.mark.parametrize("key,value", [("num_hidden_layers", 100000), ("num_attention_heads", 0),
                                       ("hidden_size", -32)])
def test_convert_checks_the_sizes_of_config_json_first(tmp_path: Path, key: str,
                                                       value: int) -> None:
    import time

    from code_fixture import make_unixcoder_fixture

    fixture = make_unixcoder_fixture(tmp_path / "fx", layers=1, dim=32, heads=2, ffn=64,
                                     vocab=200, positions=40)
    cfg_path = fixture / "checkpoint" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[key] = value
    cfg_path.write_text(json.dumps(cfg))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"config\.json: {key}: {value} is outside"):
        mmenc.convert("unixcoder", fixture / "checkpoint")
    assert time.perf_counter() - start < 1.0


def test_a_code_tokenizer_file_outside_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    mmenc.create_model("unixcoder-tiny").save_pretrained(folder)
    meta = json.loads((folder / "config.json").read_text())
    for tok in meta["config"]["tokenizers"].values():
        tok["file"] = "/etc/hostname"
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a file inside the model's folder"):
        mmenc.load(folder)
