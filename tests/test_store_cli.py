"""`mmenc embed` / `mmenc search` / `mmenc store info` as llm users know them: glob patterns,
id prefixes, metadata, neighbours of a stored item, NDJSON; and `mmenc install`."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import mmenc
from mmenc.builtin.image import example_images
from mmenc.cli import main
from mmenc.retrieval.store import EmbeddingStore


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def ndjson(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    mmenc.create_model("clip-tiny").save_pretrained(root / "clip")
    return root / "clip"


@pytest.fixture
def images(tmp_path) -> Path:
    """Four images: two in the folder, one in a sub-folder, one with a long folder name."""
    folder = tmp_path / "images"
    deep = folder / ("a-folder-with-a-very-long-name-" * 3)
    (folder / "sub").mkdir(parents=True)
    deep.mkdir()
    targets = [folder / "zero.png", folder / "one.png", folder / "sub" / "two.png",
               deep / "three-with-a-long-file-name-that-must-be-shown-in-full.png"]
    for image, path in zip(example_images(), targets, strict=True):
        image.save(path)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_glob_patterns_prefix_and_metadata(model, images, tmp_path):
    store = tmp_path / "s.db"
    report = json.loads(ok("embed", model, str(images / "**" / "*.png"), "-m", "image",
                           "-s", store, "--prefix", "img/", "--metadata", '{"set": "demo"}',
                           "--json").stdout)
    assert report["new"] == 4 and report["skipped"] == {}  # notes.txt is not matched
    with EmbeddingStore(store) as s:
        ids = [row[0] for row in s.rows()]
    assert sorted(ids) == sorted("img/" + str(p.resolve()) for p in images.rglob("*.png"))
    hits = ndjson(ok("search", store, "--query-file", images / "one.png", "--query-modality",
                     "image", "-k", "4", "--json"))
    assert len(hits) == 4 and all(h["metadata"] == {"set": "demo"} for h in hits)
    assert hits[0]["id"] == "img/" + str((images / "one.png").resolve())
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]


def test_metadata_file_by_file_name_updates_without_encoding_again(model, images, tmp_path):
    store = tmp_path / "s.db"
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"zero.png": {"label": "checkerboard"},
                                "one.png": {"label": "gradient"}}))
    ok("embed", model, images / "zero.png", images / "one.png", "-m", "image", "-s", store,
       "--metadata", meta)
    hits = ndjson(ok("search", store, "--query-file", images / "zero.png", "--query-modality",
                     "image", "-k", "2", "--json"))
    assert hits[0]["metadata"] == {"label": "checkerboard"}
    assert hits[1]["metadata"] == {"label": "gradient"}
    meta.write_text(json.dumps({"zero.png": {"label": "chess"}}))
    again = json.loads(ok("embed", model, images / "zero.png", "-m", "image", "-s", store,
                          "--metadata", meta, "--json").stdout)
    assert (again["new"], again["updated"], again["unchanged"]) == (0, 0, 1)
    top = ndjson(ok("search", store, "--query-file", images / "zero.png", "--query-modality",
                    "image", "-k", "1", "--json"))[0]
    assert top["metadata"] == {"label": "chess"}


@pytest.mark.parametrize("value,reason", [("[1, 2]", "expected a JSON object"),
                                          ("{not json", "not valid JSON"),
                                          ("missing.json", "neither a JSON object")])
def test_bad_metadata_is_refused_before_embedding(model, images, tmp_path, value, reason):
    result = run("embed", model, images, "-m", "image", "-s", tmp_path / "s.db",
                 "--metadata", value)
    assert result.exit_code == 1 and reason in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "s.db").exists()


def test_search_by_id_returns_neighbours_without_the_item(model, images, tmp_path):
    store = tmp_path / "s.db"
    ok("embed", model, images, "-m", "image", "-s", store)
    ok("embed", model, "-m", "text", "-s", store, "--text", "a checkerboard")
    target = str((images / "zero.png").resolve())
    by_id = ndjson(ok("search", store, "--id", target, "-k", "3", "--json"))
    by_file = ndjson(ok("search", store, "--query-file", images / "zero.png",
                        "--query-modality", "image", "-k", "4", "--json"))
    assert by_file[0]["id"] == target  # the file finds itself first ...
    assert [h["id"] for h in by_id] == [h["id"] for h in by_file[1:]]  # ... --id leaves it out
    assert [h["rank"] for h in by_id] == [1, 2, 3]
    assert [h["score"] for h in by_id] == pytest.approx([h["score"] for h in by_file[1:]],
                                                        abs=1e-5)
    only_text = ndjson(ok("search", store, "--id", target, "--modality", "text", "--json"))
    assert [h["source"] for h in only_text] == ["a checkerboard"]
    missing = run("search", store, "--id", target + "x")
    assert missing.exit_code == 1 and "no item with id" in missing.stderr
    assert "did you mean" in missing.stderr


def test_table_shows_file_names_in_full_and_metadata(model, images, tmp_path):
    store = tmp_path / "s.db"
    ok("embed", model, images, "-m", "image", "-s", store, "--metadata", '{"k": 1}')
    ok("embed", model, "-m", "text", "-s", store, "--text", "a checkerboard on a table")
    table = ok("search", store, "-q", "a checkerboard on a table", "-k", "5").stdout
    assert "three-with-a-long-file-name-that-must-be-shown-in-full.png" in table
    assert "sub/two.png" in table and "images/zero.png" in table
    assert '{"k": 1}' in table and "a checkerboard on a table" in table
    assert "..." not in table  # nothing cut


def test_store_info(model, images, tmp_path):
    store = tmp_path / "s.db"
    ok("embed", model, images, "-m", "image", "-s", store, "--dim", "16")
    ok("embed", model, "-m", "text", "-s", store, "--text", "a", "--text", "b")  # keeps --dim
    info = json.loads(ok("store", "info", store, "--json").stdout)
    assert info["modalities"] == {"image": 4, "text": 2} and info["items"] == 6
    assert (info["dim"], info["truncate_dim"], info["model_recipe"]) == (16, 16, "clip-tiny")
    assert info["model_path"] == str(model.resolve())
    text = ok("store", "info", store).stdout
    assert "clip-tiny" in text and "items:    6 (image 4, text 2)" in text
    with EmbeddingStore(store) as s, s.db:  # what a store written by another backend records
        s._set_meta({"backend": "onnx", "precision": "int8"})
    assert "backend:  onnx (int8)" in ok("store", "info", store).stdout
    missing = run("store", "info", tmp_path / "nope.db")
    assert missing.exit_code == 1 and "does not exist" in missing.stderr


def test_a_store_made_before_metadata_still_opens(model, images, tmp_path):
    """A store with the first schema (no metadata column) is searched and written to."""
    store = tmp_path / "old.db"
    ok("embed", model, images / "zero.png", "-m", "image", "-s", store)
    db = sqlite3.connect(store)
    db.execute("ALTER TABLE items DROP COLUMN metadata")
    db.commit()
    db.close()
    hits = ndjson(ok("search", store, "--query-file", images / "zero.png", "--query-modality",
                     "image", "--json"))
    assert len(hits) == 1 and "metadata" not in hits[0]
    ok("embed", model, images / "one.png", "-m", "image", "-s", store, "--metadata", '{"n": 1}')
    with EmbeddingStore(store) as s:
        assert len(s) == 2 and s.gallery().metadata.count({"n": 1}) == 1


# -- mmenc install / uninstall ---------------------------------------------------------------
def test_install_runs_pip_of_mmencs_own_interpreter(tmp_path):
    shown = ok("install", "mmenc-foo", "-U", "-e", tmp_path, "--dry-run").stdout.strip()
    assert shown.split() == [sys.executable, "-m", "pip", "install", "--upgrade", "mmenc-foo",
                             "-e", str(tmp_path)]
    passed = ok("install", "mmenc-foo", "--dry-run", "--", "--no-deps", "--pre").stdout
    assert passed.split()[-3:] == ["mmenc-foo", "--no-deps", "--pre"]
    assert ok("uninstall", "mmenc-foo", "-y", "--dry-run").stdout.split() == [
        sys.executable, "-m", "pip", "uninstall", "--yes", "mmenc-foo"]
    assert run("install").exit_code == 2
    assert run("uninstall", "mmenc", "-y").exit_code == 2


def test_install_of_the_template_plugin_is_listed(tmp_path):
    """A real pip install of examples/plugin-template (into a folder, offline, without its
    dependencies: mmenc is this one), then `mmenc plugins` of a fresh process lists it."""
    from conftest import clean_env
    from test_plugin_template import TEMPLATE, _builds_without_isolation

    if not _builds_without_isolation():
        pytest.skip("building the template offline needs setuptools >= 77")
    source = tmp_path / "source"
    shutil.copytree(TEMPLATE, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    site = tmp_path / "site"
    env = clean_env(None)
    result = subprocess.run(
        [sys.executable, "-m", "mmenc.cli", "install", str(source), "--", "--target", str(site),
         "--no-deps", "--no-build-isolation", "--no-input", "--disable-pip-version-check",
         "--no-index"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = subprocess.run([sys.executable, "-m", "mmenc.cli", "plugins", "--json"],
                            capture_output=True, text=True, env=clean_env(site), timeout=300)
    records = {r["name"]: r for r in json.loads(listed.stdout)}
    assert records["template"]["status"] == "ok", records.get("template")
    assert records["template"]["distribution"] == "mmenc-template"
