"""Self-training campaign bookkeeping (no Ray here): files, resumable keys, state, stopping rules.

A campaign directory holds ``campaign.json`` (the resolved config), ``state.json`` (completed rounds,
the MLflow parent run) and one ``round_NNN/`` per round, complete once its ``metrics.json`` exists.
The decisions between rounds (stop, too few pseudo-labels, patch shares) are plain functions here so
they are tested without a cluster.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryopick.config import from_dict
from cryopick.errors import CryopickError
from cryopick.io.atomic import write_text_atomic

if TYPE_CHECKING:
    from cryopick.selftrain.config import SelftrainConfig

CAMPAIGN_FILE = "campaign.json"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"

# Keys that may change when a campaign is resumed; anything else must match campaign.json. train.amp and
# predict.amp are runtime choices, as the device is (ray.use_gpu, whose auto setting moves it too).
RESUMABLE_KEYS = ("selftrain.rounds", "selftrain.patience", "selftrain.suggest", "train.amp", "predict.amp", "ray", "tracking")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_mismatch(stored: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first key (dotted) that differs and may not change on resume, else None."""
    a, b = flatten(stored), flatten(current)
    for key in sorted(set(a) | set(b)):
        if any(key == r or key.startswith(r + ".") for r in RESUMABLE_KEYS):
            continue
        if a.get(key) != b.get(key):
            return key
    return None


@dataclass
class CampaignState:
    """``state.json``: which rounds are complete and where they are tracked."""

    completed_rounds: list[int] = field(default_factory=list)
    best_round: int | None = None
    mlflow_parent_run_id: str | None = None
    tracking_uri: str | None = None
    val_f1: dict[str, float] = field(default_factory=dict)  # round (as str) -> validation F1
    f1: dict[str, float] = field(default_factory=dict)  # round (as str) -> scored F1
    stopped: str | None = None  # why the campaign stopped, once it has
    labels: dict[str, int] = field(default_factory=dict)  # micrograph labeled in the campaign -> first round trained with it

    def save(self, campaign: Path) -> None:
        write_text_atomic(campaign / STATE_FILE, json.dumps(self.__dict__, indent=2) + "\n")

    @classmethod
    def load(cls, campaign: Path) -> CampaignState:
        path = campaign / STATE_FILE
        if not path.is_file():
            return cls()
        try:
            return from_dict(cls, json.loads(path.read_text()), "state")
        except (ValueError, CryopickError) as exc:
            raise CryopickError(f"unreadable campaign state ({exc}); delete it to start over", path) from None

    def record(self, rnd: int, val_f1: float, f1: float) -> None:
        """Mark ``rnd`` complete and update the best round: the highest validation F1, ties to the later round.

        As among checkpoints (:class:`cryopick.training.checkpoint.CheckpointRule`): a validation strip
        holds few particles, so equal F1 is no evidence either way, and the later round learned from more.
        """
        if rnd not in self.completed_rounds:
            self.completed_rounds.append(rnd)
            self.completed_rounds.sort()
        self.val_f1[str(rnd)], self.f1[str(rnd)] = float(val_f1), float(f1)
        self.best_round = max(self.completed_rounds, key=lambda r: (self.val_f1[str(r)], r))


def round_dir(campaign: Path, rnd: int) -> Path:
    return campaign / f"round_{rnd:03d}"


def round_complete(campaign: Path, rnd: int) -> bool:
    """A round is complete when its metrics.json (written last, atomically) exists."""
    return (round_dir(campaign, rnd) / METRICS_FILE).is_file()


def completed_rounds_on_disk(campaign: Path) -> list[int]:
    """Round numbers with a metrics.json, in order, stopping at the first gap."""
    done = []
    rounds = sorted(int(m.group(1)) for p in campaign.glob("round_*") if (m := re.fullmatch(r"round_(\d+)", p.name)))
    for expected, rnd in enumerate(rounds):
        if rnd != expected or not round_complete(campaign, rnd):
            break
        done.append(rnd)
    return done


def stop_reason(val_f1: list[float], rounds: int, patience: int, min_improvement: float) -> str | None:
    """Why to stop after the rounds scored so far (val F1 per round, round 0 first), or None.

    Stops at ``rounds`` rounds, or when the last ``patience`` rounds all failed to beat the best
    earlier val F1 by more than ``min_improvement``. A best of 1.0 is not a plateau: an easy strip
    scores every round 1.0 and can show no gain, so it never ends a campaign before its rounds.
    """
    if len(val_f1) >= rounds:
        return f"reached {rounds} round(s)"
    if len(val_f1) > patience:
        best_before = max(val_f1[: len(val_f1) - patience])
        if best_before < 1.0 and all(v <= best_before + min_improvement for v in val_f1[-patience:]):
            return f"validation F1 did not improve on {best_before:.4f} for {patience} round(s)"
    return None


def campaign_stop(history: list[dict[str, Any]], cfg: SelftrainConfig) -> str | None:
    """Why a campaign stops after these rounds (``metrics.json`` per round, round 0 first), or None.

    A round that kept the previous model for want of pseudo-labels says so in its ``stop``; the next
    round would start from the same model and calibration and repeat it.
    """
    if history and history[-1].get("stop"):
        return f"round {history[-1]['round']}: {history[-1]['stop']}"
    return stop_reason([m["val_f1"] for m in history], cfg.selftrain.rounds, cfg.selftrain.patience, 0.0)


def too_few_pseudo_particles(pseudo_share: float, expert_share: float, min_share: float) -> bool:
    """Whether pseudo-labels mark too few particle pixels for a round to learn from them.

    Args:
        pseudo_share: particle share of the unlabeled micrographs' pixels in the pseudo-labels.
        expert_share: particle share of the expert-labeled pixels (validation picks).
        min_share: ``selftrain.min_pseudo_share``; 0 never refuses (and no particle at all still trains).

    A round without pseudo-labeled particles would only train longer on the labeled micrographs; with one
    labeled micrograph its validation strip is part of it, so the strip rewards fitting that micrograph
    while unseen ones lose F1 (EMPIAR-10017, 2026-11-29: 0.848 -> 0.834; docs/selftrain.md).
    """
    return min_share > 0 and pseudo_share < min_share * expert_share


def patch_counts(n_labeled: int, n_pseudo: int, per_epoch: int, labeled_fraction: float) -> tuple[int, int]:
    """Patches to cut per labeled and per pseudo-labeled micrograph in one epoch.

    Labeled micrographs supply ``labeled_fraction`` of an epoch when there are pseudo-labeled
    ones (so ten pseudo-labeled micrographs cannot drown one expert-labeled one), all otherwise.
    """
    if n_labeled < 1:
        raise ValueError("need at least one labeled micrograph")
    if n_pseudo == 0 or labeled_fraction >= 1.0:
        return max(1, round(per_epoch / n_labeled)), 0
    lab = max(1, round(per_epoch * labeled_fraction / n_labeled))
    pseudo = max(1, round(per_epoch * (1.0 - labeled_fraction) / n_pseudo))
    return lab, pseudo
