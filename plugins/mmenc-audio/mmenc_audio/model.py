"""BEATs on mmenc's shared trunk, optionally with a classifier head or an acoustic quantiser.

    fbank patches [b n p*p] -> patch embedding (no bias) -> LayerNorm -> Linear -> trunk
    (DeepNorm post-LN blocks, gated relative position bias, weight-normalised grouped
    convolutional positions, LayerNorm before layer 0) -> [b n d]

- ``head`` (fine-tuned models): per-token logits averaged over real tokens, then a sigmoid.
- ``quantize_layer`` + ``codebook`` (acoustic tokenizers): Linear-Tanh-Linear to the code width,
  L2 normalisation, nearest code.

Configuration (stored in ``config.json``)::

    {"patch_size": 16, "num_mel_bins": 128, "patch_dim": 512,
     "trunk": {...keyword arguments of mmenc.nn.TrunkConfig...},
     "num_classes": null, "label_dict": null,          # fine-tuned head
     "quantizer": null,                                 # {"num_codes": K, "code_dim": c}
     "embed_dim": null,                                 # projection of the pooled state
     "tokenizers": {"audio": {...FbankPatchTokenizer.config()...}}}

Axis legend: ``b`` batch, ``t`` samples, ``T`` frames, ``n`` patches, ``d`` trunk width,
``e`` patch-embedding width, ``c`` code width, ``K`` codes, ``C`` classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmenc.batch import Features, TokenBatch
from mmenc.model import Encoder
from mmenc.nn import TrunkConfig, build_trunk, masked_mean
from mmenc.recipe_config import RecipeConfig
from mmenc_audio.codebook import NormEMACodebook, l2norm
from mmenc_audio.frontend import NAME as TOKENIZER
from mmenc_audio.frontend import build_tokenizer, official_padding_mask, preprocess, to_patches

MODALITY = "audio"


def beats_config(dim: int = 768, depth: int = 12, heads: int = 12, ffn_dim: int = 3072,
                 patch_dim: int = 512, conv_pos: int = 128, conv_pos_groups: int = 16,
                 num_buckets: int = 320, max_distance: int = 800, patch_size: int = 16,
                 num_mel_bins: int = 128, num_classes: int | None = None,
                 quantizer: dict[str, int] | None = None, embed_dim: int | None = None,
                 dropout: float = 0.0, attn_dropout: float = 0.0) -> dict[str, Any]:
    """A BEATs configuration; the defaults are the published base size."""
    trunk = TrunkConfig(dim=dim, depth=depth, heads=heads, ffn_dim=ffn_dim, norm="deepnorm",
                        activation="gelu", eps=1e-5, dropout=dropout, attn_dropout=attn_dropout,
                        relative="gated", num_buckets=num_buckets, max_distance=max_distance,
                        conv_pos=conv_pos, conv_pos_groups=conv_pos_groups, input_norm=True,
                        final_norm=False)
    return {
        "patch_size": patch_size,
        "num_mel_bins": num_mel_bins,
        "patch_dim": patch_dim,
        "trunk": asdict(trunk),
        "num_classes": num_classes,
        "label_dict": None,
        "quantizer": quantizer,
        "embed_dim": embed_dim,
        "tokenizers": {MODALITY: {"tokenizer": TOKENIZER, "num_mel_bins": num_mel_bins,
                                  "patch_size": patch_size, "max_seconds": None}},
    }


@dataclass(frozen=True)
class QuantizerConfig:
    """The acoustic tokenizer's quantiser: ``num_codes`` codes of width ``code_dim``."""

    num_codes: int
    code_dim: int


@dataclass(frozen=True, kw_only=True)
class BEATsConfig(RecipeConfig):
    """The typed configuration of the BEATs recipes (the dict :func:`beats_config` writes).

    Fields whose default is not obvious:
        patch_dim: width of the patch embedding before its projection to the trunk width.
        num_classes, label_dict: a fine-tuned model's classifier head and class names.
        quantizer: an acoustic tokenizer's quantiser (None: a BEATs model).
        embed_dim: a projection of the pooled state to a shared space (None: none).
        source: where a converted model came from (``{"format", "path"}``), for the record.
    """

    patch_size: int
    num_mel_bins: int
    patch_dim: int
    trunk: TrunkConfig
    tokenizers: dict[str, dict[str, Any]]
    num_classes: int | None = None
    label_dict: dict[str, str] | None = None
    quantizer: QuantizerConfig | None = None
    embed_dim: int | None = None
    source: dict[str, Any] | None = None


@dataclass
class BEATsOutput:
    """What :meth:`BEATsEncoder.extract_features` returns.

    Attributes:
        fbank: [b T F] normalised fbank.
        patch_embed_ln: [b n e] patch embeddings after their LayerNorm.
        hidden: [b n d] last hidden state.
        padding_mask: [b n] bool, True = padding (official convention), or None.
        hidden_states: with ``output_hidden_states``: depth+1 tensors [b n d] (0 = after the
            convolutional positions and the input LayerNorm).
        lprobs: [b C] sigmoid class probabilities (models with a head), else None.
    """

    fbank: Tensor
    patch_embed_ln: Tensor
    hidden: Tensor
    padding_mask: Tensor | None
    hidden_states: tuple[Tensor, ...] | None = None
    lprobs: Tensor | None = None


class PatchEmbedding(nn.Module):
    """BEATs' ``Conv2d(1, e, p, stride=p, bias=False)`` applied to patch vectors [b n p*p]."""

    def __init__(self, patch_dim: int, patch_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(patch_dim, 1, patch_size, patch_size))
        nn.init.xavier_normal_(self.weight)

    def forward(self, patches: Tensor) -> Tensor:
        return F.linear(patches, self.weight.flatten(1))


class BEATsEncoder(Encoder):
    """BEATs (and its acoustic tokenizer) as an :class:`mmenc.Encoder` of the ``audio`` modality.

    Args:
        config: see the module docstring.
        directory: unused (the tokenizer keeps no files).
    """

    def __init__(self, config: dict[str, Any], directory: Path | None = None) -> None:
        settings = BEATsConfig.read(config)
        if MODALITY not in settings.tokenizers:
            raise ValueError(f"tokenizers: BEATs needs an {MODALITY!r} tokenizer")
        tokenizer = build_tokenizer(settings.tokenizers[MODALITY], directory)
        super().__init__(config, {MODALITY: tokenizer})
        if (tokenizer.patch_size != settings.patch_size
                or tokenizer.num_mel_bins != settings.num_mel_bins):
            raise ValueError("the audio tokenizer's patch_size / num_mel_bins differ from the "
                             "model's")
        trunk_cfg = settings.trunk
        self.patch_size, self.num_mel_bins = settings.patch_size, settings.num_mel_bins
        self.patch_embedding = PatchEmbedding(settings.patch_dim, self.patch_size)
        self.patch_norm = nn.LayerNorm(settings.patch_dim)
        self.proj = nn.Linear(settings.patch_dim, trunk_cfg.dim)
        self.trunk = build_trunk(trunk_cfg)
        classes = settings.num_classes
        self.head = nn.Linear(trunk_cfg.dim, classes) if classes else None
        quant = settings.quantizer
        self.quantize_layer: nn.Module | None = None
        self.codebook: NormEMACodebook | None = None
        width = trunk_cfg.dim
        if quant:
            self.quantize_layer = nn.Sequential(nn.Linear(trunk_cfg.dim, trunk_cfg.dim), nn.Tanh(),
                                                nn.Linear(trunk_cfg.dim, quant.code_dim))
            self.codebook = NormEMACodebook(quant.num_codes, quant.code_dim)
            width = quant.code_dim
        embed_dim = settings.embed_dim
        self.embed_proj = nn.Linear(width, embed_dim, bias=False) if embed_dim \
            else nn.Identity()

    @property
    def settings(self) -> BEATsConfig:
        """The typed view of ``config``."""
        return BEATsConfig.read(self.config)

    # -- the mmenc contract ------------------------------------------------------------------
    @property
    def width(self) -> int:
        """The width of the token states (the ``beats`` tower kind's width)."""
        return int(self.config["trunk"]["dim"])

    def patch_tokens(self, patches: Tensor) -> Tensor:
        """[b n p*p] -> [b n e] patch embeddings after their LayerNorm."""
        return self.patch_norm(self.patch_embedding(patches))

    def forward_features(self, batch: TokenBatch, modality: str = MODALITY,
                         output_hidden_states: bool = False) -> Features:
        """Inputs:
            batch: ``values`` [b n p*p] and ``mask`` [b n] (True = real) from the tokenizer.
        Returns:
            ``Features`` with ``hidden`` [b n d], the mask, ``pooled`` [b d] (mean over real
            tokens) and, when asked, every layer's states.
        """
        self.check_modality(modality)
        if batch.values is None:
            raise ValueError("an audio batch carries fbank patches [b n p*p], not ids")
        x = self.proj(self.patch_tokens(batch.values))
        out = self.trunk(x, mask=batch.mask, output_hidden_states=output_hidden_states)
        pooled = masked_mean(out.last_hidden_state, batch.mask)
        return Features(out.last_hidden_state, batch.mask, pooled, out.hidden_states)

    def code_vectors(self, hidden: Tensor) -> Tensor:
        """[b n d] -> [b n c] quantiser inputs (before L2 normalisation)."""
        if self.quantize_layer is None:
            raise ValueError("this model has no acoustic quantiser")
        return self.quantize_layer(hidden)

    def embed(self, batch: TokenBatch, modality: str = MODALITY) -> Tensor:
        """Clips in the embedding space, ``[b e]``: the mean of the real tokens' states (for an
        acoustic tokenizer: of their L2-normalised code vectors), then ``embed_proj``."""
        f = self.forward_features(batch, modality)
        if self.quantize_layer is not None:
            pooled = masked_mean(l2norm(self.code_vectors(f.hidden)), f.mask)
        else:
            assert f.pooled is not None
            pooled = f.pooled
        return self.embed_proj(pooled)

    def classify(self, batch: TokenBatch) -> Tensor:
        """Fine-tuned models: ``[b C]`` probabilities, sigmoid of the mean real-token logits."""
        if self.head is None:
            raise ValueError("this model has no classifier head (num_classes is null)")
        f = self.forward_features(batch, MODALITY)
        return torch.sigmoid(masked_mean(self.head(f.hidden), f.mask))

    def labels(self, batch: TokenBatch) -> Tensor:
        """Acoustic tokenizers: ``[b n]`` int64 codebook labels (-1 at padding)."""
        if self.codebook is None:
            raise ValueError("this model has no acoustic quantiser")
        f = self.forward_features(batch, MODALITY)
        labels = self.codebook.labels(self.code_vectors(f.hidden))
        return labels if f.mask is None else labels.masked_fill(~f.mask, -1)

    # -- the official interface on padded waveform batches -----------------------------------
    def extract_features(self, source: Tensor, padding_mask: Tensor | None = None,
                         output_hidden_states: bool = False) -> BEATsOutput:
        """BEATs' ``extract_features`` on a batch of waveforms, padding semantics included.

        Inputs:
            source: [b t] float samples at 16 kHz (every row at least 400 samples).
            padding_mask: [b t] bool, True = padding sample (official convention), or None.
        Returns:
            :class:`BEATsOutput`; its ``padding_mask`` is the official patch mask, computed
            from the sample mask by :func:`mmenc_audio.frontend.official_padding_mask` twice.
        """
        feats = preprocess(source, self.num_mel_bins)  # [b T F]
        mask = None if padding_mask is None else official_padding_mask(padding_mask.bool(),
                                                                        feats.shape[1])
        patch_ln = self.patch_tokens(to_patches(feats, self.patch_size))  # [b n e]
        if mask is not None:
            mask = official_padding_mask(mask, patch_ln.shape[1])
        real = None if mask is None else ~mask
        out = self.trunk(self.proj(patch_ln), mask=real,
                         output_hidden_states=output_hidden_states)
        lprobs = None
        if self.head is not None:
            lprobs = torch.sigmoid(masked_mean(self.head(out.last_hidden_state), real))
        return BEATsOutput(feats, patch_ln, out.last_hidden_state, mask, out.hidden_states,
                           lprobs)

    def extract_labels(self, source: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """The official tokenizer's ``extract_labels``: int64 ``[b*n]`` flattened labels."""
        if self.codebook is None:
            raise ValueError("this model has no acoustic quantiser")
        hidden = self.extract_features(source, padding_mask).hidden
        return self.codebook.labels(self.code_vectors(hidden)).reshape(-1)


def build(config: dict[str, Any], directory: Path | None = None) -> BEATsEncoder:
    """The builder of the BEATs recipes."""
    return BEATsEncoder(config, directory)


TOWER_KIND = "beats"


def beats_tower(config: dict[str, Any], tokenizer: Any) -> BEATsEncoder:
    """Factory of the ``beats`` tower kind: a :class:`BEATsEncoder` on the modality's fbank
    tokenizer (``audio-text-tiny``'s audio tower). Configuration: a :func:`beats_config`
    without ``tokenizers``."""
    return BEATsEncoder({**config, "tokenizers": {MODALITY: tokenizer.config()}})
