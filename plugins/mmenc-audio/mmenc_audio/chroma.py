"""The chroma baseline of MIDI -> rendered audio retrieval.

A MIDI snippet becomes its pitch-class histogram (each note's duration in seconds added to its
pitch class, drums left out); a clip becomes its mean chroma (STFT power folded onto the twelve
pitch classes between :data:`FMIN` and :data:`FMAX`, each frame normalised to sum 1 so loud
passages do not dominate). Both are L2-normalised after removing their mean, and a MIDI query
ranks the clips by cosine similarity. Without the random instrument and offset this gets R@1
near 1; with them it is the baseline a learned MIDI <-> audio space has to beat.

No installed library gives chroma (librosa is not a dependency, torchaudio's prototype
transforms are gone): the projection is the few lines of :func:`chroma_filter` on
``torch.stft``.

API:

- ``pitch_class_histogram(midi, seconds=None) -> np.ndarray [12]``: ``midi`` a path, bytes or
  ``symusic.Score``; only the part before ``seconds`` counts (all of it for None).
- ``audio_chroma(audio, sample_rate=16000) -> np.ndarray [12]``: ``audio`` mono samples.
- ``chroma_filter(sample_rate, n_fft) -> np.ndarray [12, n_fft // 2 + 1]``: the 0/1 folding.
- ``chroma_scores(midis, audios, seconds=None, sample_rate=16000) -> torch.Tensor [q g]``:
  cosine similarities of every MIDI (query) to every clip (gallery).
- ``chroma_baseline(midis, audios, ...) -> dict``: R@1/5/10, MRR and the rest of
  :func:`mmenc.retrieval.metrics.retrieval_metrics`, item ``i`` of ``midis`` being the answer to
  item ``i`` of ``audios``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

FMIN, FMAX = 60.0, 2100.0
"""Frequencies (Hz) folded onto pitch classes: about B1 to C7."""
N_FFT, HOP = 2048, 512


def pitch_class_histogram(midi: Any, seconds: float | None = None) -> np.ndarray:
    """Seconds of sounding notes per pitch class (C = 0), of the first ``seconds``."""
    from mmenc_midi.midi import load_midi

    score = load_midi(midi).to("second")
    hist = np.zeros(12, dtype=np.float64)
    for track in score.tracks:
        if track.is_drum or len(track.notes) == 0:
            continue
        notes = track.notes.numpy()
        start = notes["time"].astype(np.float64)
        end = start + notes["duration"].astype(np.float64)
        if seconds is not None:
            end = np.minimum(end, seconds)
        np.add.at(hist, notes["pitch"].astype(np.int64) % 12, np.clip(end - start, 0.0, None))
    return hist


def chroma_filter(sample_rate: int, n_fft: int = N_FFT) -> np.ndarray:
    """``[12 f]``: 1 where FFT bin ``f`` (between FMIN and FMAX) is nearest pitch class c."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    keep = (freqs >= FMIN) & (freqs <= FMAX)
    pitch = 69.0 + 12.0 * np.log2(np.where(keep, freqs, 440.0) / 440.0)
    classes = np.rint(pitch).astype(np.int64) % 12
    out = np.zeros((12, freqs.size), dtype=np.float32)
    out[classes[keep], np.flatnonzero(keep)] = 1.0
    return out


def audio_chroma(audio: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """Mean over frames of the frame-normalised chroma of ``audio``."""
    wave = torch.as_tensor(np.asarray(audio, dtype=np.float32)).flatten()
    if wave.numel() < N_FFT:
        wave = torch.nn.functional.pad(wave, (0, N_FFT - wave.numel()))
    spec = torch.stft(wave, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = spec.abs().square()  # [f t]
    chroma = torch.from_numpy(chroma_filter(sample_rate, N_FFT)) @ power  # [12 t]
    total = chroma.sum(dim=0)  # [t]
    if not float(total.max()) > 0.0:
        return np.zeros(12)
    voiced = total > 1e-6 * float(total.max())  # silent frames have no pitch class
    return (chroma[:, voiced] / total[voiced]).mean(dim=1).double().numpy()


def _unit(rows: np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(rows, dtype=torch.float64)
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def chroma_scores(midis: Sequence[Any], audios: Sequence[np.ndarray],
                  seconds: float | None = None, sample_rate: int = 16_000) -> torch.Tensor:
    """``[q g]`` cosine similarity of each MIDI's histogram to each clip's chroma."""
    hist = np.stack([pitch_class_histogram(m, seconds) for m in midis])
    chroma = np.stack([audio_chroma(a, sample_rate) for a in audios])
    return _unit(hist) @ _unit(chroma).T


def chroma_baseline(midis: Sequence[Any], audios: Sequence[np.ndarray],
                    seconds: float | None = None, sample_rate: int = 16_000
                    ) -> dict[str, float]:
    """MIDI -> audio retrieval metrics of the chroma baseline (pair ``i`` is the answer)."""
    from mmenc.retrieval.metrics import retrieval_metrics

    if len(midis) != len(audios) or not midis:
        raise ValueError(f"need as many clips as MIDI items, got {len(midis)} and {len(audios)}")
    scores = chroma_scores(midis, audios, seconds, sample_rate)
    return retrieval_metrics(scores, torch.eye(len(midis), dtype=torch.bool))
