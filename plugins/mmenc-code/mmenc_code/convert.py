"""The official UniXcoder checkpoint (an HF ``RobertaModel`` folder) -> :class:`UniXcoder`.

The folder holds ``config.json`` and ``pytorch_model.bin`` or ``model.safetensors`` (a flat
``RobertaModel`` state dict without prefix), usually with ``vocab.json`` + ``merges.txt``. Every
size is read from the weights themselves; ``config.json`` supplies what weights cannot say (heads,
activation, epsilon) and must agree with them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from mmenc.batch import TokenBatch
from mmenc.checkpoint import find_weights, fit_state_dict, read_foreign, read_json
from mmenc.errors import CheckpointError
from mmenc_code.model import UniXcoder, build_unixcoder
from mmenc_code.tokenizer import FILE, roberta_tokenizer

VIEW_NAMES = {"code": "unixcoder", "text": "unixcoder-text", "ast": "unixcoder-ast"}


def sizes_from_weights(state: dict[str, Tensor]) -> dict[str, int]:
    """The shapes a RoBERTa state dict fixes (``roberta.`` prefix or none)."""
    def get(key: str) -> Tensor:
        for k in (key, f"roberta.{key}"):
            if k in state:
                return state[k]
        raise KeyError(f"the weights have no {key}")

    layers = {int(k.split(".")[2 if k.startswith("encoder.") else 3])
              for k in state if ".layer." in k and k.split(".")[0] in ("encoder", "roberta")}
    return {
        "vocab_size": get("embeddings.word_embeddings.weight").shape[0],
        "hidden_size": get("embeddings.word_embeddings.weight").shape[1],
        "max_position_embeddings": get("embeddings.position_embeddings.weight").shape[0],
        "type_vocab_size": get("embeddings.token_type_embeddings.weight").shape[0],
        "intermediate_size": get("encoder.layer.0.intermediate.dense.weight").shape[0],
        "num_hidden_layers": len(layers),
    }


def convert_unixcoder(src: Path, max_length: int | None = None, mode: str = "<encoder-only>",
                      tokenizer: str | Path | None = None) -> UniXcoder:
    """Read an official UniXcoder folder.

    Args:
        src: the folder.
        max_length: tokenizer length (default 512; at most the position table minus 2).
        mode: the tokenizers' mode (``<encoder-only>`` for search).
        tokenizer: a folder with ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``) when
            ``src`` has none; without one the model runs on token ids only.
    """
    from mmenc.keymaps.hf_text import convert_hf_text_state_dict, text_config_from_hf

    src = Path(src)
    if not src.is_dir():
        raise CheckpointError(f"{src}: expected the UniXcoder folder (config.json + weights)")
    hf_config = read_json(src / "config.json")
    if hf_config.get("model_type") != "roberta":
        raise CheckpointError(f"{src / 'config.json'}: model_type "
                              f"{hf_config.get('model_type')!r} is not roberta")
    from mmenc.trust import check_sizes

    check_sizes(hf_config, str(src / "config.json"), root="")
    state = read_foreign(find_weights(src))
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{src}: the weights file is not a flat state dict of tensors")
    try:
        sizes = sizes_from_weights(state)
    except KeyError as exc:
        raise CheckpointError(f"{src}: {exc.args[0]}") from None
    clash = {k: (hf_config[k], v) for k, v in sizes.items() if k in hf_config and hf_config[k] != v}
    if clash:
        raise CheckpointError(f"{src}: config.json disagrees with the weights: " + ", ".join(
            f"{k} {a} vs {b}" for k, (a, b) in clash.items()))
    hf_config = {**hf_config, **sizes}
    try:
        converted = convert_hf_text_state_dict(state, hf_config)
        encoder = text_config_from_hf(hf_config, pooler="pooler.dense.weight" in converted)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{src}: {exc}") from None
    positions = int(hf_config["max_position_embeddings"]) - int(encoder["pad_id"]) - 1
    length = int(max_length or min(512, positions))
    if not 5 < length <= positions:
        raise CheckpointError(f"max_length {length}: must be in 6..{positions}")
    tok_dir = Path(tokenizer) if tokenizer else src
    has_vocab = any((tok_dir / f).is_file() for f in ("tokenizer.json", "vocab.json"))
    if has_vocab:
        tok = roberta_tokenizer(tok_dir)
        tokenizers = {v: {"tokenizer": n, "kind": "bpe", "file": FILE, "mode": mode,
                          "max_length": length} for v, n in VIEW_NAMES.items()}  # one vocabulary
        with tempfile.TemporaryDirectory() as tmp:
            tok.save(str(Path(tmp) / FILE))
            model = build_unixcoder(_config(encoder, tokenizers, src), directory=Path(tmp))
    else:
        tokenizers = {v: {"tokenizer": n, "kind": "none", "pad_id": int(encoder["pad_id"])}
                      for v, n in VIEW_NAMES.items()}
        model = build_unixcoder(_config(encoder, tokenizers, src), directory=src)
    fit_state_dict(model.encoder, converted, source=str(src))
    model.recipe = "unixcoder-base"  # the recipe of the architecture; sizes are in the config
    return model.eval()


def _config(encoder: dict[str, Any], tokenizers: dict[str, Any], src: Path) -> dict[str, Any]:
    return {"encoder": encoder, "tokenizers": tokenizers, "embed_dim": None,
            "source": {"format": "unixcoder", "path": str(src)}}


def run_unixcoder(model: UniXcoder, inputs: dict[str, Tensor],
                  fixture: dict[str, Any]) -> dict[str, Tensor | tuple[Tensor, Tensor]]:
    """The official outputs: ``RobertaModel`` states and pooler, the code-search embedding,
    ``UniXcoder.forward`` (token states on real rows, sentence embeddings) and the decoder-only
    (causal) states."""
    pad = model.pad_id
    ids = inputs["input_ids"]
    mask = inputs["attention_mask"].bool() if "attention_mask" in inputs else ids.ne(pad)
    out: dict[str, Tensor | tuple[Tensor, Tensor]] = {}
    features = model.forward_features(TokenBatch(ids=ids, mask=mask, pad_id=pad), "code")
    out["roberta_last_hidden_state"] = features.hidden
    if features.pooled is not None:
        out["roberta_pooler_output"] = features.pooled
    out["code_search_embedding"] = F.normalize(
        model.embed(TokenBatch(ids=ids, mask=mask, pad_id=pad), "code"), dim=-1)
    real = ids.ne(pad)
    batch = TokenBatch(ids=ids, mask=real, pad_id=pad)
    out["unixcoder_token_embeddings"] = (model.forward_features(batch, "code").hidden,
                                         real[..., None])
    out["unixcoder_sentence_embeddings"] = model.embed(batch, "code")
    if "decoder_only_ids" in inputs:
        dec = inputs["decoder_only_ids"]
        causal = TokenBatch(ids=dec, mask=dec.ne(pad), pad_id=pad,
                            extras={"prefix_len": dec.new_zeros(dec.shape[0])})
        out["decoder_only_last_hidden_state"] = model.forward_features(causal, "code").hidden
    return out
