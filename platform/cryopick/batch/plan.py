"""A batch run's plan and output layout: what is left to pick, and when a micrograph counts as complete.

Plain Python (no Ray); ``cryopick.distributed.batch`` runs the same :class:`MicrographPicker`
in a Ray Data actor pool. Output directory::

    OUT/batch.json                 resolved config and settings fingerprint (written first)
    OUT/picks/<stem>.<fmt>         picks of one micrograph, written atomically (temp + rename)
    OUT/done/<stem>.json           completion record, written atomically AFTER the pick file
    OUT/coordinate_files.star      RELION index: rlnMicrographName -> rlnMicrographCoordinates
    OUT/particles.star             every pick merged (rlnCoordinateX/Y, rlnMicrographName, FOM)
    OUT/failures.tsv               micrograph <TAB> reason, one row per failed micrograph
    OUT/summary.json, OUT/particles_per_micrograph.png

A micrograph is complete when its record exists, names the same settings fingerprint (model
bytes + picking settings), the same micrograph size and mtime, and the pick file has the
recorded byte size. Anything else (no record, a truncated or foreign pick file, changed
settings or micrograph) is picked again; the rename makes the redo replace, never duplicate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryopick import __version__
from cryopick.batch.config import BatchConfig
from cryopick.config import to_dict
from cryopick.io.atomic import write_text_atomic
from cryopick.io.coords import FORMATS
from cryopick.io.manifest import check_unique_stems, output_dir

ROW_KEYS = ("micrograph", "status", "n_picks", "n_masked", "seconds", "reason", "worker")
STATUSES = ("picked", "skipped", "failed")


@dataclass(frozen=True)
class Layout:
    """Paths inside a campaign's output directory."""

    out: Path
    fmt: str

    def pick_path(self, mic: Path) -> Path:
        return self.out / "picks" / f"{mic.stem}{FORMATS[self.fmt].suffix}"

    def record_path(self, mic: Path) -> Path:
        return self.out / "done" / f"{mic.stem}.json"

    @property
    def config(self) -> Path:
        return self.out / "batch.json"

    @property
    def index(self) -> Path:
        return self.out / "coordinate_files.star"

    @property
    def particles(self) -> Path:
        return self.out / "particles.star"

    @property
    def failures(self) -> Path:
        return self.out / "failures.tsv"

    @property
    def summary(self) -> Path:
        return self.out / "summary.json"

    @property
    def histogram(self) -> Path:
        return self.out / "particles_per_micrograph.png"


def model_file(model: Path) -> Path:
    from cryopick.inference.picker import MODEL_FILE

    return model / MODEL_FILE if model.is_dir() else model


def fingerprint(model: Path, cfg: BatchConfig) -> str:
    """16 hex digits identifying the model's bytes and the pick-deciding settings."""
    h = hashlib.sha256()
    with open(model_file(model), "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    h.update(json.dumps(cfg.decisive(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def complete_record(layout: Layout, mic: Path, fp: str) -> dict[str, Any] | None:
    """The completion record of ``mic`` if its output is complete for fingerprint ``fp``, else None."""
    try:
        rec = json.loads(layout.record_path(mic).read_text())
        st = mic.stat()
        out_size = layout.pick_path(mic).stat().st_size
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(rec, dict) and rec.get("fingerprint") == fp
        and rec.get("mic_bytes") == st.st_size and rec.get("mic_mtime_ns") == st.st_mtime_ns
        and rec.get("output_bytes") == out_size
    )
    return rec if ok else None


def sweep_temp_files(layout: Layout) -> int:
    """Remove temporary files a killed writer left behind (``.NAME.XXXX`` from atomic_write)."""
    n = 0
    for sub in ("picks", "done"):
        folder = layout.out / sub
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and p.is_file():
                    p.unlink(missing_ok=True)
                    n += 1
    return n


@dataclass
class BatchPlan:
    """What a run has to do: all micrographs in order, those still to pick, and the settings."""

    model: Path
    micrographs: list[Path]
    todo: list[Path]
    layout: Layout
    cfg: BatchConfig
    fingerprint: str
    diameter: float


def plan_batch(model: Path, micrographs: Sequence[Path], out: Path, cfg: BatchConfig) -> BatchPlan:
    """Check inputs before any work starts, write campaign.json, and list what is left to do.

    Raises:
        CryopickError: unreadable model, two micrographs with the same file stem, unwritable OUT.
    """
    from cryopick.inference.picker import load_picker

    model = Path(model)
    _, meta = load_picker(model, "cpu")  # fails fast, with the path, on a bad model
    check_unique_stems(micrographs)
    out = output_dir(Path(out))
    layout = Layout(out, cfg.format)
    fp = fingerprint(model, cfg)
    write_text_atomic(layout.config, json.dumps({
        "cryopick_version": __version__, "command": "campaign", "model": str(model.resolve()),
        "n_micrographs": len(micrographs), "fingerprint": fp, "config": to_dict(cfg),
        "model_meta": meta.as_dict(),
    }, indent=2, default=str) + "\n")
    sweep_temp_files(layout)
    todo = [m for m in micrographs if complete_record(layout, m, fp) is None]
    return BatchPlan(model, list(micrographs), todo, layout, cfg, fp, meta.diameter)
