"""mmenc-vl's hooks: the vision-text recipes, the ``bridge`` and ``cross-attention`` fusions,
converters and parity mappings. Only specs live here; every target is imported on first use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmenc.hookspecs import hookimpl
from mmenc.specs import (
    CleanerSpec,
    ConverterSpec,
    FusionSpec,
    ModelSpec,
    ObjectiveSpec,
    ParitySpec,
)

_P = "mmenc_vl"


@hookimpl
def mmenc_register_tokenizers(register: Callable[[CleanerSpec], None]) -> None:
    register(CleanerSpec("albef-caption", f"{_P}.preprocess:albef_caption",
                         "ALBEF's pre_caption: lower-case, drop punctuation, first 30 words"))


@hookimpl
def mmenc_register_fusions(register: Callable[[FusionSpec], None]) -> None:
    register(FusionSpec("bridge", f"{_P}.bridgetower:bridge_fusion",
                        "BridgeTower: two-stream cross-attention layers fed layer by layer "
                        "through link towers"))
    register(FusionSpec("cross-attention", f"{_P}.albef:cross_attention_fusion",
                        "ALBEF: layers over one modality's tokens cross-attending to another's"))


@hookimpl
def mmenc_register_models(register: Callable[[Any], None]) -> None:
    build = f"{_P}.bridgetower:build_bridgetower"
    register(ModelSpec("bridgetower-base", ("text", "image"), build,
                       f"{_P}.recipes:BRIDGETOWER_BASE", "bridge",
                       "BridgeTower base: RoBERTa + CLIP ViT-B/16 @288, 6 bridge layers"))
    register(ModelSpec("bridgetower-tiny", ("text", "image"), build,
                       f"{_P}.recipes:BRIDGETOWER_TINY", "bridge",
                       "tiny BridgeTower for tests", tiny=True))
    register(ConverterSpec("bridgetower", f"{_P}.convert_bridgetower:convert_bridgetower",
                           "HF BridgeTowerModel folder (config.json + weights), or a research-"
                           "repo Lightning .ckpt next to an HF config.json"))
    register(ParitySpec("bridgetower", "bridgetower", f"{_P}.convert_bridgetower:run_bridgetower"))
    albef = f"{_P}.albef:build_albef"
    register(ModelSpec("albef-base", ("text", "image"), albef, f"{_P}.recipes:ALBEF_BASE",
                       "cross-attention",
                       "ALBEF: ViT-B/16 @256 + BERT-base (6 text + 6 fusion layers), ITC/ITM/MLM"))
    register(ModelSpec("albef-tiny", ("text", "image"), albef, f"{_P}.recipes:ALBEF_TINY",
                       "cross-attention", "tiny ALBEF for tests", tiny=True))
    register(ConverterSpec("albef", f"{_P}.convert_albef:convert_albef",
                           "ALBEF .pth ({'model': state_dict}); online encoders run, momentum "
                           "copies, queues and temperature kept"))
    register(ParitySpec("albef", "albef", f"{_P}.convert_albef:run_albef",
                        options=f"{_P}.convert_albef:albef_options"))


@hookimpl
def mmenc_register_objectives(register: Callable[[ObjectiveSpec], None]) -> None:
    register(ObjectiveSpec("vision-text-pretraining",
                           f"{_P}.objectives:VisionTextPretraining",
                           "a vision-text model's own pre-training step: ITC + ITM (hard "
                           "negatives) + MLM; ALBEF adds momentum distillation and queues"))
