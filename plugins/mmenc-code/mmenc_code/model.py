"""UniXcoder on the shared trunk: one RoBERTa encoder for every view, three attention modes.

Configuration (stored in ``config.json``)::

    {"encoder": {...text transformer config: trunk, vocab_size, max_positions, pad_id, ...},
     "tokenizers": {"code": {...}, "text": {...}, "ast": {...}},   # any subset of the views
     "embed_dim": null}                                             # or a projection width

The attention mode of a batch comes from ``extras["prefix_len"]`` ([b] int): absent, attention is
bidirectional over the real tokens; present, item ``i`` attends bidirectionally over its first
``prefix_len[i]`` tokens and causally after them (``0``: fully causal, the decoder-only mode).
The sentence embedding is the mean over real tokens, as the official ``UniXcoder.forward``; the
language-model head is the word-embedding matrix (tied, no bias).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mmenc.batch import Features, TokenBatch, Tokenizer
from mmenc.errors import ConfigError
from mmenc.model import Encoder
from mmenc.nn import init_weights, masked_mean
from mmenc.recipe_config import RecipeConfig


@dataclass(frozen=True, kw_only=True)
class UniXcoderConfig(RecipeConfig):
    """The typed configuration of UniXcoder (see the module docstring). ``encoder`` is read by
    the text transformer (:func:`mmenc.keymaps.hf_text.build_text_transformer`), each view's
    tokenizer section by its tokenizer.

    Fields whose default is not obvious:
        embed_dim: the width of a projection of the mean-pooled states; None: none.
        source: where a converted model came from (``{"format", "path"}``), for the record.
    """

    encoder: dict[str, Any]
    tokenizers: dict[str, dict[str, Any]]
    embed_dim: int | None = None
    source: dict[str, Any] | None = None


class UniXcoder(Encoder):
    """One text transformer shared by the ``code``, ``text`` and ``ast`` views.

    Args:
        config: see the module docstring.
        encoder: the RoBERTa-style text transformer.
        tokenizers: view -> :class:`~mmenc_code.tokenizer.UniXcoderTokenizer`.
    """

    def __init__(self, config: dict[str, Any], encoder: nn.Module,
                 tokenizers: dict[str, Tokenizer]) -> None:
        super().__init__(config, tokenizers)
        settings = self.settings
        self.encoder = encoder
        embed_dim = settings.embed_dim
        width = int(settings.encoder["trunk"]["dim"])
        self.proj = nn.Linear(width, embed_dim, bias=False) if embed_dim else nn.Identity()

    @property
    def settings(self) -> UniXcoderConfig:
        """The typed view of ``config`` (read again on each use: a warm start changes it)."""
        return UniXcoderConfig.read(self.config)

    @property
    def pad_id(self) -> int:
        return int(self.config["encoder"]["pad_id"])

    def forward_features(self, batch: TokenBatch, modality: str,
                         output_hidden_states: bool = False) -> Features:
        """Token states of a batch of any view.

        Inputs:
            batch: ``ids`` [b n], ``mask`` [b n] (True = real; default: ``ids != pad``),
                optional ``extras["prefix_len"]`` [b] (see the module docstring).
        Returns:
            ``Features(hidden [b n d], mask [b n], pooled [b d] | None, hidden_states)``.
        """
        self.check_modality(modality)
        ids = batch.ids
        if ids is None:
            raise ValueError("UniXcoder reads token ids; the batch has none")
        mask = batch.mask if batch.mask is not None else ids.ne(self.pad_id)
        prefix_len = batch.extras.get("prefix_len")
        out = self.encoder(ids, mask=mask, attn_mode="bidirectional" if prefix_len is None
                           else "prefix", prefix_len=prefix_len,
                           output_hidden_states=output_hidden_states)
        return Features(out.last_hidden_state, mask, getattr(out, "pooled", None),
                        out.hidden_states)

    def embed(self, batch: TokenBatch, modality: str) -> Tensor:
        """The mean of the real tokens' states (projected when ``embed_dim`` is set)."""
        features = self.forward_features(batch, modality)
        return self.proj(masked_mean(features.hidden, features.mask))

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """``[... d] -> [... vocab]`` through the tied word embeddings (UniXcoder's ``lm_head``)."""
        return hidden @ self.encoder.embeddings.word.weight.T

    def warm_start(self, modality: str, source: Encoder) -> None:
        """Start the encoder and the tokenizers from a saved model's BERT-style text tower
        (``model.warm_start: {text: PATH}``; :mod:`mmenc_code.warm_start`)."""
        from mmenc_code.warm_start import warm_start

        warm_start(self, modality, source)


def build_unixcoder(config: dict[str, Any], directory: Path | None = None) -> UniXcoder:
    """Build a :class:`UniXcoder` (tokenizer files are read from ``directory``); a model built
    without a directory is freshly initialised (BERT's scheme)."""
    from mmenc.keymaps.hf_text import build_text_transformer
    from mmenc.registry import catalogue
    from mmenc.specs import resolve

    settings = UniXcoderConfig.read(config)
    encoder = build_text_transformer(settings.encoder)
    tokenizers = {}
    vocab = int(settings.encoder["vocab_size"])
    for view, tok_cfg in settings.tokenizers.items():
        name = tok_cfg.get("tokenizer", "unixcoder")
        tok = resolve(catalogue().get("tokenizer", name).factory)(tok_cfg, directory)
        if tok.modality != view:
            raise ConfigError(f"unixcoder: tokenizer {name!r} reads {tok.modality!r}, "
                              f"configured for {view!r}")
        size = getattr(tok, "vocab_size", 0)
        if size > vocab:
            raise ConfigError(f"unixcoder: the {view} tokenizer has {size} tokens, the "
                              f"embedding table {vocab}")
        tokenizers[view] = tok
    model = UniXcoder(config, encoder, tokenizers)
    if directory is None:
        init_weights(model)
    return model
