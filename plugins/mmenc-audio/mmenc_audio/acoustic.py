"""The ``audio-acoustic-labels`` tokenizer: clips -> discrete acoustic labels per fbank patch.

Two kinds of labeller:

- ``"random-projection"`` (default): BEATs' iteration-1 tokenizer,
  :class:`mmenc_audio.codebook.RandomProjectionQuantizer` over the raw 16x16 fbank patches,
  rebuilt exactly from ``(num_codes, code_dim, seed)``;
- ``"model"``: a trained acoustic tokenizer saved by mmenc (a ``beats-tokenizer`` model, e.g.
  the output of ``mmenc convert --from beats-tokenizer``), given by its folder in ``model``.

Output: ``TokenBatch(ids=[b n] labels, values=[b n 256] patches, mask=[b n], pad_id=-100)``;
padding positions hold ``-100``, which ``torch.nn.functional.cross_entropy`` ignores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmenc.batch import TokenBatch
from mmenc_audio.codebook import RandomProjectionQuantizer
from mmenc_audio.frontend import FbankPatchTokenizer

NAME = "audio-acoustic-labels"
PAD_LABEL = -100
KINDS = ("random-projection", "model")


class AcousticLabelTokenizer:
    """Clips -> acoustic labels.

    Args:
        kind: ``"random-projection"`` or ``"model"``.
        num_codes, code_dim, seed: of the random-projection labeller.
        model: folder of a saved ``beats-tokenizer`` model (kind ``"model"``).
        max_seconds: clips are cut to this many seconds (None: no cut).
    """

    modality = "audio"

    def __init__(self, kind: str = "random-projection", num_codes: int = 1024,
                 code_dim: int = 16, seed: int = 0, model: str | None = None,
                 max_seconds: float | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.num_codes, self.code_dim, self.seed = kind, int(num_codes), \
            int(code_dim), int(seed)
        self.model_path = None if model is None else str(model)
        self.patches = FbankPatchTokenizer(max_seconds=max_seconds)
        self.labeller: Any
        if kind == "random-projection":
            self.labeller = RandomProjectionQuantizer(256, self.code_dim, self.num_codes,
                                                      self.seed)
        else:
            if self.model_path is None:
                raise ValueError("kind='model' needs the folder of a saved beats-tokenizer model")
            import mmenc

            self.labeller = mmenc.load(self.model_path).eval()
            if getattr(self.labeller, "codebook", None) is None:
                raise ValueError(f"{self.model_path}: not an acoustic tokenizer (no codebook)")
            self.num_codes = int(self.labeller.codebook.num_codes)

    def __call__(self, items: list[object]) -> TokenBatch:
        batch = self.patches(items)
        labels = self.label_batch(batch)
        return TokenBatch(ids=labels, values=batch.values, mask=batch.mask, pad_id=PAD_LABEL)

    def label_batch(self, batch: TokenBatch) -> Tensor:
        """Labels of an ``audio-fbank`` batch already made (``values`` [b n 256]).

        Returns:
            int64 ``[b n]`` on the batch's device, :data:`PAD_LABEL` at padding.
        """
        if batch.values is None or batch.values.shape[-1] != 256:
            raise ValueError("acoustic labels need 16x16 fbank patches [b n 256]")
        device = batch.values.device
        with torch.no_grad():
            if self.kind == "random-projection":
                labels = self.labeller.to(device)(batch.values)
            else:
                labels = self.labeller.to(device).labels(batch)
        mask = batch.mask if batch.mask is not None else torch.ones(
            labels.shape, dtype=torch.bool, device=device)
        return labels.masked_fill(~mask, PAD_LABEL)

    def config(self) -> dict[str, object]:
        return {"tokenizer": NAME, "kind": self.kind, "num_codes": self.num_codes,
                "code_dim": self.code_dim, "seed": self.seed, "model": self.model_path,
                "max_seconds": self.patches.max_seconds}

    def save(self, directory: str) -> None:
        """Nothing to write: a random projection is rebuilt from its seed, a model is named by
        its folder."""


def build_acoustic_tokenizer(config: dict[str, Any],
                             directory: Path | None = None) -> AcousticLabelTokenizer:
    """An :class:`AcousticLabelTokenizer` from its ``config()``."""
    options = dict(config)
    name = options.pop("tokenizer", NAME)
    if name != NAME:
        raise ValueError(f"tokenizer config is for {name!r}, not {NAME!r}")
    return AcousticLabelTokenizer(**options)
