"""mmenc's built-ins, registered through the same hooks as any third-party plugin.

Only specs live here: every target is imported on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmenc.hookspecs import hookimpl
from mmenc.specs import (
    CommandSpec,
    ConverterSpec,
    FusionSpec,
    ModalitySpec,
    ModelSpec,
    ObjectiveSpec,
    ParitySpec,
    TokenizerSpec,
    TowerSpec,
)

_B = "mmenc.builtin"
_TOWERS = f"{_B}.towers:build_tower_encoder"


@hookimpl
def mmenc_register_modalities(register: Callable[[ModalitySpec], None]) -> None:
    register(ModalitySpec("text", f"{_B}.text:load_text", f"{_B}.text:example_text",
                          "Unicode text (str or UTF-8 bytes)"))
    register(ModalitySpec("image", f"{_B}.image:load_image", f"{_B}.image:example_images",
                          "images (path, bytes or PIL), converted to RGB"))


@hookimpl
def mmenc_register_tokenizers(register: Callable[[TokenizerSpec], None]) -> None:
    register(TokenizerSpec("text", "text", f"{_B}.text:text_tokenizer",
                           "HF tokenizers: tokenizer.json, BERT vocab.txt, or byte-level"))
    register(TokenizerSpec("image", "image", f"{_B}.image:image_tokenizer",
                           "resize + crop + normalise to pixel tensors"))


@hookimpl
def mmenc_register_fusions(register: Callable[[FusionSpec], None]) -> None:
    register(FusionSpec("dual", f"{_B}.fusion:dual_fusion",
                        "no fusion: independent towers meeting in the embedding space"))
    register(FusionSpec("merged", f"{_B}.fusion:merged_fusion",
                        "concatenated tokens of all modalities through one joint trunk"))


@hookimpl
def mmenc_register_towers(register: Callable[[TowerSpec], None]) -> None:
    register(TowerSpec("text", f"{_B}.towers:text_tower",
                       "mmenc's BERT/RoBERTa-style text transformer on the shared trunk"))
    register(TowerSpec("vision", f"{_B}.towers:vision_tower",
                       "mmenc's ViT on the shared trunk (timm / CLIP ViT layouts)"))
    register(TowerSpec("timm", f"{_B}.timm_tower:timm_tower",
                       "any timm image model (timm.list_models()), pooled by timm's own head"))


@hookimpl
def mmenc_register_objectives(register: Callable[[ObjectiveSpec], None]) -> None:
    # the three that `mmenc pretrain` trains are Objective classes (mmenc.objectives.protocol)
    for name, target, description in (
        ("contrastive", "pretraining:ContrastiveObjective",
         "symmetric InfoNCE: learnable temperature, all-gather, momentum queue, Matryoshka"),
        ("masked-modeling", "pretraining:MaskedModelingObjective",
         "masked token prediction, plain or compound (several fields per position)"),
        ("matching", "pretraining:MatchingObjective",
         "binary matching with hard negatives from similarities"),
    ):
        register(ObjectiveSpec(name, f"mmenc.objectives.{target}", description))
    register(ObjectiveSpec("distillation", "mmenc.objectives:distillation_loss",
                           "soft targets from a momentum model"))


@hookimpl
def mmenc_register_models(register: Callable[[Any], None]) -> None:
    for name, modalities, config, fusion, tiny, description in (
        ("text-tiny", ("text",), "TEXT_TINY", "dual", True, "tiny byte-level text encoder"),
        ("vit-tiny", ("image",), "VIT_TINY", "dual", True, "tiny ViT image encoder"),
        ("clip-tiny", ("text", "image"), "CLIP_TINY", "dual", True,
         "tiny image-text dual encoder"),
        ("timm-clip-tiny", ("text", "image"), "CLIP_TIMM_TINY", "dual", True,
         "tiny image-text dual encoder with a timm ViT image tower"),
        ("merged-tiny", ("text", "image"), "MERGED_TINY", "merged", True,
         "tiny single-stream image-text encoder"),
        ("bert", ("text",), "BERT", "dual", False,
         "BERT text encoder (base size; converted checkpoints keep their sizes)"),
        ("roberta", ("text",), "ROBERTA", "dual", False,
         "RoBERTa text encoder (base size; converted checkpoints keep their sizes)"),
    ):
        register(ModelSpec(name, modalities, _TOWERS, f"{_B}.recipes:{config}", fusion,
                           description, tiny))
    register(ModelSpec("bound", ("text",), "mmenc.bind.model:build_bound",
                       {"hub": "minilm", "dims": [32, 64, 128], "tower_specs": {}}, "dual",
                       "a frozen hub and one tower per modality in one space (mmenc bind)"))
    register(ModelSpec("open-clip", ("image", "text"), "mmenc.bind.hubs:build_open_clip",
                       {"arch": "ViT-B-32"}, "dual",
                       "an open_clip CLIP model (a binding hub; weights via mmenc bind)"))
    for fmt, what in (("hf-bert", "BertModel"), ("hf-roberta", "RobertaModel")):
        register(ConverterSpec(fmt, f"{_B}.hf:convert_hf_text_folder",
                               f"HF {what} folder (config.json + weights + tokenizer); "
                               "sentence-transformers pooling kept"))
    register(ParitySpec("bert", "hf-bert", f"{_B}.hf:run_hf_text"))
    register(ParitySpec("roberta", "hf-roberta", f"{_B}.hf:run_hf_text"))


@hookimpl
def mmenc_register_commands(register: Callable[[CommandSpec], None]) -> None:
    register(CommandSpec("pretrain", "mmenc.train.cli:pretrain",
                         "pretrain a model from a YAML config (resumable; DDP under torchrun)"))
    register(CommandSpec("embed", "mmenc.retrieval.cli:embed",
                         "embed items into a SQLite store (unchanged items are skipped)"))
    register(CommandSpec("search", "mmenc.retrieval.cli:search",
                         "search a store with a query of any modality"))
    register(CommandSpec("bind", "mmenc.bind.cli:bind",
                         "bind modalities into one space: train, add a modality"))
    register(CommandSpec("eval", "mmenc.retrieval.cli:eval_group",
                         "evaluate a model (retrieval metrics, reports and plots)"))
    register(CommandSpec("export", "mmenc.export.cli:export",
                         "export a model's towers to ONNX (fp32, int8) for serving"))
