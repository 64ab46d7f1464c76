"""UniXcoder started from a BERT-style text encoder: weights copied by name with the source's
conventions, the WordPiece vocabulary with UniXcoder's tokens on its [unusedN] slots, sizes that
differ refused, and a saved warm-started model reloading as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mmenc
from mmenc.batch import TokenBatch
from mmenc.builtin.recipes import text_tower
from mmenc.errors import ConfigError
from mmenc.train.config import ModelConfig, load_config
from mmenc.train.loop import build_model
from mmenc_code.minilm import minilm_config, random_minilm
from mmenc_code.tokenizer import MODES, SENTINELS, vocabulary_tokens
from mmenc_code.warm_start import wordpiece_specials

UNUSED = 510  # more slots than the modes, sentinels and Python AST markers need, and a
# vocabulary at least as large as the recipe's byte-level one (528), built before the warm start
WORDS = ["def", "return", "add", "a", "b", "x", "sum", "of", "(", ")", ":", ",", "+", "=", "#",
         "the", "two", "numbers", "##s", "f"]
# BERT's layout: [PAD] first, [unusedN] slots around [UNK] [CLS] [SEP] [MASK]
VOCAB = (["[PAD]"] + [f"[unused{i}]" for i in range(UNUSED // 2)]
         + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
         + [f"[unused{i}]" for i in range(UNUSED // 2, UNUSED)] + WORDS)
DIM, DEPTH, HEADS, FFN = 32, 2, 2, 64


def write_vocab(folder: Path, tokens: list[str]) -> Path:
    path = folder / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n")
    return path


def bert_source(folder: Path, tokens: list[str] = VOCAB) -> Path:
    """A saved BERT-style text encoder (positions from 0, two token types, eps 1e-12, a
    pooler, [PAD] = 0) with an uncased WordPiece vocabulary, weights away from a fresh model's."""
    vocab = write_vocab(folder, tokens)
    tower = {**text_tower(DIM, DEPTH, HEADS, FFN, vocab_size=len(tokens), max_length=62,
                          pad_id=0, eps=1e-12, pooler=True),
             "padding_aware_positions": False, "type_vocab_size": 2, "max_positions": 64}
    model = mmenc.create_model("text-tiny", towers={"text": tower},
                               tokenizers={"text": {"tokenizer": "text", "kind": "wordpiece",
                                                    "vocab": str(vocab), "max_length": 64}})
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder / "bert")
    return folder / "bert"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return bert_source(tmp_path_factory.mktemp("source"))


def overrides(vocab_size: int = len(VOCAB), dim: int = DIM) -> dict:
    return {"encoder": {"trunk": {"dim": dim, "depth": DEPTH, "heads": HEADS, "ffn_dim": FFN},
                        "vocab_size": vocab_size},
            "tokenizers": {"code": {"max_length": 24}, "text": {"max_length": 16},
                           "ast": {"max_length": 32}}}


def warm(source: Path, **kwargs) -> mmenc.Encoder:
    return build_model(ModelConfig("unixcoder-tiny", overrides(**kwargs),
                                   warm_start={"text": str(source)}))


def test_the_encoder_is_the_sources_tower_weights_and_conventions(source):
    model = warm(source)
    bert = mmenc.load(source)
    tower = bert.towers["text"].state_dict()
    encoder = model.encoder.state_dict()
    assert set(encoder) == {k for k in tower if not k.startswith("pooler.")}
    for key, value in encoder.items():
        assert torch.equal(value, tower[key]), key
    assert model.config["encoder"]["pad_id"] == 0 and model.pad_id == 0
    assert model.config["encoder"]["eps"] == 1e-12
    assert model.config["encoder"]["padding_aware_positions"] is False
    assert model.config["encoder"]["dropout"] == 0.0  # the recipe's, not the source's
    # the same ids through both: the positions, token types and norms are the source's
    ids = bert.tokenize(["the sum of two numbers", "add a b"], "text")
    model.eval()
    bert.eval()
    with torch.no_grad():
        mine = model.forward_features(TokenBatch(ids=ids.ids, mask=ids.mask), "text").hidden
        theirs = bert.forward_features(ids, "text").hidden
    real = ids.mask
    assert torch.allclose(mine[real], theirs[real], atol=1e-6)
    # the language-model head is the copied word embeddings
    assert torch.allclose(model.lm_logits(mine[:, :1]),
                          mine[:, :1] @ tower["embeddings.word.weight"].T, atol=1e-5)


def test_unixcoder_tokens_take_unused_slots_and_round_trip(source):
    model = warm(source)
    tok = model.tokenizers["code"]
    vocab = tok.tokenizer.get_vocab()
    assert (tok.cls_id, tok.sep_id, tok.pad_id, tok.mask_id) == (
        VOCAB.index("[CLS]"), VOCAB.index("[SEP]"), VOCAB.index("[PAD]"),
        VOCAB.index("[MASK]"))
    assert vocab["<unk>"] == VOCAB.index("[UNK]")
    slots = [VOCAB.index(f"[unused{i}]") for i in range(UNUSED)]
    added = [t for t in vocabulary_tokens("python") if t not in
             ("<s>", "</s>", "<pad>", "<unk>", "<mask>")]
    assert [vocab[t] for t in added] == slots[: len(added)]
    assert not any(t.startswith("[unused") and vocab[t] in slots[: len(added)] for t in vocab)
    assert tok.vocab_size == len(VOCAB)  # nothing appended past the embeddings
    # in text, the UniXcoder tokens stay whole and keep their case; words are lower-cased
    batch = model.tokenize(["def ADD(a, b): return a + b # <mask0> <encoder-only>"], "code")
    ids = batch.ids[0].tolist()
    assert ids[:3] == [tok.cls_id, vocab["<encoder-only>"], tok.sep_id]
    assert ids[-3:] == [vocab["<mask0>"], vocab["<encoder-only>"], tok.sep_id]
    assert [tok.tokenizer.id_to_token(i) for i in ids] == [
        "<s>", "<encoder-only>", "</s>", "def", "add", "(", "a", ",", "b", ")", ":", "return",
        "a", "+", "b", "#", "<mask0>", "<encoder-only>", "</s>"]
    flat = model.tokenize(["def f(x): return x"], "ast").ids[0].tolist()
    assert vocab["<function_definition,left>"] in flat
    assert set(MODES + SENTINELS) <= set(vocab)


def test_renaming_twice_changes_nothing_and_too_few_slots_are_refused(tmp_path, source):
    model = warm(source)
    inner = model.tokenizers["text"].tokenizer
    again = wordpiece_specials(inner)
    assert again.get_vocab() == inner.get_vocab()
    few = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS,
           *(f"w{i}" for i in range(UNUSED))]
    small = bert_source(tmp_path, few)
    with pytest.raises(ConfigError, match=r"\[unusedN\] slots; the vocabulary has 1"):
        warm(small, vocab_size=len(few))


def test_a_size_that_differs_is_a_config_error_naming_it(source):
    with pytest.raises(ConfigError, match=r"encoder\.trunk\.dim is 48 here but 32"):
        warm(source, dim=48)
    with pytest.raises(ConfigError, match=r"encoder\.vocab_size is 999 here"):
        warm(source, vocab_size=999)
    model = mmenc.create_model("unixcoder-tiny", **overrides())
    with pytest.raises(ConfigError, match=r"model\.warm_start\.code"):
        model.warm_start("code", mmenc.load(source))


def test_a_saved_warm_started_model_reloads_and_encodes_the_same(tmp_path, source):
    model = warm(source)
    model.eval()
    model.save_pretrained(tmp_path / "saved")
    for view in ("code", "text", "ast"):
        assert (tmp_path / "saved" / model.tokenizers[view].file).is_file()
    again = mmenc.load(tmp_path / "saved")
    again.eval()
    items = {"code": ["def add(a, b): return a + b"], "text": ["the sum of two numbers"],
             "ast": ["def f(x): return x"]}
    for view, item in items.items():
        assert torch.equal(again.tokenize(item, view).ids, model.tokenize(item, view).ids)
        assert torch.allclose(again.encode(item, view), model.encode(item, view), atol=1e-6)
    # a tokenizer config of kind wordpiece reads a BERT vocabulary file and renames it
    file = tmp_path / "bert-tokenizer.json"
    mmenc.load(source).tokenizers["text"].tokenizer.save(str(file))
    config = overrides()
    config["tokenizers"]["code"].update(kind="wordpiece", file=str(file))
    fresh = mmenc.create_model("unixcoder-tiny", **config)
    assert fresh.tokenizers["code"].tokenizer.get_vocab() == \
        model.tokenizers["code"].tokenizer.get_vocab()


def test_a_saved_warm_started_model_names_its_tokenizers_wordpiece(tmp_path, source):
    import json

    model = warm(source)
    saved = model.save_pretrained(tmp_path / "saved")
    configs = json.loads((saved / "config.json").read_text())["config"]["tokenizers"]
    assert {view: c["kind"] for view, c in configs.items()} == {
        "code": "wordpiece", "text": "wordpiece", "ast": "wordpiece"}
    again = mmenc.load(saved)
    items = {"code": ["def add(a, b): return a + b # <mask0>"],
             "text": ["the sum of two numbers"], "ast": ["def f(x): return x"]}
    for view, item in items.items():
        assert again.tokenizers[view].config()["kind"] == "wordpiece"
        assert torch.equal(again.tokenize(item, view).ids, model.tokenize(item, view).ids)
    # the recipe's own byte-level vocabulary is still saved as bpe
    plain = mmenc.create_model("unixcoder-tiny").save_pretrained(tmp_path / "plain")
    configs = json.loads((plain / "config.json").read_text())["config"]["tokenizers"]
    assert {c["kind"] for c in configs.values()} == {"bpe"}


def test_random_minilm_is_the_same_architecture_with_fresh_weights(tmp_path, source):
    fresh = mmenc.load(random_minilm(source, tmp_path / "random"))
    bert = mmenc.load(source)
    assert fresh.config["towers"] == bert.config["towers"]
    word = "towers.text.embeddings.word.weight"
    assert not torch.equal(fresh.state_dict()[word], bert.state_dict()[word])
    model = warm(tmp_path / "random")
    assert torch.equal(model.encoder.embeddings.word.weight, fresh.state_dict()[word])


def test_the_example_config_is_minilm_config():
    import yaml

    root = Path(__file__).resolve().parents[3]
    example = yaml.safe_load((root / "examples" / "unixcoder-minilm.yaml").read_text())
    wanted = minilm_config("runs/stdlib-code", "runs/minilm-l6", "runs/unixcoder-minilm/all",
                           40, every=20)
    assert example == wanted
    config = load_config(example)
    assert config.model.warm_start == {"text": "runs/minilm-l6"}
    assert [o.name for o in config.objectives] == [
        "contrastive", "contrastive", "masked-modeling", "unidirectional-lm", "span-denoising"]


def test_the_example_runs_with_every_objective_on_a_tiny_source(tmp_path, source):
    """examples/unixcoder-minilm.yaml with a tiny BERT for MiniLM and a tiny manifest."""
    import json

    import yaml

    from mmenc.train import pretrain

    root = Path(__file__).resolve().parents[3]
    config = yaml.safe_load((root / "examples" / "unixcoder-minilm.yaml").read_text())
    sizes = overrides()
    config["model"]["overrides"]["encoder"] = sizes["encoder"]
    config["model"]["warm_start"]["text"] = str(source)
    with pytest.raises(ConfigError, match="max_length is 96, more than the 64 positions"):
        build_model(load_config(config).model)
    config["model"]["overrides"]["tokenizers"] = sizes["tokenizers"]
    rows = [("def add(a, b):\n    return a + b", "the sum of two numbers"),
            ("def f(x):\n    return x", "return x"), ("def b(a):\n    return a", "a b")] * 2
    (tmp_path / "train.jsonl").write_text("".join(
        json.dumps({"code": c, "text": t, "ast": c}) + "\n" for c, t in rows))
    config.update(steps=2, batch_size=3, output_dir=str(tmp_path / "out"), progress=False,
                  checkpoint={"every": 2, "keep": 1})
    config["data"]["train"] = str(tmp_path / "train.jsonl")
    result = pretrain(config)
    losses = {k for k in result.metrics if k.endswith("/loss")}
    assert losses == {"contrastive/loss", "ast-code/loss", "masked-modeling/loss",
                      "unidirectional-lm/loss", "span-denoising/loss"}
    assert all(torch.isfinite(torch.tensor(result.metrics[k])) for k in losses)
    trained = mmenc.load(result.model_dir)
    assert trained.tokenizers["code"].ids["<encoder-only>"] == VOCAB.index("[unused0]")
    start = mmenc.load(source).towers["text"].state_dict()["embeddings.word.weight"]
    assert not torch.equal(trained.encoder.embeddings.word.weight, start)  # it trained
