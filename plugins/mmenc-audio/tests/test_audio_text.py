"""Audio <-> text: the ``audio-text-tiny`` recipe, warm-starting its text tower, contrastive
pretraining with a frozen text tower, the real-audio data module and the pairing's pieces."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import mmenc
from mmenc.data import held_out
from mmenc.train import load_config, pretrain
from mmenc_audio import data
from mmenc_audio.audio import example_audio
from mmenc_audio.pairing import pretrain_config, random_baseline, write_speech_manifests

TEXTS = ["a rising chirp", "two notes at once", "noise", "a short tone"]


def test_audio_text_tiny_encodes_both_and_round_trips(tmp_path: Path) -> None:
    model = mmenc.create_model("audio-text-tiny").eval()
    assert set(model.modalities) == {"audio", "text"}
    audio = model.encode(example_audio(), "audio")
    text = model.encode(TEXTS, "text")
    assert audio.shape == text.shape == (4, 32)
    batch = model.tokenize(example_audio(), "audio")
    features = model.forward_features(batch, "audio")
    assert features.hidden.shape == (4, 24, 32) and torch.equal(features.mask, batch.mask)
    model.save_pretrained(tmp_path / "m")
    loaded = mmenc.load(tmp_path / "m")
    assert loaded.recipe == "audio-text-tiny"
    assert torch.allclose(loaded.encode(example_audio(), "audio"), audio, atol=1e-6)
    assert torch.allclose(loaded.encode(TEXTS, "text"), text, atol=1e-6)


def test_text_tower_warm_starts_from_a_saved_text_model(tmp_path: Path) -> None:
    source = mmenc.create_model("text-tiny", towers={"text": {"trunk": {"dim": 48,
                                                                        "heads": 2}}})
    model = mmenc.create_model("audio-text-tiny")
    model.warm_start("text", source)
    assert model.towers["text"] is source.towers["text"]
    assert model.proj["text"].in_features == 48 and model.proj["text"].out_features == 32
    model.eval()
    batch = model.tokenize(TEXTS, "text")
    with torch.no_grad():
        ours = model.forward_features(batch, "text").hidden
        theirs = source.eval().forward_features(source.tokenize(TEXTS, "text"), "text").hidden
    assert torch.equal(ours, theirs)
    model.save_pretrained(tmp_path / "w")
    assert mmenc.load(tmp_path / "w").config["towers"]["text"]["trunk"]["dim"] == 48


def _pairs(folder: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        t = np.arange(int(8000 * (0.4 + 0.1 * i))) / 8000
        wave = 0.3 * np.sin(2 * np.pi * (150 + 90 * i) * t) + 0.02 * rng.standard_normal(t.shape)
        sf.write(folder / f"s{i}.wav", wave.astype(np.float32), 8000)
        rows.append({"audio": f"s{i}.wav", "text": f"tone number {i}"})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "train.jsonl"


def test_contrastive_pretraining_with_a_frozen_warm_started_text_tower(tmp_path: Path) -> None:
    train = _pairs(tmp_path)
    mmenc.create_model("text-tiny").save_pretrained(tmp_path / "text")
    config = pretrain_config(train, tmp_path / "run", steps=3, minilm=tmp_path / "text",
                             dim=32, depth=1, embed_dim=16, batch_size=4, max_seconds=1.0,
                             num_workers=0)
    assert load_config(config).model.freeze == ["towers.text"]
    result = pretrain(config)
    assert result.step == 3 and math.isfinite(result.metrics["loss"])
    trained = mmenc.load(result.model_dir)
    start = mmenc.load(tmp_path / "text")
    for name, tensor in start.towers["text"].state_dict().items():
        assert torch.equal(trained.towers["text"].state_dict()[name], tensor), name
    assert trained.config["towers"]["audio"]["num_mel_bins"] == 64
    assert trained.tokenizers["audio"].num_mel_bins == 64
    assert trained.encode([str(tmp_path / "s0.wav")], "audio").shape == (1, 16)


def test_random_baseline() -> None:
    assert random_baseline(1) == {"R@1": 1.0, "R@5": 1.0, "MRR": 1.0}
    four = random_baseline(4)
    assert four["R@1"] == 0.25 and four["R@5"] == 1.0
    assert math.isclose(four["MRR"], (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert math.isclose(random_baseline(563)["MRR"], 0.0125, abs_tol=5e-4)  # DATA.md: 0.013


def test_spelt_sample_names() -> None:
    assert data.spell_name("bd_fat") == "bass drum fat"
    assert data.spell_name("ambi_choir") == "ambient choir"
    assert data.spell_name("drum_snare_hard") == "drum snare hard"


@pytest.mark.skipif(not data.available()["speech"],
                    reason="needs the Debian packages asterisk-core-sounds-en(-wav)")
def test_speech_prompts_split_by_prompt_id(tmp_path: Path) -> None:
    prompts = data.speech_prompts()
    assert len(prompts) == 563  # DATA.md: 563 prompts with transcripts
    assert all(p.test == held_out(p.id) for p in prompts)
    assert 80 <= sum(p.test for p in prompts) <= 140
    assert all(Path(p.path).is_file() and not p.text.startswith("[") for p in prompts)
    by_id = {p.id: p for p in prompts}
    assert by_id["digits/7"].text.lower().startswith("seven")
    paths = data.write_manifests(tmp_path, ("speech",))
    train = [json.loads(line) for line in paths["train"].open()]
    test = [json.loads(line) for line in paths["test"].open()]
    assert len(train) + len(test) == 563
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert all(r["audio"].startswith(str(data.SPEECH_DIR)) for r in train)
    pairing = write_speech_manifests(tmp_path / "pairing")
    assert pairing["train_items"] == len(train) and len(pairing["test"]) == len(test)
    seen = {r["text"].lower().strip(" .") for r in train}
    unseen = pairing["test_unseen_text"]
    assert 0 < len(unseen) < len(test)
    assert all(r["text"].lower().strip(" .") not in seen for r in unseen)


@pytest.mark.skipif(not data.available()["sounds"], reason="needs the Debian package "
                    "sonic-pi-samples")
def test_sound_samples_are_loadable() -> None:
    from mmenc_audio.audio import load_audio

    samples = data.sound_samples()
    assert len(samples) >= 150
    assert all(s.test == held_out(s.id) for s in samples)
    clip = load_audio(samples[0].path)
    assert clip.ndim == 1 and clip.shape[0] >= 400


def test_demo_is_skipped_without_the_speech_packages(monkeypatch, tmp_path: Path) -> None:
    from mmenc_audio import pairing

    monkeypatch.setattr(data, "available", lambda: {"speech": False, "sounds": False})
    lines: list[str] = []
    report = pairing.demo(tmp_path, None, 5, lines.append)
    assert "asterisk-core-sounds-en" in report["skipped"]
    assert lines and lines[0].startswith("  skipped:") and not any(tmp_path.iterdir())


def test_length_baseline_matches_durations(tmp_path: Path) -> None:
    from mmenc.retrieval.evaluate import evaluate_retrieval
    from mmenc_audio.pairing import LengthScorer

    rows = []
    for i, text in enumerate(["a", "a bit longer", "much longer than the others are"]):
        seconds = 0.2 + 0.05 * len(text)  # duration grows with the characters
        sf.write(tmp_path / f"l{i}.wav", np.zeros(int(8000 * seconds), dtype=np.float32), 8000)
        rows.append({"audio": str(tmp_path / f"l{i}.wav"), "text": text})
    scorer = LengthScorer(rows)
    assert math.isclose(scorer.slope, 0.05, rel_tol=1e-4)
    assert math.isclose(scorer.intercept, 0.2, abs_tol=1e-3)
    report = evaluate_retrieval(scorer, rows, "audio", "text", echo=lambda _: None,
                                show_progress_bar=False)
    assert report["metrics"]["audio->text"]["R@1"] == 1.0
    assert report["metrics"]["text->audio"]["MRR"] == 1.0
