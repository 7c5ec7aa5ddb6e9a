"""A batch run's reports: RELION index, merged particles STAR, failures file, summary and histogram.

Everything here is rebuilt from the completion records on disk (not from the rows of this run
only), so a resumed run reports on all its micrographs, and the index only ever names pick
files that are complete. Every file is written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryopick.batch.plan import BatchPlan, Layout, complete_record
from cryopick.io.atomic import atomic_write, write_text_atomic
from cryopick.io.coords import read_coords

LOST_REASON = "no result came back (the worker picking it died repeatedly: out of memory or a crash?)"


@dataclass
class BatchSummary:
    """Counts of a batch run; ``picked + skipped + failed == total``."""

    total: int
    picked: int  # picked in this run
    skipped: int  # already complete from an earlier run
    failed: int
    particles: int  # over every complete micrograph
    masked: int  # picks the mask removed, over every complete micrograph
    seconds: float
    per_micrograph_median: float
    out: str
    failures: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable summary, as the CLI prints it."""
        out = [
            f"{self.total} micrograph(s): {self.picked} picked, {self.skipped} skipped (already complete), "
            f"{self.failed} failed; {self.particles} particles (median {self.per_micrograph_median:g} per "
            f"micrograph{f', {self.masked} removed by the mask' if self.masked else ''}) in {self.seconds:.1f} s",
            f"picks: {self.out}/picks  index: {self.out}/coordinate_files.star  merged: {self.out}/particles.star",
        ]
        if self.failures:
            out.append(f"failures ({self.out}/failures.tsv):")
            out += [f"  {f['micrograph']}: {f['reason']}" for f in self.failures[:20]]
            if len(self.failures) > 20:
                out.append(f"  ... and {len(self.failures) - 20} more")
        return out


def _star_value(text: str) -> str:
    """A STAR token: quoted when it holds whitespace (RELION paths normally do not)."""
    return f'"{text}"' if any(ch.isspace() for ch in text) or not text else text


def write_index(path: Path, entries: Sequence[tuple[str, str]]) -> Path:
    """RELION ``coordinate_files.star``: one (micrograph, coordinate file) row per micrograph."""
    lines = ["", "# version 50001", "", "data_coordinate_files", "", "loop_",
             "_rlnMicrographName #1", "_rlnMicrographCoordinates #2"]
    lines += [f"{_star_value(m)} {_star_value(c)}" for m, c in entries]
    write_text_atomic(path, "\n".join(lines) + "\n\n")
    return path


def write_particles(path: Path, entries: Iterable[tuple[str, Path]], pixel_size: float | None = None) -> int:
    """Merge every pick into one RELION particles STAR (streamed: one micrograph in memory at a time).

    Columns: rlnCoordinateX, rlnCoordinateY, rlnMicrographName, rlnAutopickFigureOfMerit, in the
    micrograph's pixels; RELION 5 (Extract) and cryoSPARC (Import Particles) read this layout. With the
    micrographs' pixel size known, a ``data_optics`` block (one optics group) comes first and every
    particle names its group, as RELION 5 expects.

    Returns:
        number of particles written.
    """
    header = ["", "# version 50001", ""]
    if pixel_size is not None:
        header += ["data_optics", "", "loop_", "_rlnOpticsGroupName #1", "_rlnOpticsGroup #2", "_rlnMicrographPixelSize #3",
                   "_rlnMicrographOriginalPixelSize #4", f"opticsGroup1 1 {pixel_size:.6f} {pixel_size:.6f}", "", "", "# version 50001", ""]
    group = " 1" if pixel_size is not None else ""
    header += ["data_particles", "", "loop_", "_rlnCoordinateX #1", "_rlnCoordinateY #2", "_rlnMicrographName #3",
               "_rlnAutopickFigureOfMerit #4", *(["_rlnOpticsGroup #5"] if pixel_size is not None else []), ""]
    n = 0
    with atomic_write(path, suffix=".star") as tmp, open(tmp, "w") as fh:
        fh.write("\n".join(header))
        for name, coords in entries:
            xy, scores = read_coords(coords)
            token = _star_value(name)
            fh.writelines(f"{x:.2f} {y:.2f} {token} {s:.6f}{group}\n" for (x, y), s in zip(xy, scores))
            n += len(xy)
        fh.write("\n")
    return n


def write_failures(path: Path, failures: Sequence[dict[str, str]]) -> Path:
    """TSV with a header: micrograph, reason (tabs and newlines in reasons become spaces)."""
    clean = [(f["micrograph"], " ".join(f["reason"].split())) for f in failures]
    write_text_atomic(path, "micrograph\treason\n" + "".join(f"{m}\t{r}\n" for m, r in clean))
    return path


def read_failures(path: Path) -> list[dict[str, str]]:
    """The rows of a failures TSV written by :func:`write_failures`."""
    lines = Path(path).read_text().splitlines()[1:]
    return [dict(zip(("micrograph", "reason"), line.split("\t", 1))) for line in lines if line]


def finish_batch(plan: BatchPlan, rows: Sequence[dict[str, Any]], seconds: float) -> BatchSummary:
    """Write index, merged STAR, failures, summary and histogram from the records on disk.

    Args:
        rows: status rows of this run (see ``cryopick.batch.plan.ROW_KEYS``); a micrograph of
            ``plan.todo`` without a row is recorded as failed (its worker never answered).
    """
    layout: Layout = plan.layout
    by_mic = {str(r["micrograph"]): r for r in rows}
    todo = {str(m) for m in plan.todo}
    index: list[tuple[str, str]] = []
    counts: list[int] = []
    failures: list[dict[str, str]] = []
    picked = skipped = masked = 0
    records: list[dict[str, Any]] = []
    for mic in plan.micrographs:
        row = by_mic.get(str(mic))
        rec = complete_record(layout, mic, plan.fingerprint)
        if rec is not None:
            records.append(rec)
            index.append((str(mic), str(layout.pick_path(mic))))
            counts.append(int(rec["n_picks"]))
            masked += int(rec.get("n_masked", 0))
            if str(mic) in todo:  # not complete when the run started: picked by this run
                picked += 1
            else:
                skipped += 1
        else:
            reason = (row or {}).get("reason") or LOST_REASON
            if row is not None and row["status"] != "failed":
                reason = f"output incomplete after picking ({row['status']})"
            failures.append({"micrograph": str(mic), "reason": str(reason)})
    write_index(layout.index, index)
    sizes = {rec.get("pixel_size") for rec in records}
    pixel_size = plan.cfg.pixel_size or (sizes.pop() if len(sizes) == 1 else None)  # one optics group needs one size
    n_particles = write_particles(layout.particles, ((m, Path(c)) for m, c in index), pixel_size)
    write_failures(layout.failures, failures)
    summary = BatchSummary(
        total=len(plan.micrographs), picked=picked, skipped=skipped, failed=len(failures),
        particles=n_particles, masked=masked, seconds=round(seconds, 2),
        per_micrograph_median=float(np.median(counts)) if counts else 0.0,
        out=str(layout.out), failures=failures,
    )
    write_text_atomic(layout.summary, json.dumps(summary.as_dict(), indent=2) + "\n")
    if counts:
        from cryopick.evaluation.plots import plot_histogram

        plot_histogram(layout.histogram, np.asarray(counts), "particles per micrograph",
                       f"{len(counts)} micrographs, {n_particles} particles")
    return summary
