"""Importing HF BERT / RoBERTa folders (and sentence-transformers folders) as text encoders.

A folder holds ``config.json``, ``model.safetensors`` or ``pytorch_model.bin`` and the tokenizer
(``tokenizer.json`` or ``vocab.txt``). A sentence-transformers folder also says how sentences
are pooled (``1_Pooling/config.json``); mmenc keeps that pooling, so the converted model's
``encode`` gives the same embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from mmenc.batch import TokenBatch
from mmenc.builtin.text import hf_tokenizer_config
from mmenc.builtin.towers import TowerEncoder, build_tower_encoder
from mmenc.checkpoint import find_weights, fit_state_dict, read_foreign, read_json
from mmenc.errors import CheckpointError


def sentence_pooling(folder: Path) -> str | None:
    """``mean`` / ``cls`` when the folder is a sentence-transformers model, else None."""
    pooling = folder / "1_Pooling" / "config.json"
    if not pooling.is_file():
        return None
    cfg = read_json(pooling)
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    raise CheckpointError(f"{pooling}: unsupported pooling mode {cfg}")


def convert_hf_text_folder(src: Path, max_length: int | None = None,
                           pooling: str | None = None,
                           tokenizer: str | Path | None = None) -> TowerEncoder:
    """An HF BERT or RoBERTa folder -> a text-only :class:`TowerEncoder` (recipe ``bert`` or
    ``roberta``), weights mapped by :mod:`mmenc.keymaps.hf_text`.

    Args:
        src: the folder.
        max_length: tokenizer truncation (default: the position table's length).
        pooling: ``cls`` / ``mean`` / ``pooler`` (default: the sentence-transformers pooling
            when the folder has one, else ``cls``).
        tokenizer: a folder with ``tokenizer.json`` or ``vocab.txt`` when ``src`` has none
            (without one the model encodes token ids only).
    """
    from mmenc.keymaps.hf_text import convert_hf_text_state_dict, text_config_from_hf

    src = Path(src)
    if not src.is_dir():
        raise CheckpointError(f"{src}: expected an HF model folder (config.json + weights)")
    hf_config = read_json(src / "config.json")
    model_type = hf_config.get("model_type")
    if model_type not in ("bert", "roberta"):
        raise CheckpointError(f"{src / 'config.json'}: model_type {model_type!r} is not bert or "
                              "roberta")
    from mmenc.trust import build_skeleton, check_shapes, check_sizes

    check_sizes(hf_config, str(src / "config.json"), root="")
    state = read_foreign(find_weights(src))
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{src}: the weights file is not a flat state dict of tensors")
    try:
        converted = convert_hf_text_state_dict(state, hf_config)
        tower = text_config_from_hf(hf_config, pooler="pooler.dense.weight" in converted)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{src}: {exc}") from None
    positions = int(hf_config["max_position_embeddings"])
    offset = int(hf_config.get("pad_token_id", 1)) + 1 if model_type == "roberta" else 0
    st_config = src / "sentence_bert_config.json"
    st_length = read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    length = int(max_length or st_length or positions - offset)
    pad_id = int(hf_config.get("pad_token_id", 1 if model_type == "roberta" else 0))
    tok_dir = Path(tokenizer) if tokenizer else src
    tok_config = hf_tokenizer_config(tok_dir, length, pad_id)
    pool = pooling or sentence_pooling(src) or "cls"
    config = {
        "towers": {"text": {"kind": "text", **tower}},
        "tokenizers": {"text": {"tokenizer": "text", **tok_config}},
        "pooling": {"text": pool},
        "embed_dim": None,
        "fusion": {"name": "dual"},
        "source": {"format": f"hf-{model_type}", "path": str(src)},
    }
    # the sizes come from config.json: built as shapes only and compared, before any allocation
    check_sizes(config, str(src / "config.json"))
    skeleton = build_skeleton(lambda: build_tower_encoder(config, directory=tok_dir))
    check_shapes(skeleton.towers["text"], {k: tuple(v.shape) for k, v in converted.items()},
                 find_weights(src), src / "config.json")
    model = build_tower_encoder(config, directory=tok_dir)
    model.recipe = model_type
    fit_state_dict(model.towers["text"], converted, source=str(src))
    return model.eval()


def run_hf_text(model: TowerEncoder, inputs: dict[str, Tensor],
                fixture: dict[str, Any]) -> dict[str, Tensor]:
    """Fixture outputs of an HF ``BertModel`` / ``RobertaModel``: ``last_hidden_state``,
    ``pooler_output`` and ``hidden_states_XX`` (00 = embeddings), from ``input_ids`` and
    ``attention_mask``."""
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    batch = TokenBatch(ids=ids, mask=None if mask is None else mask.bool(),
                       pad_id=int(fixture.get("config", {}).get("pad_token_id", 0)))
    if "token_type_ids" in inputs:
        batch.extras["token_type_ids"] = inputs["token_type_ids"]
    features = model.forward_features(batch, "text", output_hidden_states=True)
    out = {"last_hidden_state": features.hidden}
    if features.pooled is not None:
        out["pooler_output"] = features.pooled
    for i, h in enumerate(features.hidden_states or ()):
        out[f"hidden_states_{i:02d}"] = h
    return out
