"""Training objectives: pure loss functions plus thin modules owning their learnable state;
every module's ``forward`` returns ``(loss, logs)``.

The factories below build the loss modules (``distillation_loss`` is also the catalogue's
``distillation``). Their names differ from the submodules' on purpose: importing
``mmenc.objectives.matching`` sets the package attribute ``matching`` to the submodule, which
would shadow a factory of that name. They import their module on call, so importing this
package stays cheap; the classes and functions themselves live in the submodules:

- :mod:`mmenc.objectives.contrastive`: ``info_nce``, ``ContrastiveLoss``, ``MomentumQueue``
- :mod:`mmenc.objectives.masked`: ``mask_tokens``, ``masked_lm_loss``, ``MaskedModelingLoss``
- :mod:`mmenc.objectives.matching`: ``sample_hard_negatives``, ``ItmHead``, ``MatchingLoss``
- :mod:`mmenc.objectives.distill`: ``momentum_update``, ``copy_params``, ``soft_targets``,
  ``distill_mlm_loss``, ``MomentumDistillation``
- :mod:`mmenc.objectives.distributed`: ``all_gather_with_grad``
- :mod:`mmenc.objectives.protocol`: ``Objective``, the protocol of what ``mmenc pretrain``
  trains, and the checks of a registered objective against it
- :mod:`mmenc.objectives.pretraining`: ``ContrastiveObjective``, ``MaskedModelingObjective``,
  ``MatchingObjective``, the catalogue's ``contrastive``, ``masked-modeling`` and ``matching``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmenc.objectives.contrastive import ContrastiveLoss
    from mmenc.objectives.distill import MomentumDistillation
    from mmenc.objectives.masked import MaskedModelingLoss
    from mmenc.objectives.matching import MatchingLoss

__all__ = ["contrastive_loss", "distillation_loss", "masked_modeling_loss", "matching_loss"]


def contrastive_loss(**config: Any) -> ContrastiveLoss:
    """Symmetric InfoNCE; ``config`` is :class:`~mmenc.objectives.contrastive.ContrastiveLoss`'s."""
    from mmenc.objectives.contrastive import ContrastiveLoss

    return ContrastiveLoss(**config)


def masked_modeling_loss(**config: Any) -> MaskedModelingLoss:
    """Masked token modelling; defaults to ``dim=32, vocab_sizes=64`` for the contract checks."""
    from mmenc.objectives.masked import MaskedModelingLoss

    config.setdefault("dim", 32)
    config.setdefault("vocab_sizes", 64)
    return MaskedModelingLoss(**config)


def matching_loss(**config: Any) -> MatchingLoss:
    """ITM with hard negatives; ``config`` is :class:`~mmenc.objectives.matching.MatchingLoss`'s."""
    from mmenc.objectives.matching import MatchingLoss

    return MatchingLoss(**config)


def distillation_loss(**config: Any) -> MomentumDistillation:
    """Momentum distillation of masked-token predictions; see
    :class:`~mmenc.objectives.distill.MomentumDistillation`."""
    from mmenc.objectives.distill import MomentumDistillation

    return MomentumDistillation(**config)
