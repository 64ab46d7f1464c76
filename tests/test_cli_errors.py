"""Every mistake a user makes on the command line: one line on stderr naming what is wrong,
exit 1 (2 for a usage error), no traceback; a run where nothing was done fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import mmenc
from mmenc.builtin.image import example_images
from mmenc.cli import main
from mmenc.retrieval.store import EmbeddingStore


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def one_error(result, code: int, *needles: str) -> str:
    """The one stderr line of a failed command, checked to name each of ``needles``."""
    lines = result.stderr.splitlines()
    assert result.exit_code == code, (result.exit_code, result.output)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mmenc: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model, a folder of images, a PNG, a text file and an empty folder."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    mmenc.create_model("clip-tiny").save_pretrained(root / "clip")
    (root / "imgs").mkdir()
    for i, image in enumerate(example_images()):
        image.save(root / "imgs" / f"{i}.png")
    (root / "empty").mkdir()
    (root / "notckpt.pt").write_text("hello\n")
    manifest = root / "pairs.jsonl"
    manifest.write_text("".join(json.dumps({"image": f"imgs/{i}.png", "text": f"item {i}"}) + "\n"
                                for i in range(4)))
    return root


# -- inputs that all fail, and bad numbers ----------------------------------------------------
def test_embed_of_missing_or_empty_inputs_fails_naming_them(files, tmp_path):
    store = tmp_path / "s.db"
    one_error(run("embed", files / "clip", tmp_path / "missing.png", "-m", "image", "-s", store),
              1, "missing.png", "file not found")
    one_error(run("embed", files / "clip", files / "empty", "-m", "image", "-s", store),
              1, "empty", "empty folder")
    one_error(run("embed", files / "clip", str(files / "imgs" / "*.jpg"), "-m", "image",
                  "-s", store), 1, "*.jpg", "no file matches")
    assert not store.exists()  # nothing to embed: no store is made


def test_embed_where_every_item_fails_to_load(files, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (bad / "b.png").write_text("not an image")
    line = one_error(run("embed", files / "clip", bad, "-m", "image", "-s", tmp_path / "s.db"),
                     1, "nothing embedded", "a.png")
    assert "b.png" in line


def test_embed_partial_failure_is_counted_and_succeeds(files, tmp_path):
    result = run("embed", files / "clip", files / "imgs", tmp_path / "missing.png", "-m",
                 "image", "-s", tmp_path / "s.db")
    assert result.exit_code == 0, result.output
    assert "4 new" in result.stdout and "1 skipped (file not found: 1)" in result.stdout


@pytest.mark.parametrize("option,value", [("--batch-size", "0"), ("--batch-size", "-1")])
def test_embed_batch_size_must_be_positive(files, tmp_path, option, value):
    store = tmp_path / "s.db"
    one_error(run("embed", files / "clip", files / "imgs", "-m", "image", "-s", store,
                  option, value), 2, "--batch-size", value)
    assert not store.exists()


def test_embed_dim_is_checked_against_the_model_before_binding(files, tmp_path):
    store = tmp_path / "s.db"
    one_error(run("embed", files / "clip", files / "imgs", "-m", "image", "-s", store,
                  "--dim", "1000"), 2, "--dim", "1000", "32 dimensions")
    assert not store.exists()
    ok = run("embed", files / "clip", files / "imgs", "-m", "image", "-s", store, "--dim", "16")
    assert ok.exit_code == 0, ok.output
    with EmbeddingStore(store) as s:
        assert s.meta["dim"] == "16"


@pytest.mark.parametrize("k", ["0", "-3"])
def test_search_top_k_must_be_positive(files, tmp_path, k):
    store = tmp_path / "s.db"
    assert run("embed", files / "clip", files / "imgs", "-m", "image", "-s", store).exit_code == 0
    one_error(run("search", store, "-q", "x", "--top-k", k), 2, "--top-k", k)


def test_store_errors_say_what_is_wrong(files, tmp_path):
    one_error(run("search", tmp_path / "nodir" / "s.db", "-q", "x"), 1, "nodir", "does not exist")
    one_error(run("search", tmp_path / "s.db", "-q", "x"), 1, "s.db", "does not exist")
    one_error(run("embed", files / "clip", files / "imgs", "-m", "image",
                  "-s", tmp_path / "nodir" / "s.db"), 1, "nodir", "does not exist")
    empty = tmp_path / "empty.db"
    with EmbeddingStore(empty) as store:
        store.bind_model(files / "clip")
    line = one_error(run("search", empty, "-q", "x"), 1, "empty.db", "the store is empty")
    assert "dim" not in line


# -- convert ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["notckpt.pt", "picture.png"])
def test_convert_of_a_non_checkpoint(files, tmp_path, name):
    src = files / name
    if name.endswith(".png"):
        src = files / "imgs" / "0.png"
    line = one_error(run("convert", "--from", "beats", src, tmp_path / "out"), 1,
                     "'beats'", src.name, "not a PyTorch checkpoint")
    assert "weights_only" not in line and "pickle" not in line.lower()


def test_convert_unknown_option_lists_the_known_ones(files, tmp_path):
    one_error(run("convert", "--from", "hf-bert", files / "notckpt.pt", tmp_path / "out",
                  "-o", "max_lenght=8"), 2, "no option 'max_lenght'", "did you mean 'max_length'",
              "pooling")
    listing = run("convert", "--list", "--from", "hf-bert")
    assert listing.exit_code == 0 and "max_length=None" in listing.stdout
    assert "--from FORMAT" in run("convert", "--list").stdout


# -- configs given to the wrong command --------------------------------------------------------
@pytest.mark.parametrize("command", [["pretrain"], ["audio", "iterate"]])
def test_a_binary_file_as_config(files, command):
    one_error(run(*command, files / "imgs" / "0.png"), 1, "0.png", "not a YAML config")


def test_audio_iterate_unknown_keys_have_close_matches(tmp_path):
    path = tmp_path / "it.yaml"
    path.write_text("output_dir: x\ndata: {train: a.jsonl}\nssl: {stpes: 3}\n")
    one_error(run("audio", "iterate", path), 1, "it.yaml: ssl.stpes: unknown key",
              "did you mean 'steps'?")


def test_midi_tokenize_with_nothing_done_fails():
    one_error(run("midi-tokenize", "/nonexistent"), 1, "no file could be tokenized",
              "file not found")


# -- training config values --------------------------------------------------------------------
def _config(tmp_path: Path, **edits) -> Path:
    config = {"model": {"recipe": "clip-tiny"},
              "objectives": [{"name": "contrastive", "modalities": ["image", "text"]}],
              "data": {"train": str(tmp_path / "m.jsonl")}, "batch_size": 4, "steps": 1,
              "output_dir": str(tmp_path / "run"), "progress": False}
    for key, value in edits.items():
        section, _, leaf = key.partition(".")
        if leaf:
            config.setdefault(section, {})[leaf] = value
        else:
            config[key] = value
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("edits,needles", [
    ({"optim.lr": -1}, ["optim.lr", "negative"]),
    ({"optim.lr": float("nan")}, ["optim.lr", "finite"]),
    ({"batch_size": 10**12}, ["batch_size", "1000000000000"]),
    ({"model.overrides": {"embed_dim": "wide"}}, ["model.overrides.embed_dim", "int"]),
    ({"model.overrides": {"towers": {"text": {"trunk": {"depth": -2}}}}},
     ["model.overrides.towers.text.trunk.depth", "negative"]),
    ({"model.overrides": {"towers": 3}}, ["model.overrides.towers", "expected a mapping, got 3"]),
    ({"optim.betas": [0.9, 1.5]}, ["optim.betas"]),
], ids=["lr-negative", "lr-nan", "batch-size-huge", "override-type", "override-negative",
        "override-not-a-mapping", "betas"])
def test_training_config_values_are_checked_when_read(tmp_path, edits, needles):
    path = _config(tmp_path, **edits)
    one_error(run("pretrain", path), 1, "train.yaml", *needles)
    assert not (tmp_path / "run").exists()


def test_a_missing_manifest_names_its_config_key(tmp_path):
    one_error(run("pretrain", _config(tmp_path)), 1, "data.train", "m.jsonl")


# -- names -------------------------------------------------------------------------------------
def test_unknown_names_suggest_close_matches(files):
    one_error(run("models", "--modality", "imgae"), 1, "unknown modality 'imgae'",
              "did you mean 'image'")
    one_error(run("models", "clip-tinyy"), 1, "no models match 'clip-tinyy'",
              "did you mean 'clip-tiny'")
    one_error(run("modles"), 2, "did you mean 'models'")
    assert run("models", "clip-tinyy", "--json").stdout.strip() == "[]"


def test_eval_validates_modalities_before_the_manifest(files, tmp_path):
    one_error(run("eval", "retrieval", files / "clip", files / "pairs.jsonl",
                  "--query-modality", "text", "--gallery-modality", "imgae",
                  "--out", tmp_path / "out"), 2, "--gallery-modality", "did you mean 'image'")


def test_bm25_refuses_a_side_that_is_not_text(files, tmp_path):
    one_error(run("eval", "retrieval", "bm25", files / "pairs.jsonl", "--query-modality", "text",
                  "--gallery-modality", "image", "--out", tmp_path / "out"), 2, "bm25",
              "'image' is not a text modality")
    assert not (tmp_path / "out").exists()


# -- unexpected errors -------------------------------------------------------------------------
def test_an_unexpected_error_is_one_line_unless_debugging(monkeypatch):
    from mmenc.registry import Catalogue

    def boom(self, *args):
        raise RuntimeError("boom")

    monkeypatch.setattr(Catalogue, "models", boom)
    one_error(run("models"), 1, "unexpected RuntimeError: boom", "MMENC_DEBUG=1")
    for result in (run("models", env={"MMENC_DEBUG": "1"}), run("--debug", "models")):
        assert result.exit_code == 1
        assert "Traceback" in result.stderr and "RuntimeError: boom" in result.stderr


# -- a broken plugin ---------------------------------------------------------------------------
@pytest.fixture
def broken_site(tmp_path: Path) -> Path:
    """An installed plugin ``broken`` (dist broken-plug 0.1) that fails to import."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "broken_plug.py").write_text("raise ImportError('broken_plug needs libfoo')\n")
    info = site / "broken_plug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mmenc]\nbroken = broken_plug\n")
    return site


def _mmenc(args: list[str], site: Path) -> subprocess.CompletedProcess[str]:
    from conftest import clean_env

    return subprocess.run([sys.executable, "-m", "mmenc.cli", *args], capture_output=True,
                          text=True, env=clean_env(site), timeout=300)


def test_a_broken_plugin_is_named_by_every_command(broken_site, monkeypatch):
    listing = _mmenc(["models", "clip-*"], broken_site)
    assert listing.returncode == 0 and "clip-tiny" in listing.stdout
    assert listing.stderr.splitlines() == [
        "mmenc: warning: plugin 'broken' failed to load (see `mmenc plugins`)"]
    missing = _mmenc(["models", "broken*"], broken_site)
    assert missing.returncode == 1
    assert missing.stderr.splitlines()[-1] == (
        "mmenc: error: no models match 'broken*'; plugin 'broken' failed to load "
        "(see `mmenc plugins`)")
    plugins = _mmenc(["plugins"], broken_site)  # shows the error itself, no warning
    assert "broken_plug needs libfoo" in plugins.stdout and "warning" not in plugins.stderr

    from mmenc.errors import UnknownNameError
    from mmenc.registry import build_catalogue

    monkeypatch.syspath_prepend(str(broken_site))
    cat = build_catalogue(env={})
    with pytest.raises(UnknownNameError) as info:
        cat.entry("model", "broken-tiny")
    assert str(info.value) == ("unknown model 'broken-tiny'; plugin 'broken' failed to load "
                               "(see `mmenc plugins`)")
    with pytest.raises(UnknownNameError, match="did you mean 'clip-tiny'"):
        cat.entry("model", "clip-tiyn")  # other names keep their close matches


# -- real items -------------------------------------------------------------------------------
SONIC_PI = Path("/usr/share/sonic-pi/samples")


@pytest.mark.skipif(not (SONIC_PI / "elec_tick.flac").is_file(),
                    reason="needs the sonic-pi-samples package (a real 19 ms sound)")
def test_a_real_sound_shorter_than_one_window_is_embedded(tmp_path):
    """elec_tick lasts 19 ms, less than one 25 ms analysis window: it is padded, not refused,
    and the sounds after it are embedded too."""
    mmenc.create_model("beats-tiny").save_pretrained(tmp_path / "beats")
    files = sorted(SONIC_PI.glob("elec_t*.flac"))
    report = json.loads(run("embed", tmp_path / "beats", str(SONIC_PI / "elec_t*.flac"), "-m",
                            "audio", "-s", tmp_path / "a.db", "--json").stdout)
    assert report["skipped"] == {} and report["new"] == len(files) >= 2
