"""The plugin's hooks: what mmenc-midi adds to mmenc's catalogue.

Only specs live here; symusic, MidiTok and torch are imported by the targets on first use.
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

_P = "mmenc_midi"
_BUILD = f"{_P}.model:build_midibert"
_TOWERS = "mmenc.builtin.towers:build_tower_encoder"  # towers of registered kinds


@hookimpl
def mmenc_register_modalities(register: Callable[[ModalitySpec], None]) -> None:
    register(ModalitySpec("midi", f"{_P}.midi:load_midi", f"{_P}.midi:example_midi",
                          "Standard MIDI Files (path, bytes or symusic.Score), parsed by symusic"))


@hookimpl
def mmenc_register_tokenizers(register: Callable[[TokenizerSpec], None]) -> None:
    register(TokenizerSpec("midi-cp", "midi", f"{_P}.tokenizers:cp_tokenizer",
                           "MIDI-BERT CP: (Bar, Position, Pitch, Duration) per note"))
    register(TokenizerSpec("midi-octuple", "midi", f"{_P}.tokenizers:octuple_tokenizer",
                           "Octuple (Adversarial-MidiBERT): 8 fields per note"))
    register(TokenizerSpec("midi-remi", "midi", f"{_P}.tokenizers:remi_tokenizer",
                           "REMI through MidiTok, one token stream per file"))


@hookimpl
def mmenc_register_towers(register: Callable[[TowerSpec], None]) -> None:
    register(TowerSpec("midi", f"{_P}.model:midi_tower",
                       "MIDI-BERT on compound tokens (CP / Octuple), no pooler or projection",
                       from_encoder=f"{_P}.model:midi_tower_from"))


@hookimpl
def mmenc_register_objectives(register: Callable[[ObjectiveSpec], None]) -> None:
    register(ObjectiveSpec("compound-mlm", f"{_P}.objectives:CompoundMLM",
                           "MIDI-BERT masked modelling over compound tokens (15%, 80/10/10)"))
    register(ObjectiveSpec("adversarial-masker", f"{_P}.objectives:AdversarialPretraining",
                           "Adversarial-MidiBERT: MLM heads and a learned masker trained "
                           "against the encoder (trainable by `mmenc pretrain`)"))


@hookimpl
def mmenc_register_models(register: Callable[[Any], None]) -> None:
    for name, config, tiny, description in (
        ("midibert-cp-base", "MIDIBERT_CP_BASE", False,
         "MIDI-BERT (CP tokens), 12L d768, relative key-query attention"),
        ("adv-midibert-octuple-base", "ADV_MIDIBERT_OCTUPLE_BASE", False,
         "Adversarial-MidiBERT (Octuple tokens), 12L d768, 1024 notes"),
        ("midibert-cp-tiny", "MIDIBERT_CP_TINY", True, "tiny MIDI-BERT on CP tokens"),
        ("adv-midibert-octuple-tiny", "ADV_MIDIBERT_OCTUPLE_TINY", True,
         "tiny Adversarial-MidiBERT on Octuple tokens"),
    ):
        register(ModelSpec(name, ("midi",), _BUILD, f"{_P}.recipes:{config}", "dual",
                           description, tiny))
    register(ModelSpec("midi-text-tiny", ("midi", "text"), _TOWERS,
                       f"{_P}.recipes:MIDI_TEXT_TINY", "dual",
                       "tiny MIDI <-> text dual encoder (MIDI-BERT CP tower, text tower)", True))
    register(ConverterSpec("midibert", f"{_P}.convert:convert_midibert",
                           "MIDI-BERT model_best.ckpt ({epoch, state_dict, ...}); CP dictionary"))
    register(ConverterSpec("adv-midibert", f"{_P}.convert:convert_adv_midibert",
                           "Adversarial-MidiBERT midibert_pretrain.pth (bare state dict); "
                           "Octuple dictionary"))
    for system, fmt in (("midibert", "midibert"), ("adv_midibert", "adv-midibert")):
        register(ParitySpec(system, fmt, f"{_P}.convert:run_midibert",
                            options=f"{_P}.convert:parity_options"))


@hookimpl
def mmenc_register_commands(register: Callable[[CommandSpec], None]) -> None:
    register(CommandSpec("midi-tokenize", f"{_P}.cli:midi_tokenize",
                         "tokenize a MIDI corpus; bad files are skipped and counted"))
