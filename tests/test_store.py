"""The SQLite store and the `mmenc embed` / `mmenc search` commands, run through the CLI."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch
from click.testing import CliRunner

import mmenc
from mmenc.builtin.image import example_images
from mmenc.cli import main
from mmenc.retrieval.store import EmbeddingStore, StoredItem, StoreError, from_blobs, to_blob


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def embed_json(*args):
    result = run("embed", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny image-text models with different random weights."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    mmenc.create_model("clip-tiny").save_pretrained(root / "a")
    mmenc.create_model("clip-tiny").save_pretrained(root / "b")
    return root / "a", root / "b"


@pytest.fixture
def images(tmp_path):
    """Four images in a folder (one in a sub-folder) and one corrupt file."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, image in enumerate(example_images()):
        image.save(folder / ("sub" if i == 3 else "") / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def test_embed_skips_unchanged_reencodes_changed_and_counts_corrupt(models, images, tmp_path):
    store = tmp_path / "s.db"
    first = embed_json(models[0], images, "--modality", "image", "--store", store,
                       "--batch-size", "2")
    assert (first["new"], first["unchanged"], first["items"]) == (4, 0, 4)
    assert first["skipped"] == {"unreadable or truncated image": 1}  # the rest of its batch is kept
    again = embed_json(models[0], images, "--modality", "image", "--store", store)
    assert (again["new"], again["updated"], again["unchanged"]) == (0, 0, 4)
    example_images()[2].rotate(90).save(images / "0.png")
    changed = embed_json(models[0], images, "--modality", "image", "--store", store)
    assert (changed["new"], changed["updated"], changed["unchanged"]) == (0, 1, 3)
    text = run("embed", models[0], images / "1.png", "--modality", "image", "--store", store)
    assert text.exit_code == 0 and "0 new, 0 updated, 1 unchanged, 0 skipped" in text.stdout


def test_embedding_with_another_model_is_refused(models, images, tmp_path):
    store = tmp_path / "s.db"
    embed_json(models[0], images / "1.png", "--modality", "image", "--store", store)
    result = run("embed", models[1], images / "2.png", "--modality", "image", "--store", store)
    assert result.exit_code == 1
    assert "do not share a space" in result.output and str(models[0]) in result.output
    assert EmbeddingStore(store).meta["model_path"] == str(models[0])
    other_dim = run("embed", models[0], images / "2.png", "--modality", "image",
                    "--store", store, "--dim", "8")
    assert other_dim.exit_code == 1 and "truncate_dim" in other_dim.output


def test_float32_blobs_round_trip(tmp_path):
    vectors = torch.randn(3, 7)
    assert torch.equal(from_blobs([to_blob(v) for v in vectors], 7), vectors)
    with EmbeddingStore(tmp_path / "s.db") as store:
        store.write([StoredItem(f"id{i}", "text", f"h{i}", f"src{i}", v)
                     for i, v in enumerate(vectors)])
        gallery = store.gallery()
        assert gallery.ids == ["id0", "id1", "id2"]
        assert torch.equal(gallery.embeddings, vectors)
        with pytest.raises(StoreError, match="dim"):
            store.write([StoredItem("x", "text", "h", "s", torch.zeros(5))])
    blob, dim = sqlite3.connect(tmp_path / "s.db").execute(
        "SELECT embedding, dim FROM items WHERE id = 'id1'").fetchone()
    assert dim == 7 and len(blob) == 28


def test_texts_and_manifest_items(models, images, tmp_path):
    store = tmp_path / "s.db"
    manifest = tmp_path / "items.jsonl"
    rows = [{"id": "gradient", "image": str((images / "0.png").relative_to(tmp_path))},
            {"image": "images/1.png"}, {"caption": "no image field"},
            {"id": "lost", "image": "images/missing.png"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    made = embed_json(models[0], "--modality", "image", "--store", store, "--manifest", manifest)
    assert made["new"] == 2
    assert made["skipped"] == {"no field 'image'": 1, "file not found": 1}
    texts = embed_json(models[0], "--modality", "text", "--store", store,
                       "--text", "a cat", "--text", "a dog", "--text", "a cat")
    assert texts["new"] == 2 and texts["skipped"] == {"duplicate id": 1}
    with EmbeddingStore(store) as s:
        assert "gradient" in s.hashes(["gradient"])
        assert s.describe()["items"] == {"image": 2, "text": 2}


def test_search_exact_faiss_and_hnsw_agree(models, images, tmp_path):
    store = tmp_path / "s.db"
    embed_json(models[0], images, "--modality", "image", "--store", store)
    embed_json(models[0], "--modality", "text", "--store", store, "--text", "stripes")
    found = {}
    for kind in ("exact", "faiss", "hnsw"):
        result = run("search", store, "--query-file", images / "2.png", "--query-modality",
                     "image", "--index", kind, "--json", "-k", "3")
        assert result.exit_code == 0, result.output
        hits = [json.loads(line) for line in result.stdout.splitlines()]  # NDJSON
        assert [h["rank"] for h in hits] == [1, 2, 3]
        assert {h["query"] for h in hits} == {str(images / "2.png")}
        found[kind] = [(h["id"], round(h["score"], 4)) for h in hits]
        assert hits[0]["id"] == str((images / "2.png").resolve())
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert found["exact"] == found["faiss"] == found["hnsw"]
    assert (tmp_path / "s.db.hnsw-all").is_file()  # cached for the next search
    only_text = run("search", store, "--query", "stripes", "--gallery-modality", "text")
    assert only_text.exit_code == 0, only_text.output
    lines = only_text.stdout.splitlines()
    assert lines[1].split()[:4] == ["rank", "score", "modality", "item"] and len(lines) == 3
    assert lines[2].split()[2:] == ["text", "stripes"]


def test_search_needs_an_existing_store(tmp_path):
    result = run("search", tmp_path / "nope.db", "--query", "x")
    assert result.exit_code == 1 and "nope.db: the store does not exist" in result.stderr
    empty = tmp_path / "empty.db"
    EmbeddingStore(empty).close()
    result = run("search", empty, "--query", "x")
    assert result.exit_code == 1 and "empty store" in result.output
