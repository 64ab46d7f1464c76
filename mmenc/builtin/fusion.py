"""The built-in fusions: ``dual`` (none) and ``merged`` (one trunk over all tokens).

A fusion maps ``{modality: Features}`` to ``{modality: Features}``: each modality's tokens after
they have seen the others. Axis legend: ``b`` batch, ``n`` tokens, ``d`` width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmenc.batch import Features


class DualFusion(nn.Module):
    """No fusion: late interaction only, through the shared embedding space (CLIP-style)."""

    def forward(self, states: dict[str, Features]) -> dict[str, Features]:
        return dict(states)


class MergedFusion(nn.Module):
    """Concatenate the modalities' tokens (plus a learned type embedding each) and run one
    shared trunk over them, as single-stream encoders do.

    Args:
        widths: modality -> tower width; towers wider or narrower than the trunk are projected.
        trunk: keyword arguments of :class:`mmenc.nn.TrunkConfig` (``dim`` is the joint width).
    """

    def __init__(self, widths: dict[str, int], trunk: dict[str, Any]) -> None:
        super().__init__()
        from mmenc.nn import TrunkConfig, build_trunk

        cfg = TrunkConfig(**trunk)
        self.trunk = build_trunk(cfg)
        self.inputs = nn.ModuleDict({
            m: nn.Identity() if w == cfg.dim else nn.Linear(w, cfg.dim) for m, w in widths.items()
        })
        self.type_embedding = nn.ParameterDict({
            m: nn.Parameter(torch.randn(cfg.dim) * 0.02) for m in widths
        })

    def forward(self, states: dict[str, Features]) -> dict[str, Features]:
        names = list(states)
        parts, masks, lengths = [], [], []
        for m in names:
            f = states[m]
            x = self.inputs[m](f.hidden) + self.type_embedding[m]  # [b n_m d]
            parts.append(x)
            lengths.append(x.shape[1])
            masks.append(f.mask if f.mask is not None
                         else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))
        mask = torch.cat(masks, dim=1)  # [b n]
        hidden = self.trunk(torch.cat(parts, dim=1), mask=mask).last_hidden_state  # [b n d]
        out, start = {}, 0
        for m, n in zip(names, lengths, strict=True):
            out[m] = Features(hidden[:, start : start + n], states[m].mask, None)
            start += n
        return out


def dual_fusion(widths: dict[str, int] | None = None) -> DualFusion:
    return DualFusion()


def merged_fusion(widths: dict[str, int], trunk: dict[str, Any]) -> MergedFusion:
    return MergedFusion(widths, trunk)
