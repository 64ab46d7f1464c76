"""Similarity, semantic search, zero-shot classifiers, indexes and retrieval evaluation,
each against a direct computation (brute-force sorts, manual averaging, retrieval_metrics)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import mmenc
from mmenc.builtin.image import example_images
from mmenc.cli import main
from mmenc.retrieval.evaluate import MatchingModel, evaluate_retrieval
from mmenc.retrieval.index import ExactIndex, FaissIndex, HnswIndex, build_index, topk_exact
from mmenc.retrieval.metrics import retrieval_metrics

CAPTIONS = ["a smooth gradient", "a checkerboard", "a plain square", "see-through", "a gradient"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "clip-tiny"
    mmenc.create_model("clip-tiny").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clip(clip_dir):
    return mmenc.load(clip_dir)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Five captions of four images; the same caption text appears twice."""
    folder = tmp_path_factory.mktemp("pairs")
    (folder / "img").mkdir()
    for i, image in enumerate(example_images()):
        image.save(folder / "img" / f"{i}.png")
    rows = [{"image": f"img/{i}.png", "text": c} for i, c in enumerate(CAPTIONS[:4])]
    rows.append({"image": "img/0.png", "text": "a gradient"})
    rows.append({"image": "img/3.png", "text": "a checkerboard"})  # a caption of two images
    (folder / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder / "pairs.jsonl"


def brute_force(scores, k):
    """Per query, (id, score) of the best k, lower id first on ties."""
    return [sorted(range(len(row)), key=lambda j: (-row[j], j))[:k] for row in scores.tolist()]


# -- similarity and semantic search --------------------------------------------------------
def test_similarity_is_the_cosine_matrix():
    a, b = torch.randn(5, 8), torch.randn(7, 8)
    manual = torch.tensor([[float(x @ y / x.norm() / y.norm()) for y in b] for x in a])
    assert torch.allclose(mmenc.similarity(a, b), manual, atol=1e-6)
    assert mmenc.similarity(a[0], b.numpy()).shape == (1, 7)
    assert torch.allclose(mmenc.similarity(a, b, "dot"), a @ b.T)
    with pytest.raises(ValueError, match="sizes differ"):
        mmenc.similarity(a, torch.randn(3, 4))


@pytest.mark.parametrize("top_k", [1, 3, 10, 40])
def test_semantic_search_matches_a_brute_force_sort_with_ties(top_k):
    gen = torch.Generator().manual_seed(1)
    # small integers give exactly equal scores: ties inside and across corpus chunks
    corpus = torch.randint(-2, 3, (25, 6), generator=gen).float()
    queries = torch.randint(-2, 3, (9, 6), generator=gen).float()
    scores = queries @ corpus.T
    assert len(scores.unique()) < scores.numel() / 3  # the data really has ties
    hits = mmenc.semantic_search(queries, corpus, top_k=top_k, score_function="dot",
                                 query_chunk_size=4, corpus_chunk_size=7)
    expected = brute_force(scores, top_k)
    assert [[h["corpus_id"] for h in row] for row in hits] == expected
    for row, ids, s in zip(hits, expected, scores, strict=True):
        assert [h["score"] for h in row] == [float(s[j]) for j in ids]
        assert set(row[0]) == {"corpus_id", "score"}


def test_semantic_search_cosine_and_small_corpus():
    queries, corpus = torch.randn(4, 16), torch.randn(30, 16) * 5
    hits = mmenc.semantic_search(queries, corpus, top_k=5, corpus_chunk_size=8)
    cos = mmenc.similarity(queries, corpus)
    for row, ids, s in zip(hits, brute_force(cos, 5), cos, strict=True):
        assert [h["corpus_id"] for h in row] == ids
        assert [h["score"] for h in row] == pytest.approx([float(s[j]) for j in ids], abs=1e-5)
    few = mmenc.semantic_search(queries, corpus[:3], top_k=10)
    assert [len(r) for r in few] == [3] * 4  # top_k larger than the corpus: all of it, sorted
    assert all(r[0]["score"] >= r[1]["score"] >= r[2]["score"] for r in few)


def test_topk_exact_breaks_ties_by_lower_id_across_chunks():
    scores_row = torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0, 3.0, 0.0, 3.0])
    gallery = torch.diag(scores_row)  # query of ones scores gallery row j as scores_row[j]
    query = torch.ones(1, 8)
    for chunk in (1, 3, 8):
        scores, ids = topk_exact(query, gallery, 3, corpus_chunk=chunk)
        assert ids.tolist() == [[1, 2, 4]] and scores.tolist() == [[3.0, 3.0, 3.0]]


# -- zero-shot classifier ------------------------------------------------------------------
def test_zero_shot_classifier_matches_manual_averaging(clip):
    classes = ["cat", "dog", "car"]
    templates = ["a photo of a {}.", "a {c} in the wild", lambda c: f"art of a {c}"]
    weights = mmenc.build_zero_shot_classifier(clip, classes, templates, batch_size=4)
    manual = []
    for c in classes:
        prompts = [f"a photo of a {c}.", f"a {c} in the wild", f"art of a {c}"]
        emb = F.normalize(clip.encode(prompts, "text", normalize=False), dim=-1)
        manual.append(F.normalize(emb.mean(dim=0), dim=-1))
    assert weights.shape == (clip.encode(["x"], "text").shape[1], 3)
    assert torch.allclose(weights, torch.stack(manual, dim=1), atol=1e-5)
    assert torch.allclose(weights.norm(dim=0), torch.ones(3), atol=1e-5)


def test_zero_shot_classifier_with_image_prototypes(clip):
    images = example_images()
    names = ["gradient", "checker", "solid", "clear"]
    weights = mmenc.build_zero_shot_classifier(
        clip, names, [lambda c: images[names.index(c)]], modality="image")
    logits = clip.encode(images, "image") @ weights  # each image is its own class prototype
    assert logits.argmax(dim=1).tolist() == [0, 1, 2, 3]


# -- indexes ---------------------------------------------------------------------------------
def test_exact_faiss_and_hnsw_agree():
    gen = torch.Generator().manual_seed(2)
    gallery = F.normalize(torch.randn(3000, 16, generator=gen), dim=1)
    queries = F.normalize(torch.randn(50, 16, generator=gen), dim=1)
    s_exact, i_exact = ExactIndex(gallery, corpus_chunk=700).search(queries, 10)
    s_flat, i_flat = FaissIndex(gallery).search(queries, 10)
    assert torch.equal(i_exact, i_flat)
    assert torch.allclose(s_exact, s_flat, atol=1e-5)
    _, i_hnsw = HnswIndex(gallery).search(queries, 10)
    recall = (i_hnsw[:, :, None] == i_exact[:, None, :]).any(2).float().mean()
    assert recall >= 0.98
    assert isinstance(build_index(gallery, "auto"), ExactIndex)
    assert isinstance(build_index(gallery, "auto", auto_faiss_rows=100), FaissIndex)
    with pytest.raises(ValueError, match="index kind"):
        build_index(gallery, "annoy")


# -- retrieval evaluation ----------------------------------------------------------------------
def test_evaluate_retrieval_matches_metrics_in_both_directions(clip, manifest):
    folder = manifest.parent
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    pairs = [{"image": str(folder / r["image"]), "text": r["text"]} for r in rows]
    report = evaluate_retrieval(clip, pairs, "text", "image", batch_size=2)
    texts = list(dict.fromkeys(r["text"] for r in rows))  # duplicates count once
    images = [str(folder / "img" / f"{i}.png") for i in range(4)]
    relevant = torch.zeros(len(texts), 4, dtype=torch.bool)
    for r in rows:
        relevant[texts.index(r["text"]), int(r["image"][4])] = True
    scores = clip.encode(texts, "text") @ clip.encode(images, "image").T
    expected = {"text->image": retrieval_metrics(scores, relevant),
                "image->text": retrieval_metrics(scores.T, relevant.T)}
    for direction, metrics in expected.items():
        assert report["metrics"][direction] == pytest.approx(metrics, abs=1e-5)
    assert report["counts"]["text_items"] == 5 and report["counts"]["image_items"] == 4
    assert report["counts"]["links"] == int(relevant.sum()) == 6


def test_eval_skips_a_corrupt_image_and_counts_it(clip, manifest, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    pairs = [(c, str(manifest.parent / f"img/{i}.png")) for i, c in enumerate(CAPTIONS[:4])]
    report = evaluate_retrieval(clip, [*pairs, ("broken", str(bad))], "text", "image",
                                echo=lambda m: None)
    assert report["counts"]["skipped_items"] == {"not a readable image": 1}
    assert report["counts"]["text_items"] == 4  # the caption of the broken image is dropped


class OracleMatcher:
    """A model whose matching head knows the true pairs: re-ranking must then be perfect."""

    def __init__(self, model, truth):
        self.model, self.truth, self.recipe = model, truth, "oracle"
        self.calls = 0

    def encode(self, *args, **kwargs):
        return self.model.encode(*args, **kwargs)

    def check_modality(self, modality):
        self.model.check_modality(modality)

    def match_scores(self, a_items, b_items, *, a_modality, b_modality):
        assert (a_modality, b_modality) == ("text", "image")
        self.calls += 1
        pairs = zip(a_items, b_items, strict=True)
        return torch.tensor([float((a, b) in self.truth) for a, b in pairs])


def test_rerank_uses_the_matching_head(clip, manifest):
    images = [str(manifest.parent / f"img/{i}.png") for i in range(4)]
    pairs = list(zip(CAPTIONS[:4], images, strict=True))
    oracle = OracleMatcher(clip, set(pairs))
    assert isinstance(oracle, MatchingModel) and not isinstance(clip, MatchingModel)
    report = evaluate_retrieval(oracle, pairs, "text", "image", rerank=4, batch_size=3)
    assert report["rerank"]["status"] == "done" and oracle.calls > 0
    for direction in ("text->image", "image->text"):
        assert report["metrics_rerank"][direction]["R@1"] == 1.0
        assert report["metrics_rerank"][direction]["MRR"] == 1.0


def test_eval_cli_writes_report_and_plot(clip_dir, manifest, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, [
        "eval", "retrieval", str(clip_dir), str(manifest), "--query-modality", "text",
        "--gallery-modality", "image", "--out", str(out), "--rerank", "3", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "has no matching head" in result.stderr and "skipped" in result.stderr
    assert "text->image" in result.stdout and "image->text" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report["metrics"]) == {"text->image", "image->text"}
    assert set(report["metrics"]["text->image"]) >= {"R@1", "R@5", "R@10", "MRR", "mAP",
                                                     "nDCG@10", "mean_rank", "median_rank"}
    assert report["rerank"]["status"] == "skipped"
    assert report["manifest"] == str(manifest.resolve())
    assert (out / "recall.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_cli_same_modality_needs_fields(clip_dir, manifest):
    result = CliRunner().invoke(main, ["eval", "retrieval", str(clip_dir), str(manifest),
                                       "--query-modality", "text", "--gallery-modality", "text"])
    assert result.exit_code == 2 and "--query-field" in result.output


def test_bm25_splits_identifiers_and_matches_rank_bm25():
    from rank_bm25 import BM25Okapi

    from mmenc.retrieval.lexical import Bm25Scorer, words

    assert words("readHeader(self, max_len2)") == ["read", "header", "self", "max", "len", "2"]
    assert words("HTTPServer parse_URL") == ["http", "server", "parse", "url"]
    docs = ["def read_header(f): return f.readline()", "def write_body(f, data): f.write(data)",
            "class HTTPServer: pass"]
    queries = ["Read the header line.", "an HTTP server", "write data"]
    scores = Bm25Scorer().score_items(queries, docs, "text", "code")
    ref = BM25Okapi([words(d) for d in docs])
    for i, q in enumerate(queries):
        assert torch.allclose(scores[i], torch.tensor(ref.get_scores(words(q))))
    assert scores.argmax(1).tolist() == [0, 2, 1]
    pairs = [(queries[0], docs[0]), (queries[1], docs[2]), (queries[2], docs[1])]
    report = evaluate_retrieval(Bm25Scorer(), pairs, "text", "text",
                                echo=lambda _: None)
    assert report["metrics"]["query->gallery"]["R@1"] == 1.0
    # the other direction scores the gallery items as queries, not the transposed matrix
    assert report["metrics"]["gallery->query"]["R@1"] == 1.0


def test_exclude_identical_keeps_a_query_from_finding_itself():
    model = mmenc.create_model("text-tiny")
    pairs = [{"q": "alpha", "g": "alpha beta"}, {"q": "alpha beta", "g": "alpha"},
             {"q": "gamma", "g": "gamma delta"}, {"q": "gamma delta", "g": "gamma"}]
    plain = evaluate_retrieval(model, pairs, "text", "text", query_key="q", gallery_key="g",
                               echo=lambda _: None)
    honest = evaluate_retrieval(model, pairs, "text", "text", query_key="q", gallery_key="g",
                                exclude_identical=True, echo=lambda _: None)
    # with identical strings in the gallery, each query's twin scores exactly 1 and wins
    assert plain["metrics"]["q->g"]["R@1"] == 0.0
    assert honest["settings"]["exclude_identical"] is True
    assert honest["metrics"]["q->g"]["MRR"] > plain["metrics"]["q->g"]["MRR"]


def test_eval_cli_bm25_baseline(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"doc": d, "code": c}) + "\n" for d, c in [
        ("Read a header.", "def read_header(): pass"),
        ("Write a body.", "def write_body(): pass"),
        ("Close the socket.", "def close_socket(s): s.close()"),
        ("Open a file.", "def open_file(p): return open(p)")]))
    result = CliRunner().invoke(main, ["eval", "retrieval", "bm25", str(path),
                                       "--query-modality", "text", "--gallery-modality", "text",
                                       "--query-field", "doc", "--gallery-field", "code",
                                       "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["model"]["recipe"] == "bm25"
    assert report["metrics"]["doc->code"]["R@1"] == 1.0


def test_rerank_itc_weight_adds_the_similarity_to_the_matching_log_odds():
    from mmenc.retrieval.evaluate import rerank_scores

    class Fixed:
        """Matched probabilities from a table: query i, gallery j -> table[i][j]."""

        def __init__(self, table):
            self.table = table

        def match_scores(self, a_items, b_items, *, a_modality, b_modality):
            return torch.tensor([self.table[a][b] for a, b in zip(a_items, b_items, strict=True)])

    scores = torch.tensor([[0.9, 0.5, 0.1]])  # ITC prefers gallery 0
    model = Fixed({0: {0: 0.4, 1: 0.6, 2: 0.99}})  # ITM prefers 2, then 1
    itm = rerank_scores(model, scores, [0], [0, 1, 2], 2, "a", "b", True)
    assert itm[0].argmax() == 1  # among ITC's top 2, ITM alone picks gallery 1
    both = rerank_scores(model, scores, [0], [0, 1, 2], 2, "a", "b", True, itc_weight=10.0)
    logodds = torch.log(torch.tensor([0.4, 0.6]) / torch.tensor([0.6, 0.4])).double()
    expected = logodds + 10.0 * scores[0, :2].double()
    assert torch.allclose(both[0, :2], expected)
    assert both[0].argmax() == 0 and both[0, 2] < both[0, :2].min()  # gallery 2 stays below
