"""The sizes of a BridgeTower config.json are checked before the weights are read or a model
is built."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import mmenc
import pytest
from mmenc.errors import CheckpointError

pytest.importorskip("transformers")
from vl_bridgetower_fixture import make_bridgetower_fixture  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bridgetower_fixture(tmp_path_factory.mktemp("bt") / "fx", seed=3) / "checkpoint"


@pytest.mark.parametrize("part,key,value", [
    ("text_config", "num_hidden_layers", 100000),
    ("vision_config", "hidden_size", 1 << 20),
    ("text_config", "num_attention_heads", 0),
    (None, "hidden_size", -1),
])
def test_sizes_of_config_json_fail_fast(tmp_path: Path, checkpoint: Path, part: str | None,
                                        key: str, value: int) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (cfg[part] if part else cfg)[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    where = f"{part}.{key}" if part else key
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"config\.json: {where}: {value} is outside"):
        mmenc.convert("bridgetower", folder)
    assert time.perf_counter() - start < 1.0
