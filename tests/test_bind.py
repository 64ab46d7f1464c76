"""Binding: a tiny text hub, tiny image and MIDI towers, the cache, losses, files and the store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import mmenc
from mmenc.bind.cache import HubCache
from mmenc.bind.losses import HubLoss
from mmenc.bind.train import add_modality, train_bound

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 20), "black": (10, 10, 10), "white": (245, 245, 245)}


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hub") / "text-tiny"
    hub = mmenc.create_model("text-tiny")
    # without the shared token-type vector a random tiny encoder tells short texts apart
    hub.towers.text.embeddings.token_type.weight.data.zero_()
    hub.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[dict[str, str]]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rows = []
    for name, rgb in COLOURS.items():
        for shape in ("square", "stripe"):
            img = Image.new("RGB", (32, 32), (128, 128, 128))
            box = (4, 4, 28, 28) if shape == "square" else (0, 12, 32, 20)
            img.paste(rgb, box)
            path = folder / f"{name}-{shape}.png"
            img.save(path)
            rows.append({"image": str(path), "text": f"a {name} {shape}"})
    return rows


def tower_spec(modality: str) -> dict:
    if modality == "image":
        return {"recipe": "clip-tiny", "modality": "image"}
    return {"recipe": "midi-text-tiny", "modality": "midi"}


def midi_rows() -> list[dict]:
    from mmenc_midi.midi import example_midi

    texts = ("a scale", "three chords", "a waltz melody")
    return [{"midi": m, "text": t} for m, t in zip(example_midi(), texts, strict=True)]


def config(hub_dir: Path, out: Path, images: list, steps: int = 6, **extra) -> dict:
    return {"hub": {"name": "model", "path": str(hub_dir)}, "dims": [8, 16],
            "output_dir": str(out), "seed": 0,
            "modalities": {"image": {"tower": tower_spec("image"), "train": images,
                                     "steps": steps, "batch_size": 8, "lr": 3e-3,
                                     "warmup": 1}},
            **extra}


@pytest.fixture(scope="module")
def bound(hub_dir, images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bound")
    result = train_bound(config(hub_dir, out, images, steps=40), echo=lambda _: None)
    return result.model_dir


def test_cache_runs_the_hub_once_per_distinct_text(tmp_path):
    calls: list[list[str]] = []

    def embed(texts):
        calls.append(list(texts))
        return torch.stack([torch.tensor([float(len(t)), 1.0, float(t.count("a"))])
                            for t in texts])

    cache = HubCache(tmp_path, "hub-a")
    first = cache.vectors(["cat", "dog", "cat", "a bat"], embed)
    assert calls == [["cat", "dog", "a bat"]] and (cache.misses, cache.hits) == (3, 1)
    assert torch.equal(first[0], first[2])
    assert torch.allclose(first.norm(dim=1), torch.ones(4))
    again = HubCache(tmp_path, "hub-a")  # from disk
    assert torch.equal(again.vectors(["dog", "cat"], embed), first[[1, 0]])
    assert len(calls) == 1 and again.hits == 2
    other_hub = HubCache(tmp_path, "hub-b")  # another hub's vectors are never reused
    other_hub.vectors(["cat"], embed)
    assert calls[-1] == ["cat"] and other_hub.misses == 1


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
def test_losses_prefer_the_matching_candidate(kind):
    torch.manual_seed(0)
    candidates = torch.nn.functional.normalize(torch.randn(20, 16), dim=-1)
    labels = torch.tensor([3, 7, 7, 11])
    loss = HubLoss(kind, dims=[4, 8, 16])
    right, _ = loss(candidates[labels] + 0.01 * torch.randn(4, 16), candidates, labels)
    wrong, logs = loss(candidates[labels.flip(0)], candidates, labels)
    assert torch.isfinite(right) and right < wrong
    assert logs["acc"] < 1.0
    # every Matryoshka prefix adds its own term
    single = HubLoss(kind, dims=[16])
    assert single(candidates[labels], candidates, labels)[0] < loss(
        candidates[labels], candidates, labels)[0]


def test_whole_cache_negatives_score_every_cached_text():
    torch.manual_seed(0)
    candidates = torch.nn.functional.normalize(torch.randn(50, 8), dim=-1)
    items = torch.randn(4, 8, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3])
    loss, _ = HubLoss("infonce", dims=[8])(items, candidates, labels)
    loss.backward()
    batch_only, _ = HubLoss("infonce", dims=[8])(items, candidates[:4], labels)
    assert loss > batch_only  # 46 more negatives in the softmax


def test_train_save_load_round_trip(bound, images):
    model = mmenc.load(bound)
    assert model.recipe == "bound" and set(model.modalities) == {"text", "image"}
    assert model.dims == [8, 16, 32]
    files = {p.relative_to(bound).as_posix() for p in bound.rglob("*.safetensors")}
    assert {"model.safetensors", "hub/model.safetensors", "towers/image/encoder/model.safetensors",
            "towers/image/projection.safetensors"} <= files
    paths = [r["image"] for r in images]
    again = mmenc.load(bound)
    assert torch.equal(model.encode(paths, "image"), again.encode(paths, "image"))
    texts = [r["text"] for r in images]
    # the rotation is orthogonal: full-width text similarities are the hub's own
    hub = mmenc.load(bound / "hub")
    rotated, plain = model.encode(texts, "text"), hub.encode(texts, "text")
    assert torch.allclose(rotated @ rotated.T, plain @ plain.T, atol=1e-5)
    # trained image -> text retrieval beats chance on the training pairs
    scores = model.encode(paths, "image") @ rotated.T
    r1 = (scores.argmax(1) == torch.arange(len(paths))).float().mean()
    assert r1 >= 4 / len(paths)  # chance: 1 / 12


def test_bind_add_leaves_other_parts_bitwise_unchanged(bound, tmp_path):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(bound, model_dir)
    before = {p.relative_to(model_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in model_dir.rglob("*") if p.is_file()}
    add_modality(model_dir, "midi", {"tower": tower_spec("midi"), "train": midi_rows(),
                                     "steps": 3, "batch_size": 3, "warmup": 1},
                 echo=lambda _: None, cache_dir=str(tmp_path / "cache"))
    after = {p.relative_to(model_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in model_dir.rglob("*") if p.is_file()}
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed == {"config.json", "model.safetensors"}
    assert any(k.startswith("towers/midi/") for k in set(after) - set(before))
    model = mmenc.load(model_dir)
    assert set(model.modalities) == {"text", "image", "midi"}
    assert model.encode([r["midi"] for r in midi_rows()], "midi").shape == (3, 32)


def test_sigmoid_batch_negatives_and_direct_pairs_train(hub_dir, images, tmp_path):
    rows = midi_rows()
    cfg = config(hub_dir, tmp_path, images, steps=3, loss="sigmoid", negatives="batch",
                 schedule="sequential")
    cfg["modalities"]["midi"] = {"tower": tower_spec("midi"), "train": rows, "steps": 3,
                                 "batch_size": 3, "warmup": 1}
    pairs = [{"midi": r["midi"], "image": images[i]["image"]} for i, r in enumerate(rows)]
    cfg["pairs"] = [{"modalities": ["midi", "image"], "train": pairs, "batch_size": 3}]
    logs: list[str] = []
    result = train_bound(cfg, echo=logs.append)
    assert any("direct pair midi <-> image: 3" in line for line in logs)
    assert set(result.logs) == {"image", "midi"} and result.logs["midi"]["steps"] == 3
    # the second run finds every text in the cache
    again = train_bound({**cfg, "output_dir": str(tmp_path / "again"),
                         "cache_dir": str(tmp_path / "cache")}, echo=lambda _: None)
    assert again.cache["misses"] == 0 and again.cache["hits"] == len(images) + 3


def test_bad_config_is_a_typed_error(hub_dir, images, tmp_path):
    from mmenc.errors import ConfigError

    with pytest.raises(ConfigError, match="loss must be one of"):
        train_bound(config(hub_dir, tmp_path, images, loss="hinge"))
    with pytest.raises(ConfigError, match="unknown keys"):
        train_bound(config(hub_dir, tmp_path, images, epochs=3))


def test_open_clip_random_tiny_hub(images, tmp_path):
    pytest.importorskip("open_clip")
    model_cfg = {"embed_dim": 16,
                 "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                                "head_width": 16},
                 "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32,
                              "heads": 2, "layers": 1}}
    cfg = {"hub": {"name": "open-clip", "model_cfg": model_cfg}, "dims": [8],
           "output_dir": str(tmp_path), "modalities": {"midi": {
               "tower": tower_spec("midi"), "train": midi_rows(), "steps": 2,
               "batch_size": 3, "warmup": 1}}}
    result = train_bound(cfg, echo=lambda _: None)
    model = mmenc.load(result.model_dir)
    assert set(model.modalities) == {"image", "text", "midi"}
    paths = [r["image"] for r in images[:3]]
    emb = {m: model.encode(x, m) for m, x in (("image", paths), ("text", ["a red square"]),
                                               ("midi", [r["midi"] for r in midi_rows()]))}
    assert all(e.shape[1] == 16 and torch.isfinite(e).all() for e in emb.values())
    hub = mmenc.load(result.model_dir / "hub")
    assert hub.recipe == "open-clip"
    assert torch.allclose(hub.encode(paths, "image") @ hub.encode(paths, "image").T,
                          emb["image"] @ emb["image"].T, atol=1e-5)


def test_mixed_store_search_labels_modalities(bound, images, tmp_path):
    from click.testing import CliRunner

    from mmenc.cli import main

    runner = CliRunner()
    store = tmp_path / "mixed.db"
    image_dir = Path(images[0]["image"]).parent
    res = runner.invoke(main, ["embed", str(bound), str(image_dir), "-m", "image",
                               "--store", str(store)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["embed", str(bound), "-m", "text", "--store", str(store),
                               "--text", "a red square", "--text", "a blue stripe"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["search", str(store), "--query", "a red square", "-k", "20",
                               "--json"])
    assert res.exit_code == 0, res.output
    hits = [json.loads(line) for line in res.output.splitlines() if line.strip()]
    assert {h["modality"] for h in hits} == {"image", "text"}
    assert hits[0]["source"] == "a red square"  # the identical text is nearest
    res = runner.invoke(main, ["search", str(store), "--query-file", images[0]["image"],
                               "--modality", "image", "-k", "3"])
    assert res.exit_code == 0, res.output
    assert "image" in res.output and "a blue stripe" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip().startswith("1 ")]
    assert lines and Path(images[0]["image"]).name in lines[0]  # the image finds itself


def test_semantic_search_over_a_mixed_corpus():
    corpus = torch.eye(4)
    hits = mmenc.semantic_search(torch.tensor([[1.0, 0.2, 0, 0]]), corpus, top_k=4,
                                 corpus_modalities=["image", "text", "audio", "text"])
    assert [h["modality"] for h in hits[0][:2]] == ["image", "text"]
    only_text = mmenc.semantic_search(torch.tensor([[1.0, 0.2, 0, 0]]), corpus, top_k=4,
                                      corpus_modalities=["image", "text", "audio", "text"],
                                      modality="text")
    assert [h["corpus_id"] for h in only_text[0]] == [1, 3]


def test_evaluation_merges_duplicate_answers_and_truncates():
    from mmenc.bind.evaluate import Task, evaluate_bound

    class Fixed:
        dims = [2, 4]

        def encode(self, items, modality, **_):
            table = {"a": [1.0, 0, 0, 0], "b": [0, 1.0, 0, 0], "c": [0, 0, 1.0, 0],
                     "A": [1.0, 0, 0, 0.1], "B": [0, 1.0, 0.1, 0], "C": [0.1, 0, 0, 1.0]}
            return torch.tensor([table[x] for x in items])

    task = Task("q -> g", "emergent", ["a", "b", "c", "a"], ["A", "B", "C", "A"], "x", "y")
    result = evaluate_bound(Fixed(), [task])["q -> g"]
    assert result["gallery"] == 3 and result["queries"] == 4  # the duplicate "A" is merged
    assert result["dims"]["4"]["R@1"] == 0.75  # "c" finds "C" only through the 4th dim
    assert result["dims"]["2"]["R@1"] < result["dims"]["4"]["R@1"]
    assert result["chance"]["R@1"] == 1 / 3


def test_demo_rejects_an_unknown_pairing(tmp_path):
    from mmenc.demo import run_demo
    from mmenc.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="code-text"):
        run_demo(tmp_path, pairings=("no-such-pairing",))


def test_demo_runs_the_bound_job_unless_pairings_are_named(tmp_path, monkeypatch):
    import mmenc.bind.job as job
    import mmenc.demo as demo

    calls: list[str] = []
    monkeypatch.setattr(demo, "run_pairings", lambda *a, **k: calls.append("pairings") or {})
    monkeypatch.setattr(demo, "convert_minilm", lambda out, echo: (None, tmp_path, tmp_path, 0.0))
    monkeypatch.setattr(job, "run_bind_job", lambda *a, **k: calls.append("bound") or {})
    demo.run_demo(tmp_path / "a", pairings=("code-text",))
    assert calls == ["pairings"]
    demo.run_demo(tmp_path / "b")
    assert calls == ["pairings", "bound"]
    demo.run_demo(tmp_path / "c", all_pairings=True)
    assert calls == ["pairings", "bound", "bound", "pairings"]


@pytest.mark.parametrize("args", [["--scale", "0"], ["--steps", "-1"], ["--pairing-steps", "0"]])
def test_demo_refuses_non_positive_options(args):
    from click.testing import CliRunner

    from mmenc.cli import main

    result = CliRunner().invoke(main, ["demo", *args])
    assert result.exit_code == 2
    assert "must be positive" in result.output


def test_frozen_code_tower_starts_in_the_hub_space_and_keeps_its_encoder(hub_dir, tmp_path):
    """A code tower copied from the hub, frozen, its projection started at the rotation: at
    step 0 it embeds a text exactly as the hub does; training moves only the projection, and
    the encoder's embeddings are computed once and read from the cache on the next run."""
    from safetensors.torch import load_file

    rows = [{"code": f"def {name}(x):\n    return x {op} 1", "text": f"{verb} one"}
            for name, op, verb in (("inc", "+", "add"), ("dec", "-", "subtract"),
                                   ("dbl", "*", "multiply by"), ("half", "/", "divide by"))]

    def run(steps: int, out: Path, lr: float = 1e-2) -> Path:
        spec = {"tower": {"from": str(hub_dir), "modality": "text"}, "train": rows,
                "steps": steps, "batch_size": 4, "lr": lr, "warmup": 1,
                "freeze_encoder": True, "projection_init": "rotation"}
        lines: list[str] = []
        result = train_bound({"hub": {"name": "model", "path": str(hub_dir)}, "dims": [8],
                              "output_dir": str(out), "cache_dir": str(tmp_path / "cache"),
                              "modalities": {"code": spec}}, echo=lines.append)
        assert any("encoder frozen, 4 embeddings computed once" in x for x in lines)
        return result.model_dir

    start = mmenc.load(run(1, tmp_path / "a", lr=0.0))
    codes = [r["code"] for r in rows]
    assert torch.allclose(start.encode(codes, "code"), start.encode(codes, "text"), atol=1e-5)
    cached = HubCache(tmp_path / "cache", "unused")
    entries = len(cached.index)
    trained_dir = run(30, tmp_path / "b")
    assert len(HubCache(tmp_path / "cache", "unused").index) == entries  # read, not recomputed
    hub_weights = load_file(str(hub_dir / "model.safetensors"))
    tower_weights = load_file(str(trained_dir / "towers/code/encoder/model.safetensors"))
    assert hub_weights.keys() == tower_weights.keys()
    assert all(torch.equal(hub_weights[k], tower_weights[k]) for k in hub_weights)
    trained = mmenc.load(trained_dir)
    assert not torch.allclose(trained.encode(codes, "code"), start.encode(codes, "code"))
    scores = trained.encode(codes, "code") @ trained.encode([r["text"] for r in rows], "text").T
    assert (scores.argmax(1) == torch.arange(4)).float().mean() >= 0.75


def test_projection_init_needs_a_tower_as_wide_as_the_hub(hub_dir, images, tmp_path):
    from mmenc.errors import ConfigError

    cfg = config(hub_dir, tmp_path, images)
    cfg["modalities"]["image"]["tower"]["overrides"] = {"embed_dim": 16}
    cfg["modalities"]["image"]["projection_init"] = "rotation"
    with pytest.raises(ConfigError, match="as wide as the hub"):
        train_bound(cfg, echo=lambda _: None)
    cfg["modalities"]["image"]["projection_init"] = "identity"
    with pytest.raises(ConfigError, match="projection_init"):
        train_bound(cfg, echo=lambda _: None)
