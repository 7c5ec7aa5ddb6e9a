"""The training loss: pixel-wise BCE over the labeled pixels of a target mask, with unpicked pixels of
sparse picks as positive-unlabeled.

The one place to change or add a loss; :func:`cryopick.training.loop.train_step` calls it on
every worker (single process and Ray Train alike).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cryopick.preprocessing.labels import IGNORE, UNPICKED


def masked_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0, prior: float = 0.0,
               confident: float | None = None) -> torch.Tensor:
    """Pixel-wise binary cross-entropy averaged over the pixels that carry a target.

    Labeled pixels (t in {0, 1}) add -[w * t * log p + (1 - t) * log(1 - p)], p = sigmoid(logits), computed
    from logits for numerical stability. Unpicked pixels of sparsely picked micrographs (t = -3) are a mix of
    which a share ``prior`` lies on a particle nobody picked; each adds the non-negative positive-unlabeled risk
    (Kiryo et al., NeurIPS 2017), the particle class read from the batch's particle pixels:
    prior * E_pos[-log p] + max(0, E_unpicked[-log(1 - p)] - prior * E_pos[-log(1 - p)]).
    Without a particle pixel in the batch they add (1 - prior) * E_unpicked[-log(1 - p)]. Other negative
    values (-1 ignore, -2 held back) add nothing. Returns 0 (with a gradient) when no pixel carries a
    target, so such a batch cannot produce NaN.

    ``confident``: background pixels (t = 0) where the model's own p exceeds it add nothing either. Experts leave
    particles unpicked; labeled as background they are what the model unlearns last, and memorising them teaches
    it that some particles are background. A pixel the model already calls particle with that confidence is
    more likely such a particle than background (the product's pseudo-label rule reads p > 0.95 the same way).

    Args:
        logits: (B, 1, H, W) or any shape matching ``target``.
        target: same shape, values in {-3, -2, -1, 0, 1}.
        prior: share of the unpicked pixels that are particle (label disks), in [0, 1).
        confident: None (every background pixel counts) or a probability in (0, 1).
    """
    target = target.to(logits.dtype)
    if confident is not None:
        left_out = (target == 0) & (torch.sigmoid(logits.detach()) > confident)
        target = torch.where(left_out, torch.full_like(target, float(IGNORE)), target)
    valid = target >= 0
    t = target.clamp(min=0.0)
    weight = torch.where(t > 0, torch.full_like(t, pos_weight), torch.ones_like(t)) * valid
    loss = F.binary_cross_entropy_with_logits(logits, t, weight=weight, reduction="sum")
    count = valid.sum()
    unpicked = target == UNPICKED
    n_unpicked = unpicked.sum()
    if bool(n_unpicked > 0):
        loss = loss + n_unpicked * _unpicked_risk(logits, unpicked, valid & (t > 0), prior)
        count = count + n_unpicked
    return loss / count.clamp(min=1)


def _unpicked_risk(logits: torch.Tensor, unpicked: torch.Tensor, positive: torch.Tensor, prior: float) -> torch.Tensor:
    """Mean loss of one unpicked pixel: the non-negative PU risk of :func:`masked_bce` (a scalar tensor)."""
    as_background = F.softplus(logits)  # -log(1 - p)
    u_background = as_background[unpicked].mean()
    if not bool(positive.any()):
        return (1.0 - prior) * u_background
    as_particle = F.softplus(-logits)  # -log p
    negative_part = u_background - prior * as_background[positive].mean()
    return prior * as_particle[positive].mean() + negative_part.clamp(min=0.0)
