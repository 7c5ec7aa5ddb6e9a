"""Which validated checkpoint a training run keeps (single process and Ray Train alike).

The one place to change the checkpoint rule; :mod:`cryopick.training.loop` and
:mod:`cryopick.distributed.train_loop` offer it every validated checkpoint in step order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def f1_standard_error(f1: float, n_true: int) -> float:
    """Binomial standard error of an F1 measured against ``n_true`` expert picks."""
    return math.sqrt(max(f1 * (1.0 - f1), 0.0) / max(n_true, 1))


@dataclass
class CheckpointRule:
    """Which validated checkpoint to keep: the latest one within one standard error of the best so far.

    Validation strips are small (one labeled micrograph: ~130 picks, so F1 is uncertain by ±0.04),
    and picking the single highest F1 among checkpoints picks noise: on EMPIAR-10017 with one label a
    campaign kept step 100 of 400; in a single-process rerun of that setting the dev-set F1 of steps
    100 / 200 / 300 / 400 was 0.74 / 0.80 / 0.81 / 0.81 (docs/selftrain.md). Within the noise
    the later checkpoint wins; the cosine schedule has trained it longer. Offered in step order, this
    keeps the latest checkpoint whose F1 is within one standard error of the best of all of them.

    A warm start (:meth:`start`) sets a floor: no checkpoint scoring below the starting weights is
    kept, in F1 or in average precision. Without it each self-training round could give up one standard
    error against its start, and over rounds those losses added up (docs/selftrain.md, one label with
    intensity augmentation). F1 at the validation threshold moves by a pick or two between checkpoints;
    average precision reads the whole ranking, and a round whose checkpoint tied the start in F1 while
    ranking worse lost on the micrographs it did not validate on (docs/selftrain.md, "Checkpoints").
    When the expert labels changed since the warm start was trained, it is offered as an ordinary
    checkpoint instead (``floor=False``), so that a tiny validation set cannot discard the new labels.
    """

    kept_f1: float = -1.0
    top_f1: float = -1.0
    floor: float = -1.0
    floor_ap: float = -1.0

    def start(self, f1: float, n_true: int = 0, floor: bool = True, ap: float = -1.0) -> None:
        """The warm start's F1 and average precision ``ap`` (on ``n_true`` picks): kept unless a checkpoint
        scores at least as high in both (``floor``), else as an ordinary first checkpoint."""
        if floor:
            self.kept_f1 = self.top_f1 = self.floor = f1
            self.floor_ap = ap
        else:
            self.offer(f1, n_true)

    def offer(self, f1: float, n_true: int, ap: float = 1.0) -> bool:
        """True if the checkpoint scoring ``f1`` and average precision ``ap`` (on ``n_true`` picks) replaces the kept one."""
        self.top_f1 = max(self.top_f1, f1)
        if f1 >= self.floor and ap >= self.floor_ap and f1 >= self.top_f1 - f1_standard_error(self.top_f1, n_true):
            self.kept_f1 = f1
            return True
        return False
