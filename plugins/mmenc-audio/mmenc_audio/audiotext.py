"""Audio <-> text: a BEATs audio tower and a text tower meeting in one embedding space.

Configuration (stored in ``config.json``)::

    {"towers": {"audio": {"kind": "beats", ...mmenc_audio.model.beats_config() less
                          "tokenizers"...},
                "text": {"kind": "text", ...mmenc.builtin.recipes.text_tower()...}},
     "tokenizers": {"audio": {...audio-fbank...}, "text": {...}},
     "pooling": {"audio": "mean", "text": "mean"},
     "embed_dim": 64}

It is a :class:`mmenc.builtin.towers.TowerEncoder` whose ``audio`` tower is a
:class:`mmenc_audio.model.BEATsEncoder` on the shared trunk, so everything towers do still
applies: ``warm_start("text", mmenc.load(DIR))`` puts a saved text tower (e.g. the converted
MiniLM) in place, a frozen text tower is computed once per distinct caption while training,
and the ``contrastive`` objective of ``mmenc pretrain`` trains it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmenc.batch import Features, TokenBatch
from mmenc.builtin.towers import TowerEncoder, build_tower
from mmenc_audio.frontend import build_tokenizer
from mmenc_audio.model import MODALITY, BEATsEncoder

AUDIO_KIND = "beats"


class AudioTextEncoder(TowerEncoder):
    """A dual encoder of audio (BEATs) and text; see the module docstring."""

    def forward_features(self, batch: TokenBatch, modality: str,
                         output_hidden_states: bool = False) -> Features:
        self.check_modality(modality)
        if self.kinds[modality] == AUDIO_KIND:
            return self.towers[modality].forward_features(batch, MODALITY,  # type: ignore[no-any-return,operator]
                                                          output_hidden_states)
        return super().forward_features(batch, modality, output_hidden_states)

    def forward_fused(self, batches: dict[str, TokenBatch]) -> dict[str, Features]:
        return {m: self.forward_features(b, m) for m, b in batches.items()}


def build_audio_text(config: dict[str, Any], directory: Path | None = None) -> AudioTextEncoder:
    """The builder of ``audio-text-tiny`` (text tokenizer files are read from ``directory``)."""
    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    towers: dict[str, Any] = {}
    tokenizers: dict[str, Any] = {}
    for modality, tower in config["towers"].items():
        tok_cfg = config["tokenizers"][modality]
        if tower.get("kind") == AUDIO_KIND:
            body = {k: v for k, v in tower.items() if k != "kind"}
            towers[modality] = BEATsEncoder({**body, "tokenizers": {MODALITY: tok_cfg}})
            tokenizers[modality] = build_tokenizer(tok_cfg, directory)
        else:
            towers[modality] = build_tower(tower)
            name = tok_cfg.get("tokenizer", modality)
            tokenizers[modality] = resolve(catalogue().get("tokenizer", name).factory)(
                tok_cfg, directory)
    return AudioTextEncoder("audio-text-tiny", config, towers, tokenizers, None)
