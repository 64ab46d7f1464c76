"""The trust boundary: a model folder, a config or a manifest names catalogue entries only, and
its sizes are checked before anything is allocated.

Each attack carries two canaries: a module whose import writes a file, and a shell command
that writes a file if it ever runs. Neither file may appear, and the module is never imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import mmenc
from mmenc.errors import CheckpointError, ConfigError, UnknownNameError

CANARY = "mmenc_trust_canary"
TOUCH = "touch canary.txt"


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on ``sys.path`` holding a module whose import (or call) writes a file, and
    the working directory of the test; returns where the canary files would appear."""
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{CANARY}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(tmp_path / 'imported.txt')!r}).write_text('imported')\n"
        "def run(*args, **kwargs):\n"
        f"    Path({str(tmp_path / 'called.txt')!r}).write_text('called')\n"
        "    return args[0] if args else None\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _untouched(where: Path) -> None:
    assert CANARY not in sys.modules
    for name in ("imported.txt", "called.txt", "canary.txt"):
        assert not (where / name).exists(), name


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text-tiny") / "model"
    mmenc.create_model("text-tiny").save_pretrained(path)
    return path


def _poisoned(saved: Path, where: Path, edit: Any) -> Path:
    """A copy of ``saved`` whose config.json ``edit(meta)`` changed."""
    out = where / "poisoned"
    out.mkdir()
    for f in saved.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    meta = json.loads((out / "config.json").read_text())
    edit(meta)
    (out / "config.json").write_text(json.dumps(meta))
    return out


# -- names: nothing from a file becomes an import path ------------------------------------------
@pytest.mark.parametrize("value", ["subprocess:getoutput", "os:system", "builtins:exec",
                                   f"{CANARY}:run", "mmenc.builtin.text:load_text"])
def test_a_cleaner_import_path_in_config_json_is_refused(saved, canary, value):
    def edit(meta: dict) -> None:
        meta["config"]["tokenizers"]["text"]["clean"] = value

    folder = _poisoned(saved, canary, edit)
    with pytest.raises(CheckpointError) as info:
        mmenc.load(folder).encode([TOUCH], "text")
    message = str(info.value)
    assert str(folder / "config.json") in message
    assert "config.tokenizers.text.clean" in message and repr(value) in message
    assert "registered:" in message
    _untouched(canary)


@pytest.mark.parametrize("where", ["tokenizer", "fusion", "recipe"])
def test_other_names_in_config_json_are_catalogue_lookups(saved, canary, where):
    def edit(meta: dict) -> None:
        if where == "tokenizer":
            meta["config"]["tokenizers"]["text"]["tokenizer"] = f"{CANARY}:run"
        elif where == "fusion":
            meta["config"]["fusion"] = {"name": f"{CANARY}:run"}
        else:
            meta["recipe"] = f"{CANARY}:run"

    folder = _poisoned(saved, canary, edit)
    with pytest.raises(CheckpointError, match=rf"config\.json: .*unknown .*'{CANARY}:run'"):
        mmenc.load(folder)
    _untouched(canary)


def test_a_cleaner_import_path_given_to_create_model_is_refused(canary):
    with pytest.raises(UnknownNameError, match=rf"unknown text cleaner '{CANARY}:run'"):
        mmenc.create_model("text-tiny", tokenizers={"text": {"clean": f"{CANARY}:run"}})
    _untouched(canary)


def test_pretrain_config_names_are_catalogue_lookups(canary):
    from mmenc.train.config import load_config

    def write(objective: str, clean: str | None) -> Path:
        overrides = "" if clean is None else \
            f", overrides: {{tokenizers: {{text: {{clean: '{clean}'}}}}}}"
        config = canary / "train.yaml"
        config.write_text(
            f"model: {{recipe: text-tiny{overrides}}}\n"
            "data: {train: pairs.jsonl, modalities: [text]}\n"
            f"objectives: [{{name: '{objective}', modalities: [text]}}]\n"
            "batch_size: 2\nsteps: 1\noutput_dir: out\n")
        return config

    with pytest.raises(ConfigError, match=r"objectives\[0\]\.name: unknown objective"):
        load_config(write(f"{CANARY}:run", None))
    config = load_config(write("masked-modeling", f"{CANARY}:run"))
    with pytest.raises(UnknownNameError, match=rf"unknown text cleaner '{CANARY}:run'"):
        mmenc.create_model(config.model.recipe, **config.model.overrides)
    _untouched(canary)


def test_mmenc_embed_refuses_a_poisoned_folder_in_one_line(saved, canary):
    def edit(meta: dict) -> None:
        meta["config"]["tokenizers"]["text"]["clean"] = "subprocess:getoutput"

    folder = _poisoned(saved, canary, edit)
    mmenc_bin = Path(sys.executable).parent / "mmenc"
    proc = subprocess.run([str(mmenc_bin), "embed", str(folder), "-m", "text", "--text", TOUCH,
                           "-s", str(canary / "store.sqlite")],
                          cwd=canary, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error: " in lines[0].lower(), proc.stderr
    assert "config.tokenizers.text.clean" in lines[0] and "Traceback" not in proc.stderr
    _untouched(canary)


# -- sizes: checked before anything is allocated ------------------------------------------------
def _set(path: str, value: Any) -> Any:
    def edit(meta: dict) -> None:
        *parents, last = path.split(".")
        node = meta["config"]
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


@pytest.mark.parametrize("path,value,message", [
    ("towers.text.trunk.depth", 100000, r"towers\.text\.trunk\.depth: 100000 is outside"),
    ("towers.text.trunk.dim", 1048576, r"towers\.text\.trunk\.dim: 1048576 is outside"),
    ("towers.text.vocab_size", 2**33, r"towers\.text\.vocab_size: 8589934592 is outside"),
    ("towers.text.trunk.dim", -32, r"towers\.text\.trunk\.dim: -32 is outside"),
    ("towers.text.trunk.ffn_dim", -1, r"towers\.text\.trunk\.ffn_dim: -1 is outside"),
    ("towers.text.trunk.heads", 0, r"towers\.text\.trunk\.heads: 0 is outside"),
    ("towers.text.trunk.heads", 3, r"towers\.text\.trunk\.dim: 32 does not divide"),
    ("towers.text.trunk.dim", "32", r"towers\.text\.trunk\.dim: a size must be an integer"),
    ("tokenizers.text.max_length", -5, r"tokenizers\.text\.max_length: -5 is outside"),
    ("embed_dim", 2**40, r"embed_dim: 1099511627776 is outside"),
])
def test_out_of_bounds_sizes_fail_fast(saved, tmp_path, path, value, message):
    folder = _poisoned(saved, tmp_path, _set(path, value))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"config\.json: config\.{message}"):
        mmenc.load(folder)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("path,value,keys", [
    # within the bounds, but 2^20 x 32 floats that the weights do not hold
    ("towers.text.vocab_size", 2**20, r"mis-shaped: towers\.text\.embeddings\.word"),
    ("towers.text.trunk.depth", 3, r"missing: towers\.text\.trunk\.layers\.2\."),
    ("towers.text.trunk.depth", 1, r"unexpected: towers\.text\.trunk\.layers\.1\."),
    ("towers.text.trunk.dim", 65536, r"mis-shaped: "),
    ("embed_dim", 64, r"mis-shaped: proj\.text\.weight: weights \(32, 32\) vs config \(64, 32\)"),
])
def test_sizes_that_do_not_fit_the_weights_fail_before_allocating(saved, tmp_path, path,
                                                                   value, keys):
    """dim 65536 claims ~137 GB of weights: a typed error in seconds means nothing was
    allocated."""
    folder = _poisoned(saved, tmp_path, _set(path, value))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"config\.json: the configuration does not "
                                               rf"fit .*model\.safetensors \(.*{keys}"):
        mmenc.load(folder)
    assert time.perf_counter() - start < 5.0


def test_a_valid_folder_still_loads_with_the_same_outputs(saved):
    model = mmenc.load(saved)
    again = mmenc.load(saved)
    assert next(model.parameters()).device.type == "cpu"
    texts = ["a photo of a cat", ""]
    assert (model.encode(texts, "text") == again.encode(texts, "text")).all()


def test_the_layers_of_all_trunks_are_bounded_together():
    from mmenc.trust import check_sizes

    towers = {f"t{i}": {"trunk": {"dim": 32, "depth": 256, "heads": 2}} for i in range(5)}
    with pytest.raises(CheckpointError, match="1280 layers in all, more than 1024"):
        check_sizes({"towers": towers}, "model/config.json")
    check_sizes({"towers": dict(list(towers.items())[:4])}, "model/config.json")


def test_sizes_in_create_model_overrides_are_checked_before_building():
    """A pretrain YAML's ``model.overrides`` reach create_model: the same bounds apply."""
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"create_model\('text-tiny'\): config\.towers\.text\."
                                          r"trunk\.depth: 100000 is outside"):
        mmenc.create_model("text-tiny", towers={"text": {"trunk": {"depth": 100000}}})
    with pytest.raises(ConfigError, match=r"tokenizers\.text\.max_length: -5 is outside"):
        mmenc.create_model("text-tiny", tokenizers={"text": {"max_length": -5}})
    assert time.perf_counter() - start < 1.0


def test_an_oversized_config_json_is_not_read(saved, tmp_path):
    from mmenc.model import MAX_CONFIG_BYTES

    def edit(meta: dict) -> None:
        meta["padding"] = " " * MAX_CONFIG_BYTES

    folder = _poisoned(saved, tmp_path, edit)
    with pytest.raises(CheckpointError, match=r"config\.json: \d+ bytes, more than"):
        mmenc.load(folder)


# -- converters: the sizes of a foreign config.json ----------------------------------------------
@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hf_fixture import make_hf_fixture

    return make_hf_fixture(tmp_path_factory.mktemp("hf"), "bert", layers=1, dim=32, heads=2,
                           ffn=64, vocab=100) / "checkpoint"


@pytest.mark.parametrize("key,value,message", [
    ("num_hidden_layers", 100000, r"num_hidden_layers: 100000 is outside"),
    ("hidden_size", -64, r"hidden_size: -64 is outside"),
    ("num_attention_heads", 0, r"num_attention_heads: 0 is outside"),
    ("num_attention_heads", 3, r"hidden_size: 32 does not divide into 3 heads"),
    ("vocab_size", 2**20, r"does not fit .*pytorch_model\.bin \(mis-shaped: embeddings\.word"),
])
def test_hf_convert_checks_the_sizes_of_config_json(hf_folder, tmp_path, key, value, message):
    src = tmp_path / "hf"
    src.mkdir()
    for f in hf_folder.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    config = json.loads((src / "config.json").read_text())
    config[key] = value
    (src / "config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"{src / 'config.json'}: .*{message}"):
        mmenc.convert("hf-bert", src)
    assert time.perf_counter() - start < 5.0
    mmenc.convert("hf-bert", hf_folder)  # the untouched folder converts


# -- other files that name things: iteration configs, manifests ----------------------------------
def test_audio_iteration_config_names_recipes_by_catalogue_name(canary):
    iterate = pytest.importorskip("mmenc_audio.iterate")
    config = iterate.read_config({"output_dir": str(canary / "out"),
                                  "data": {"train": "pairs.jsonl"},
                                  "model": {"recipe": f"{CANARY}:run"}})
    with pytest.raises(UnknownNameError, match=rf"unknown model '{CANARY}:run'"):
        iterate.stages(config)
    _untouched(canary)


def test_manifest_values_are_items_never_names(saved, canary):
    """Strings in a manifest are raw items: embedded as text, never resolved."""
    from click.testing import CliRunner

    from mmenc.cli import main

    manifest = canary / "items.jsonl"
    rows = [{"id": "a", "text": f"{CANARY}:run"}, {"id": "b", "text": "subprocess:getoutput"},
            {"id": "c", "text": TOUCH}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(main, ["embed", str(saved), "-m", "text", "--manifest",
                                       str(manifest), "-s", str(canary / "store.sqlite"),
                                       "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output[result.output.index("{"):])
    assert (counts["items"], counts["new"], counts["skipped"]) == (3, 3, {})
    _untouched(canary)


# -- files: a model folder reads its own files only ------------------------------------------------
@pytest.mark.parametrize("key,value", [("file", "/etc/hostname"), ("file", "../outside.json"),
                                       ("vocab", "/etc/hostname")])
def test_tokenizer_files_outside_the_folder_are_refused(saved, tmp_path, key, value):
    outside = tmp_path / "outside.json"
    outside.write_bytes((saved / "tokenizer-text.json").read_bytes())

    def edit(meta: dict) -> None:
        tok = meta["config"]["tokenizers"]["text"]
        tok[key] = value
        if key == "vocab":
            tok["kind"] = "wordpiece"

    folder = _poisoned(saved, tmp_path, edit)
    with pytest.raises(CheckpointError, match="not a file inside the model's folder"):
        mmenc.load(folder)


def test_a_tokenizer_file_inside_the_folder_still_loads(saved, tmp_path):
    def edit(meta: dict) -> None:
        meta["config"]["tokenizers"]["text"]["file"] = "./tokenizer-text.json"

    model = mmenc.load(_poisoned(saved, tmp_path, edit))
    assert model.encode(["a cat"], "text").shape[0] == 1


# -- value types: token ids, sections and numbers are checked before building -----------------
@pytest.mark.parametrize("path,value,message", [
    ("towers.text.pad_id", "12", r"towers\.text\.pad_id: a token id must be an integer"),
    ("towers.text.pad_id", 1.5, r"towers\.text\.pad_id: a token id must be an integer"),
    ("towers.text.pad_id", True, r"towers\.text\.pad_id: a token id must be an integer"),
    ("towers.text.pad_id", 2**63, r"towers\.text\.pad_id: token id 9223372036854775808 is "
                                  r"outside 0\.\.260 \(vocab_size\)"),
    ("towers.text.pad_id", 261, r"towers\.text\.pad_id: token id 261 is outside 0\.\.260"),
    ("towers.text.pad_id", -1, r"towers\.text\.pad_id: token id -1 is outside"),
    ("towers.text.vocab_size", 0, r"towers\.text\.vocab_size: 0 is outside 1\.\."),
    ("tokenizers.text", "bytes", r"tokenizers\.text: must be a mapping, got str"),
    ("towers.text", [], r"towers\.text: must be a mapping, got list"),
    ("towers", {"text": "x"}, r"towers\.text: must be a mapping, got str"),
    ("towers.text.trunk", "x", r"towers\.text\.trunk: must be a mapping, got str"),
    ("towers.text.dropout", float("nan"), r"towers\.text\.dropout: nan is not a finite number"),
    ("towers.text.trunk.eps", float("inf"), r"towers\.text\.trunk\.eps: inf is not a finite"),
    ("towers.text.trunk.eps", [1, 2], r"towers\.text\.trunk\.eps: must be a number, got \[1"),
])
def test_config_value_types_are_checked_before_building(saved, tmp_path, path, value, message):
    folder = _poisoned(saved, tmp_path, _set(path, value))
    with pytest.raises(CheckpointError, match=rf"config\.json: config\.{message}"):
        mmenc.load(folder)


def test_an_unknown_pooling_is_refused_when_loading_not_at_the_first_encode(saved, tmp_path):
    folder = _poisoned(saved, tmp_path, _set("pooling.text", "mmenc.specs:resolve"))
    with pytest.raises(CheckpointError, match=r"config\.json: pooling\.text must be one of "
                                              r"\('cls', 'mean', 'pooler'\), got 'mmenc\.specs"):
        mmenc.load(folder)


def test_token_ids_of_create_model_overrides_are_checked():
    with pytest.raises(ConfigError, match=r"pad_id: a token id must be an integer, got 'x'"):
        mmenc.create_model("text-tiny", towers={"text": {"pad_id": "x"}})


# -- files: only regular files of a bounded size are read ----------------------------------------
def _copy(saved: Path, where: Path) -> Path:
    out = where / "copy"
    out.mkdir()
    for f in saved.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


@pytest.mark.parametrize("kind,message", [
    ("directory", "is a directory, not a regular JSON file"),
    ("fifo", "is a FIFO, not a regular JSON file"),
    ("dev_zero", "is a device, not a regular JSON file"),
    ("deep", "JSON nested too deeply"),
])
def test_config_json_that_is_not_a_plain_json_file_is_refused(saved, tmp_path, kind, message):
    import os

    folder = _copy(saved, tmp_path)
    config = folder / "config.json"
    config.unlink()
    if kind == "directory":
        config.mkdir()
    elif kind == "fifo":
        os.mkfifo(config)
    elif kind == "dev_zero":
        os.symlink("/dev/zero", config)
    else:
        config.write_text('{"format": "mmenc", "config": ' + "[" * 200_000 + "]" * 200_000 + "}")
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=rf"{config}: {message}"):
        mmenc.load(folder)
    assert time.perf_counter() - start < 5.0


def test_weights_and_tokenizer_files_must_be_regular_files(saved, tmp_path):
    import os

    folder = _copy(saved, tmp_path)
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: is a FIFO, not a regular "
                                              "weights file"):
        mmenc.load(folder)

    (tmp_path / "tok").mkdir()
    folder = _poisoned(saved, tmp_path / "tok", _set(
        "tokenizers.text", {"tokenizer": "text", "kind": "hf-tokenizers", "file": "tok.json",
                            "max_length": 64}))
    (folder / "tok.json").mkdir()
    with pytest.raises(CheckpointError, match=r"tok\.json: is a directory, not a regular "
                                              "tokenizer file"):
        mmenc.load(folder)


# -- weights: NaN and Inf are refused, and encode never returns them ------------------------------
@pytest.mark.parametrize("value,kind", [(float("nan"), "NaN"), (float("inf"), "Inf")])
def test_weights_holding_nan_or_inf_are_refused_naming_the_tensor(saved, tmp_path, value, kind):
    from safetensors.torch import load_file, save_file

    folder = _copy(saved, tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    key = sorted(k for k, t in state.items() if t.is_floating_point())[3]
    state[key].view(-1)[-1] = value
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError,
                       match=rf"model\.safetensors: tensor '{key}' holds {kind} values"):
        mmenc.load(folder)


def test_large_finite_weights_whose_sum_overflows_are_accepted():
    import torch

    from mmenc.checkpoint import check_finite

    big = torch.full((4,), 3e38)
    assert not torch.isfinite(big.sum())
    check_finite({"big": big, "ids": torch.arange(3)}, "w.safetensors")
    for bad, kind in ((float("nan"), "NaN"), (float("-inf"), "Inf")):
        damaged = big.clone()
        damaged[2] = bad
        with pytest.raises(CheckpointError, match=f"w.safetensors: tensor 'big' holds {kind}"):
            check_finite({"ids": torch.arange(3), "big": damaged}, "w.safetensors")


def test_encode_refuses_to_return_non_finite_embeddings(saved):
    import torch

    from mmenc.errors import EncodeError

    model = mmenc.load(saved)
    assert torch.isfinite(model.encode(["fine", "also fine"], "text")).all()
    with torch.no_grad():
        next(iter(model.parameters())).fill_(float("nan"))
    with pytest.raises(EncodeError, match=r"text-tiny: non-finite .* item 0 \('fine'\), 1 "
                                          r"\('also fine'\)"):
        model.encode(["fine", "also fine"], "text")
