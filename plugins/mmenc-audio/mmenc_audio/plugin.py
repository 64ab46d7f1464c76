"""The plugin's hooks: what mmenc-audio adds to mmenc's catalogue.

Only specs live here; numpy, torch, torchaudio and soundfile are imported on first use of a
target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmenc.hookspecs import hookimpl
from mmenc.specs import (
    CommandSpec,
    ConverterSpec,
    ModalitySpec,
    ModelSpec,
    ObjectiveSpec,
    ParitySpec,
    TokenizerSpec,
    TowerSpec,
)

_P = "mmenc_audio"


@hookimpl
def mmenc_register_modalities(register: Callable[[ModalitySpec], None]) -> None:
    register(ModalitySpec("audio", f"{_P}.audio:load_audio", f"{_P}.audio:example_audio",
                          "audio clips (file path, bytes, array or (array, rate)), mono 16 kHz"))


@hookimpl
def mmenc_register_tokenizers(register: Callable[[TokenizerSpec], None]) -> None:
    register(TokenizerSpec("audio-fbank", "audio", f"{_P}.frontend:build_tokenizer",
                           "Kaldi fbank (128 mel, 25/10 ms), normalised, 16x16 patches"))
    register(TokenizerSpec("audio-acoustic-labels", "audio",
                           f"{_P}.acoustic:build_acoustic_tokenizer",
                           "BEATs acoustic labels per patch: random projection or a trained "
                           "tokenizer"))


@hookimpl
def mmenc_register_towers(register: Callable[[TowerSpec], None]) -> None:
    register(TowerSpec("beats", f"{_P}.model:beats_tower",
                       "BEATs on fbank patches (no head, quantiser or projection)"))


@hookimpl
def mmenc_register_objectives(register: Callable[[ObjectiveSpec], None]) -> None:
    register(ObjectiveSpec("masked-acoustic-labels", f"{_P}.objectives:MaskedAcousticLabelLoss",
                           "BEATs: predict the acoustic labels of block-masked patches"))
    register(ObjectiveSpec("tokenizer-distillation",
                           f"{_P}.objectives:TokenizerDistillationLoss",
                           "BEATs tokenizer: quantise, reconstruct the teacher's features "
                           "(cosine)"))


@hookimpl
def mmenc_register_models(register: Callable[[Any], None]) -> None:
    for name, config, tiny, description in (
        ("beats-base", "BEATS_BASE", False, "BEATs audio encoder (base: 12 layers, d768)"),
        ("beats-tiny", "BEATS_TINY", True, "tiny BEATs audio encoder"),
        ("beats-tokenizer", "BEATS_TOKENIZER", False,
         "BEATs acoustic tokenizer (base encoder + 1024-code quantiser)"),
        ("beats-tokenizer-tiny", "BEATS_TOKENIZER_TINY", True, "tiny BEATs acoustic tokenizer"),
    ):
        register(ModelSpec(name, ("audio",), f"{_P}.model:build", f"{_P}.recipes:{config}",
                           "dual", description, tiny))
    register(ModelSpec("audio-text-tiny", ("audio", "text"),
                       "mmenc.builtin.towers:build_tower_encoder",
                       f"{_P}.recipes:AUDIO_TEXT_TINY", "dual",
                       "tiny audio-text dual encoder: BEATs audio tower + text tower", True))
    register(ConverterSpec("beats", f"{_P}.convert:convert_beats",
                           "official BEATs .pt {cfg, model[, label_dict]} (pre-trained or "
                           "fine-tuned)"))
    register(ConverterSpec("beats-tokenizer", f"{_P}.convert:convert_beats_tokenizer",
                           "official BEATs acoustic tokenizer .pt {cfg, model}"))
    register(ParitySpec("beats", "beats", f"{_P}.convert:run_beats", kind="model"))
    register(ParitySpec("beats", "beats-tokenizer", f"{_P}.convert:run_beats_tokenizer",
                        kind="tokenizer"))


@hookimpl
def mmenc_register_commands(register: Callable[[CommandSpec], None]) -> None:
    register(CommandSpec("audio", f"{_P}.cli:audio",
                         "audio tools: iterate (BEATs' iterative pre-training), manifests"))
