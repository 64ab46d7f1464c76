"""ONNX export and the ONNX Runtime backend: parity per modality, int8 agreement, store rules."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import mmenc  # noqa: E402
from mmenc.cli import main  # noqa: E402
from mmenc.errors import CheckpointError  # noqa: E402
from mmenc.export.onnx import example_items, export_onnx  # noqa: E402
from mmenc.factory import create_model  # noqa: E402
from mmenc.registry import catalogue  # noqa: E402
from mmenc.retrieval.store import EmbeddingStore, StoreError  # noqa: E402

# one tiny model per modality (plugins enrol theirs when installed)
TINY = {"clip-tiny": ("text", "image"), "code-text-tiny": ("code",),
        "audio-text-tiny": ("audio",), "midi-text-tiny": ("midi",)}


def _saved(name: str, path):
    torch.manual_seed(0)
    create_model(name).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    src = _saved("clip-tiny", root / "model")
    export_onnx(src, root / "served", ["text"], int8=True, min_cosine=None, echo=lambda _: None)
    return src, root / "served"


@pytest.mark.parametrize("name", [n for n in TINY if n in catalogue().names("model")])
def test_round_trip_within_1e4(name, tmp_path):
    src = _saved(name, tmp_path / "model")
    manifest = export_onnx(src, tmp_path / "out", TINY[name], echo=lambda _: None)
    model = mmenc.load(tmp_path / "out")
    for modality in TINY[name]:
        report = manifest["graphs"][modality]["fp32"]
        assert report["max_abs_diff"] <= 1e-4 and report["single_items_max_abs_diff"] <= 1e-4
        items = example_items(modality)
        # a batch size and lengths the graph was not traced with
        items = items[::-1] + items[:1]
        eager = model.encode(items, modality)
        served = model.encode(items, modality, backend="onnx")
        assert served.shape == eager.shape
        assert (served - eager).abs().max() <= 1e-4
        truncated = model.encode(items, modality, backend="onnx", dim=8)
        assert torch.allclose(truncated, model.encode(items, modality, dim=8), atol=1e-4)


def test_output_is_the_embedding_before_normalisation(clip_export):
    _, served = clip_export
    model = mmenc.load(served)
    raw = model.encode(["a cat", "a longer sentence about dogs"], "text", normalize=False,
                       backend="onnx")
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(2), atol=1e-3)
    eager = model.encode(["a cat", "a longer sentence about dogs"], "text", normalize=False)
    assert (raw - eager).abs().max() <= 1e-4


def test_int8_export_reports_agreement(clip_export):
    _, served = clip_export
    manifest = json.loads((served / "onnx" / "manifest.json").read_text())
    q = manifest["graphs"]["text"]["int8"]
    assert q["policy"] in ("all", "keep-ffn-out", "attention-only")
    assert -1.0 <= q["cosine_min"] <= q["cosine_mean"] <= 1.0 + 1e-6
    model = mmenc.load(served)
    items = example_items("text")
    int8 = model.encode(items, "text", backend="onnx-int8")
    fp32 = model.encode(items, "text", backend="onnx")
    cos = torch.nn.functional.cosine_similarity(int8, fp32, dim=-1)
    assert abs(float(cos.mean()) - q["cosine_mean"]) < 1e-3
    assert not torch.equal(int8, fp32)  # the graph really is quantised


def test_plain_attention_is_one_fused_node_in_its_declared_domain(clip_export):
    import onnx

    from mmenc.export.quantize import graph_nodes

    _, served = clip_export
    graph = served / "onnx" / "text.onnx"
    ops = [op for op, _ in graph_nodes(graph)]
    depth = mmenc.load(served).config["towers"]["text"]["trunk"]["depth"]
    assert ops.count("Attention") == depth  # one node per layer
    assert "com.microsoft" in {o.domain for o in onnx.load(str(graph)).opset_import}


def test_int8_below_min_cosine_is_refused_or_kept_with_warning(clip_export, tmp_path):
    src, _ = clip_export
    with pytest.raises(CheckpointError, match="agree with fp32 at mean cosine"):
        export_onnx(src, tmp_path / "strict", ["text"], int8=True, min_cosine=1.01,
                    echo=lambda _: None)
    assert not (tmp_path / "strict" / "onnx" / "text.int8.onnx").exists()
    from mmenc.export.quantize import LowAgreementWarning

    with pytest.warns(LowAgreementWarning):
        manifest = export_onnx(src, tmp_path / "lenient", ["text"], int8=True, min_cosine=1.01,
                               warn_only=True, echo=lambda _: None)
    assert manifest["graphs"]["text"]["int8"]["below_min_cosine"] == 1.01
    assert (tmp_path / "lenient" / "onnx" / "text.int8.onnx").is_file()


def test_backend_without_export_names_the_command(clip_export):
    src, _ = clip_export
    model = mmenc.load(src)
    with pytest.raises(CheckpointError, match="run `mmenc export") as info:
        model.encode(["hello"], "text", backend="onnx")
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="mmenc export"):
        create_model("clip-tiny").encode(["hello"], "text", backend="onnx")


def test_graphs_of_other_weights_are_refused(clip_export, tmp_path):
    import shutil

    _, served = clip_export
    copy = tmp_path / "retrained"
    shutil.copytree(served, copy)
    model = mmenc.load(copy)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(copy)
    with pytest.raises(CheckpointError, match="other weights"):
        mmenc.load(copy).encode(["hello"], "text", backend="onnx")


def test_store_refuses_mixing_precisions(clip_export, tmp_path):
    _, served = clip_export
    runner = CliRunner()
    store = tmp_path / "s.db"
    args = ["embed", str(served), "-m", "text", "-s", str(store), "--text", "a cat"]
    ok = runner.invoke(main, args)
    assert ok.exit_code == 0, ok.output
    assert EmbeddingStore(store).meta["precision"] == "fp32"
    mixed = runner.invoke(main, args[:-1] + ["a dog", "--backend", "onnx-int8"])
    assert mixed.exit_code == 1
    assert "holds fp32 embeddings (backend torch), refusing int8 ones (backend onnx-int8)" \
        in mixed.output
    # the same precision from the exported graph mixes: fp32 vectors agree within 1e-4
    same = runner.invoke(main, args[:-1] + ["a dog", "--backend", "onnx"])
    assert same.exit_code == 0, same.output
    query = runner.invoke(main, ["search", str(store), "-q", "a cat", "--json",
                                 "--backend", "onnx-int8"])
    assert query.exit_code == 1 and "do not mix" in query.output
    found = runner.invoke(main, ["search", str(store), "-q", "a cat", "--backend", "onnx",
                                 "--json"])
    assert found.exit_code == 0, found.output


def test_old_store_without_backend_counts_as_eager_fp32(clip_export, tmp_path):
    _, served = clip_export
    with EmbeddingStore(tmp_path / "old.db") as store:
        store.bind_model(served)
        with store.db:
            store.db.execute("DELETE FROM meta WHERE key IN ('backend', 'precision')")
    with EmbeddingStore(tmp_path / "old.db") as store:
        with pytest.raises(StoreError, match="holds fp32 embeddings"):
            store.bind_model(served, backend="onnx-int8")
        store.bind_model(served, backend="onnx")
        assert store.meta["precision"] == "fp32" and store.backend == "torch"


def test_export_cli_and_eval_backend(clip_export, tmp_path):
    src, _ = clip_export
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(main, ["export", str(src), str(out), "--format", "onnx", "-m", "text"])
    assert res.exit_code == 0, res.output
    assert "text: fp32 max abs diff" in res.output
    assert (out / "onnx" / "text.onnx").is_file() and (out / "config.json").is_file()
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("".join(json.dumps({"query": q, "doc": d}) + "\n" for q, d in
                                [("a cat", "cats purr"), ("a dog", "dogs bark"),
                                 ("the sea", "waves and salt")]))
    reports = {}
    for backend in ("torch", "onnx"):
        res = runner.invoke(main, ["eval", "retrieval", str(out), str(manifest),
                                   "--query-modality", "text", "--gallery-modality", "text",
                                   "--query-field", "query", "--gallery-field", "doc",
                                   "--out", str(tmp_path / backend), "--backend", backend,
                                   "--json"])
        assert res.exit_code == 0, res.output
        reports[backend] = json.loads(res.output[res.output.index("{"):])
    assert reports["onnx"]["metrics"] == reports["torch"]["metrics"]


@pytest.mark.skipif("beats-tiny" not in catalogue().names("model"),
                    reason="the audio plugin is not installed")
def test_audio_tower_serves_padded_batches_in_fp32_and_int8(tmp_path, capfd):
    """BEATs' graph starts after the fbank (the tokenizer computes it per clip in Python): fbank
    patches and their mask in, the pooled embedding out, its gated relative bias traced as
    standard ops."""
    import numpy as np

    from mmenc.export.quantize import graph_nodes

    src = _saved("beats-tiny", tmp_path / "model")
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (2800, 41000, 9000, 16000)]
    manifest = export_onnx(src, tmp_path / "out", ["audio"], int8=True,
                           calibration={"audio": clips}, min_cosine=None, echo=lambda _: None)
    assert "Custom opset domain" not in capfd.readouterr().err  # none declared unused
    model = mmenc.load(tmp_path / "out")
    assert manifest["graphs"]["audio"]["inputs"] == ["values", "mask"]
    assert not bool(model.tokenize(clips, "audio").mask.all())  # the batch is padded
    eager = model.encode(clips, "audio", normalize=False)
    served = model.encode(clips, "audio", normalize=False, backend="onnx")
    assert (served - eager).abs().max() <= 1e-4
    alone = torch.cat([model.encode([c], "audio", normalize=False, backend="onnx") for c in clips])
    assert (alone - served).abs().max() <= 1e-4  # padding does not leak into a clip
    fp32_graph = tmp_path / "out" / "onnx" / "audio.onnx"
    assert "Attention" not in {op for op, _ in graph_nodes(fp32_graph)}
    report = manifest["graphs"]["audio"]["int8"]
    assert report["policy"] == "all"
    assert "MatMulInteger" in {op for op, _ in graph_nodes(tmp_path / "out" / "onnx" /
                                                           "audio.int8.onnx")}
    int8 = model.encode(clips, "audio", normalize=False, backend="onnx-int8")
    assert not torch.equal(int8, served)
    cos = torch.nn.functional.cosine_similarity(int8, served, dim=-1)
    assert abs(float(cos.mean()) - report["cosine_mean"]) < 0.05
    assert float(cos.min()) > 0.9
