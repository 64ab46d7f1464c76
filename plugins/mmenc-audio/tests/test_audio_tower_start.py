"""A bound model's audio tower started from a saved BEATs (``init_from`` in its tower spec)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import mmenc
from mmenc.bind.towers import build_tower
from mmenc.bind.train import train_bound
from mmenc.errors import ConfigError
from mmenc_audio.audio import load_audio

TOWER = {"recipe": "audio-text-tiny", "modality": "audio"}


def clips(folder: Path, n: int = 4) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        t = np.arange(int(16000 * (0.6 + 0.2 * i))) / 16000
        path = folder / f"tone{i}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype("float32"), 16000)
        rows.append({"audio": str(path), "text": f"tone number {i}"})
    return rows


def saved_beats(path: Path, seed: int = 1, **overrides: object) -> Path:
    torch.manual_seed(seed)
    mmenc.create_model("beats-tiny", **overrides).save_pretrained(path)
    return path


def test_bound_audio_tower_starts_as_the_saved_beats(tmp_path: Path) -> None:
    rows = clips(tmp_path)
    source_dir = saved_beats(tmp_path / "beats")
    hub = tmp_path / "hub"
    mmenc.create_model("text-tiny").save_pretrained(hub)

    def bound(name: str, spec: dict) -> mmenc.Encoder:
        result = train_bound({"hub": {"name": "model", "path": str(hub)}, "dims": [8],
                              "output_dir": str(tmp_path / name), "seed": 0,
                              "modalities": {"audio": {"tower": spec, "train": rows,
                                                       "steps": 0, "batch_size": 4}}},
                             echo=lambda _: None)
        return mmenc.load(result.model_dir)

    started = bound("started", {**TOWER, "init_from": str(source_dir)}).towers["audio"]
    scratch = bound("scratch", TOWER).towers["audio"]
    source = mmenc.load(source_dir).eval()
    audio = [load_audio(r["audio"]) for r in rows]
    batch = started.tokenizer(audio)
    with torch.no_grad():
        want = source.forward_features(batch).hidden
        got = started.forward_features(batch).hidden
        other = scratch.forward_features(batch).hidden
    assert torch.equal(got, want)
    assert not torch.allclose(other, want, atol=1e-3)
    beats = started.encoder.towers["audio"].state_dict()
    assert all(torch.equal(t, source.state_dict()[k]) for k, t in beats.items())


def test_a_saved_beats_of_another_shape_is_a_config_error(tmp_path: Path) -> None:
    wider = saved_beats(tmp_path / "wide", trunk={"dim": 48, "ffn_dim": 96})
    with pytest.raises(ConfigError, match=r"parameter 'proj.weight' has shape \(48, 16\)"):
        build_tower("audio", {**TOWER, "init_from": str(wider)}, 8)


def test_a_saved_beats_on_other_mel_bins_is_a_config_error(tmp_path: Path) -> None:
    # the same shapes, other patches: the weights would fit and read other inputs
    other = saved_beats(tmp_path / "mel64", num_mel_bins=64,
                        tokenizers={"audio": {"num_mel_bins": 64}})
    with pytest.raises(ConfigError, match="'num_mel_bins' is 64 in the saved model, 128"):
        build_tower("audio", {**TOWER, "init_from": str(other)}, 8)


def test_the_speech_iterations_example_fits_the_bound_audio_tower(tmp_path: Path) -> None:
    from mmenc.bind.job import tower_specs
    from mmenc_audio.iterate import read_config, stages

    example = Path(__file__).resolve().parents[3] / "examples" / "beats-iterate-speech.yaml"
    model = next(s for s in stages(read_config(example)) if s["kind"] == "model")
    spec = model["pretrain"]["model"]
    saved = tmp_path / "iter-model"
    mmenc.create_model(spec["recipe"], **spec["overrides"]).save_pretrained(saved)
    tower_spec = tower_specs(Path("unused"), audio_seconds=4.0)["audio"]
    tower = build_tower("audio", {**tower_spec, "init_from": str(saved)}, 8)
    copied = tower.encoder.towers["audio"].state_dict()
    assert all(torch.equal(t, copied[k]) for k, t in mmenc.load(saved).state_dict().items())
