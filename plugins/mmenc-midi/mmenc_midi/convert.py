"""Importing official MIDI-BERT and Adversarial-MidiBERT checkpoints, and their parity mappings.

Containers (read with ``torch.load(weights_only=True)`` only):

- ``midibert``: ``model_best.ckpt`` = ``{"epoch", "state_dict", "best_acc", ..., "optimizer"}``
  of ``MidiBert`` (keys ``bert.*``, ``word_emb.{i}.lut.weight``, ``in_linear.*``); a fine-tuned
  checkpoint holds ``midibert.``-prefixed keys plus its head (``classifier.*`` /
  ``attention.*``), which are left out.
- ``adv-midibert``: ``midibert_pretrain.pth`` = the bare ``MidiBert`` state dict; the unused
  ``attention_linear.*`` is left out.

Neither holds a configuration: every size comes from the tensors (width from ``in_linear``,
depth from the layer keys, head width and ``max_position_embeddings`` from
``distance_embedding`` [2*max_pos-1, head_dim], FFN width from ``intermediate.dense``, field
vocabularies and embedding width from ``word_emb``); the activation and LayerNorm epsilon are
BertConfig's defaults (``gelu``, 1e-12) unless given. Options: ``heads``, ``max_positions``
(checked against the tensors), ``hidden_act``, ``layer_norm_eps``, ``pooling``, ``max_len``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmenc.batch import TokenBatch
from mmenc.checkpoint import fit_state_dict, read_foreign
from mmenc.errors import CheckpointError
from torch import Tensor, nn

from mmenc_midi.model import MidiBertEncoder, build_midibert
from mmenc_midi.recipes import midibert
from mmenc_midi.vocab import load_vocab

log = logging.getLogger(__name__)

# (official module, mmenc module, how) for the parts outside BERT's encoder
STEM_KEY_MAP: list[tuple[str, str, str]] = [
    ("in_linear", "fields.in_linear", "copy"),
    ("bert.embeddings.LayerNorm", "embed_norm", "copy"),
    ("bert.pooler.dense", "pooler.dense", "copy"),
]
# keys the official model carries but never uses in its forward pass
UNUSED = re.compile(r"^(bert\.embeddings\.(position_ids|word_embeddings\.weight|"
                    r"position_embeddings\.weight)|attention_linear\..*)$")
HEAD_PREFIXES = ("classifier.", "attention.", "mask_lm.", "linear.")


def _layer_rows() -> list[tuple[str, str, str]]:
    from mmenc.keymaps.hf_text import HF_TEXT_KEY_MAP

    return [(f"bert.{src}", dst, how) for src, dst, how in HF_TEXT_KEY_MAP
            if src.startswith("encoder.")]


def unwrap(obj: Any, source: str) -> dict[str, Tensor]:
    """The ``MidiBert`` state dict inside a container (``state_dict`` wrapper, ``midibert.``
    prefix of fine-tuned checkpoints, DataParallel ``module.``)."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: not a MidiBert state dict (expected tensors, or "
                              "{'epoch', 'state_dict', ...})")
    sd = dict(obj)
    for prefix in ("module.", "midibert."):
        if any(k.startswith(prefix + "bert.") for k in sd):
            sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
    return sd


def sizes_from_state_dict(sd: Mapping[str, Tensor], source: str) -> dict[str, Any]:
    """Every size of the model, read from the tensors."""
    try:
        dim, concat = sd["in_linear.weight"].shape
        fields = sorted(int(m.group(1)) for k in sd
                        if (m := re.fullmatch(r"word_emb\.(\d+)\.lut\.weight", k)))
        depth = 1 + max(int(m.group(1)) for k in sd
                        if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k)))
        distance = sd["bert.encoder.layer.0.attention.self.distance_embedding.weight"]
        ffn = sd["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{source}: not a MIDI-BERT checkpoint with relative_key_query "
                              f"attention (missing {exc})") from None
    if fields != list(range(len(fields))) or not fields:
        raise CheckpointError(f"{source}: word_emb tables {fields} are not 0..n-1")
    tables = [sd[f"word_emb.{i}.lut.weight"] for i in fields]
    emb_dim = int(tables[0].shape[1])
    if any(int(t.shape[1]) != emb_dim for t in tables) or emb_dim * len(tables) != concat:
        raise CheckpointError(f"{source}: word_emb widths {[tuple(t.shape) for t in tables]} do "
                              f"not add up to in_linear's input {concat}")
    rows, head_dim = distance.shape
    if dim % head_dim or rows % 2 == 0:
        raise CheckpointError(f"{source}: distance_embedding {tuple(distance.shape)} does not fit "
                              f"width {dim}")
    return {"dim": int(dim), "depth": int(depth), "heads": int(dim // head_dim),
            "ffn_dim": int(ffn), "max_positions": int((rows + 1) // 2), "emb_dim": emb_dim,
            "vocab_sizes": [int(t.shape[0]) for t in tables]}


def convert_state_dict(sd: Mapping[str, Tensor], depth: int,
                       pooler: bool) -> tuple[dict[str, Tensor], list[str]]:
    """Official keys -> :class:`MidiBertEncoder` keys; returns (converted, ignored keys)."""
    from mmenc.keymaps.hf_text import apply_key_map, expand_rows

    rows = STEM_KEY_MAP if pooler else STEM_KEY_MAP[:-1]
    converted, used = apply_key_map(sd, expand_rows(rows + _layer_rows(), depth))
    i = 0
    while f"word_emb.{i}.lut.weight" in sd:
        converted[f"fields.tables.{i}.weight"] = sd[f"word_emb.{i}.lut.weight"]
        used.add(f"word_emb.{i}.lut.weight")
        i += 1
    token_type = sd.get("bert.embeddings.token_type_embeddings.weight")
    if token_type is None:
        raise CheckpointError("no bert.embeddings.token_type_embeddings.weight")
    converted["type_bias"] = token_type[0].clone()  # BertModel adds row 0 (token type 0)
    used.add("bert.embeddings.token_type_embeddings.weight")
    ignored = sorted(k for k in sd if k not in used and
                     (UNUSED.match(k) or k.startswith(HEAD_PREFIXES)))
    unmapped = sorted(set(sd) - used - set(ignored))
    if unmapped:
        raise CheckpointError(f"no mapping for checkpoint keys: {unmapped[:8]}"
                              + (f" ... ({len(unmapped)} in all)" if len(unmapped) > 8 else ""))
    return converted, ignored


def _read_checkpoint(src: Path) -> tuple[Path, dict[str, Tensor]]:
    src = Path(src)
    if src.is_dir():
        found = sorted(src.glob("*.ckpt")) + sorted(src.glob("*.pth")) + sorted(src.glob("*.pt"))
        if len(found) != 1:
            raise CheckpointError(f"{src}: expected one .ckpt / .pth file in the folder, found "
                                  f"{[p.name for p in found]}")
        src = found[0]
    return src, unwrap(read_foreign(src), str(src))


def build_from_state_dict(sd: Mapping[str, Tensor], source: str, scheme: str, recipe: str,
                          heads: int | None = None, max_positions: int | None = None,
                          hidden_act: str = "gelu", layer_norm_eps: float = 1e-12,
                          pooling: str = "mean", max_len: int | None = None) -> MidiBertEncoder:
    """A :class:`MidiBertEncoder` sized and loaded from an official ``MidiBert`` state dict."""
    from mmenc.keymaps.hf_text import HF_ACTIVATIONS

    sizes = sizes_from_state_dict(sd, source)
    if heads is not None and int(heads) != sizes["heads"]:
        raise CheckpointError(f"{source}: heads={heads} but distance_embedding says "
                              f"{sizes['heads']} heads of width {sizes['dim'] // sizes['heads']}")
    if max_positions is not None and int(max_positions) != sizes["max_positions"]:
        raise CheckpointError(f"{source}: max_positions={max_positions} but distance_embedding "
                              f"has rows for {sizes['max_positions']}")
    if hidden_act not in HF_ACTIVATIONS:
        raise CheckpointError(f"unsupported hidden_act {hidden_act!r}")
    vocab = load_vocab(scheme)
    if list(vocab.sizes) != sizes["vocab_sizes"]:
        raise CheckpointError(f"{source}: field vocabularies {sizes['vocab_sizes']} do not match "
                              f"the {scheme} dictionary {list(vocab.sizes)} "
                              f"({', '.join(vocab.fields)})")
    pooler = "bert.pooler.dense.weight" in sd
    config = midibert(scheme, sizes["dim"], sizes["depth"], sizes["heads"], sizes["ffn_dim"],
                      max_len=int(max_len or sizes["max_positions"]), emb_dim=sizes["emb_dim"],
                      pooler=pooler, pooling=pooling, eps=float(layer_norm_eps),
                      activation=HF_ACTIVATIONS[hidden_act])
    config["trunk"]["max_positions"] = sizes["max_positions"]
    config["source"] = {"format": recipe, "path": source}
    try:
        converted, ignored = convert_state_dict(sd, sizes["depth"], pooler)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    if ignored:
        log.info("%s: left out %d unused keys: %s", source, len(ignored), ", ".join(ignored))
    model = build_midibert(config)
    model.recipe = recipe
    fit_state_dict(model, converted, source=source)
    return model.eval()


def convert_midibert_checkpoint(src: Path, scheme: str, recipe: str,
                                **options: Any) -> MidiBertEncoder:
    """Read an official checkpoint file (or a folder holding one) and build the encoder;
    ``options`` as :func:`build_from_state_dict`."""
    src, sd = _read_checkpoint(src)
    return build_from_state_dict(sd, str(src), scheme, recipe, **options)


def convert_finetuned(src: Path, scheme: str = "cp",
                      **options: Any) -> tuple[MidiBertEncoder, nn.Module]:
    """A fine-tuned checkpoint (``TokenClassification`` / ``SequenceClassification`` of either
    repository): the encoder and its head, as :class:`~mmenc_midi.objectives.TokenClassifier`
    (``classifier.{1,3}``) or :class:`~mmenc_midi.objectives.SequenceClassifier`
    (``attention.ws1``, ``attention.ws2``, ``classifier.{0,2}``). The official heads read the
    last hidden states; the sequence head's attention also covers pads (pass no mask to
    reproduce it)."""
    from mmenc_midi.objectives import SequenceClassifier, TokenClassifier

    src, sd = _read_checkpoint(src)
    head_sd = {k: v for k, v in sd.items() if k.startswith(("classifier.", "attention."))}
    recipe = "midibert-cp-base" if scheme == "cp" else "adv-midibert-octuple-base"
    model = build_from_state_dict(sd, str(src), scheme, recipe, **options)
    dim = model.width
    head: nn.Module
    if "attention.ws1.weight" in head_sd:
        ws1, ws2 = head_sd["attention.ws1.weight"], head_sd["attention.ws2.weight"]
        first, last = head_sd["classifier.0.weight"], head_sd["classifier.2.weight"]
        head = SequenceClassifier(dim, last.shape[0], da=ws1.shape[0], r=ws2.shape[0],
                                  hidden=first.shape[0])
        mapping = {"attention.ws1.weight": "ws1.weight", "attention.ws2.weight": "ws2.weight"}
        mapping.update({f"classifier.{i}.{p}": f"classifier.{i}.{p}"
                        for i in (0, 2) for p in ("weight", "bias")})
    elif "classifier.3.weight" in head_sd:
        first, last = head_sd["classifier.1.weight"], head_sd["classifier.3.weight"]
        head = TokenClassifier(dim, last.shape[0], hidden=first.shape[0])
        mapping = {f"classifier.{i}.{p}": f"net.{i}.{p}" for i in (1, 3)
                   for p in ("weight", "bias")}
    else:
        raise CheckpointError(f"{src}: no TokenClassification or SequenceClassification head "
                              f"(head keys: {sorted(head_sd)[:8]})")
    unknown = sorted(set(head_sd) - set(mapping))
    if unknown:
        raise CheckpointError(f"{src}: no mapping for head keys {unknown[:8]}")
    fit_state_dict(head, {mapping[k]: v for k, v in head_sd.items()}, source=str(src))
    return model, head.eval()


def convert_midibert(src: Path, **options: Any) -> MidiBertEncoder:
    """``mmenc convert --from midibert CKPT OUT``: MIDI-BERT (CP) ``{epoch, state_dict, ...}``."""
    return convert_midibert_checkpoint(src, "cp", "midibert-cp-base", **options)


def convert_adv_midibert(src: Path, **options: Any) -> MidiBertEncoder:
    """``mmenc convert --from adv-midibert PTH OUT``: Adversarial-MidiBERT (Octuple), bare
    state dict."""
    return convert_midibert_checkpoint(src, "octuple", "adv-midibert-octuple-base", **options)


def parity_options(fixture: dict[str, Any]) -> dict[str, Any]:
    """Converter options from a fixture's recorded BertConfig (cross-checked with the tensors)."""
    cfg = fixture.get("bert_config_full") or fixture.get("bert_config_args") or {}
    options: dict[str, Any] = {}
    if "num_attention_heads" in cfg:
        options["heads"] = int(cfg["num_attention_heads"])
    if "max_position_embeddings" in cfg:
        options["max_positions"] = int(cfg["max_position_embeddings"])
    if "hidden_act" in cfg:
        options["hidden_act"] = str(cfg["hidden_act"])
    if "layer_norm_eps" in cfg:
        options["layer_norm_eps"] = float(cfg["layer_norm_eps"])
    return options


def run_midibert(model: MidiBertEncoder, inputs: dict[str, Tensor],
                 fixture: dict[str, Any]) -> dict[str, Tensor]:
    """Fixture outputs of ``MidiBert.forward(input_ids, attn_mask, output_hidden_states=True)``:
    ``last_hidden_state``, ``pooler_output``, ``hidden_states_XX`` (00 = embeddings) and
    ``in_linear_output``."""
    ids = inputs["input_ids"].long()
    mask = inputs.get("attn_mask")
    batch = TokenBatch(ids=ids, mask=None if mask is None else mask.bool(),
                       pad_id=tuple(model.pad_ids))
    features = model.forward_features(batch, "midi", output_hidden_states=True)
    out = {"last_hidden_state": features.hidden, "in_linear_output": model.input_embeddings(ids)}
    if features.pooled is not None:
        out["pooler_output"] = features.pooled
    for i, h in enumerate(features.hidden_states or ()):
        out[f"hidden_states_{i:02d}"] = h
    return out
