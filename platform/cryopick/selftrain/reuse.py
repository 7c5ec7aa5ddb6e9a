"""A round whose model is not trained: an existing picker adopted as round 0, or the previous round's kept.

Both write the same round files as training does (``model.pt``, a ``config.json`` saying where the
model came from), so every later stage treats the round alike.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryopick.errors import CryopickError
from cryopick.inference.picker import MODEL_FILE, load_picker, save_picker
from cryopick.io.atomic import atomic_write, write_json, write_text_atomic

if TYPE_CHECKING:
    from cryopick.selftrain.config import SelftrainConfig


def adopt_picker(source: str | Path, rdir: Path, cfg: SelftrainConfig, border: float, labels: str | None = None) -> list[str]:
    """Use an existing picker as round 0: save it into ``rdir`` with a ``config.json`` saying where from.

    ``source`` is a ``cryopick train`` run directory, a campaign's round directory or a ``model.pt``.
    Its model, preprocessing and diameter must be the campaign's (heatmaps, patches and
    pseudo-labels depend on them); ``border`` is the campaign's edge band; ``labels`` the digest of the
    campaign's expert labels at round 0 (:func:`cryopick.selftrain.stages.labels_digest`). Returns warnings for the
    log: the campaign's validation picks should be unseen by the picker, or round 0's validation
    F1 and the thresholds tuned on it are optimistic.
    """
    src = Path(source).expanduser()
    model, meta = load_picker(src)
    shown = lambda v: asdict(v) if is_dataclass(v) and not isinstance(v, type) else v  # noqa: E731
    for what, theirs, ours in (("model", meta.model, cfg.model), ("preprocess", meta.preprocess, cfg.preprocess),
                               ("diameter", meta.diameter, cfg.data.diameter)):
        if theirs != ours:
            raise CryopickError(f"selftrain.round0_model: its {what} is {shown(theirs)}, the campaign's is {shown(ours)}; "
                                f"set the campaign's {what} to match", src)
    meta.border = border
    save_picker(rdir, model, meta)
    run_dir = src if src.is_dir() else src.parent
    trained: dict[str, Any] = {}
    if (run_dir / "config.json").is_file():
        trained = json.loads((run_dir / "config.json").read_text())
    if (run_dir / "history.csv").is_file():
        write_text_atomic(rdir / "history.csv", (run_dir / "history.csv").read_text())
    # a picker trained positive-unlabeled keeps saying so: its threshold is chosen by the count, not the mixture
    prior = (trained.get("result") or {}).get("unpicked_prior")
    write_json(rdir / "config.json", {
        "command": "selftrain", "round": 0, "adopted_from": str(src.resolve()), "diameter": cfg.data.diameter,
        "labeled": cfg.data.labeled, "preprocess": asdict(cfg.preprocess), "model": asdict(cfg.model),
        "trained": trained, "result": {"best_step": 0, "train_seconds": 0.0, "final_loss": None, "unpicked_prior": prior},
        "labels_sha256": labels,
    })
    return validation_overlap(trained, cfg)


def keep_previous(prev_dir: Path, rdir: Path, rnd: int, why: str, labels: str | None = None) -> None:
    """Make round ``rnd`` a copy of the previous round's model, with a ``config.json`` saying why (``labels``: the
    digest of the round's expert labels)."""
    with atomic_write(rdir / MODEL_FILE) as tmp:
        shutil.copyfile(prev_dir / MODEL_FILE, tmp)
    write_json(rdir / "config.json", {
        "command": "selftrain", "round": rnd, "kept_from": str(prev_dir.resolve()), "why": why,
        "result": {"best_step": 0, "train_seconds": 0.0, "final_loss": None, "kept_previous": True}, "labels_sha256": labels,
    })


def validation_overlap(trained: dict[str, Any], cfg: SelftrainConfig) -> list[str]:
    """Warnings if the picker described by ``trained`` (its config.json) may have seen the campaign's validation picks."""
    seen = {Path(m).stem for m in [*trained.get("micrographs", []), *trained.get("labeled", [])]}
    if cfg.data.validation:
        hit = sorted(seen & {Path(m).stem for m in cfg.data.validation})
        why = "round 0's validation F1 is optimistic"
        return [f"round0_model was trained on validation micrograph(s) {', '.join(hit)}: {why}"] if hit else []
    ours = cfg.train.val_fraction
    theirs = float((trained.get("train") or {}).get("val_fraction", ours))
    held = not (trained.get("val_micrographs") or trained.get("validation"))  # strips are held back only without these
    hit = sorted(seen & {Path(m).stem for m in cfg.data.labeled})
    if hit and (not held or theirs < ours):
        return [f"round0_model was trained on part of the validation strips (bottom {ours:g} of {', '.join(hit)}): "
                "round 0's validation F1 is optimistic"]
    return []
