"""Picking campaigns over many micrographs: one file per micrograph, resumable, fault tolerant.

Plain Python (no Ray); ``cryopick.distributed.campaign`` runs the same :class:`MicrographPicker`
in a Ray Data actor pool. Output directory::

    OUT/campaign.json              resolved config and settings fingerprint (written first)
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

import dataclasses
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryopick import __version__
from cryopick.config import PickConfig, from_dict, to_dict
from cryopick.errors import CryopickError
from cryopick.io.atomic import write_text_atomic
from cryopick.io.coords import FORMATS
from cryopick.mask import MaskConfig

if TYPE_CHECKING:
    import numpy as np

    from cryopick.preprocess import Binned

ROW_KEYS = ("micrograph", "status", "n_picks", "n_masked", "seconds", "reason", "worker")
STATUSES = ("picked", "skipped", "failed")


@dataclass
class CampaignConfig:
    """Everything that decides a campaign's picks, plus how the Ray engine spreads the work."""

    format: str = "star"  # star | box | csv | txt
    box_size: float | None = None  # .box output; default 1.5 x the model's particle diameter
    pixel_size: float | None = None  # Å/px overriding the headers
    device: str = "auto"  # torch device in each worker: auto | cpu | cuda
    pick: PickConfig = field(default_factory=PickConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    workers: int = 0  # Ray actors; 0 = one per GPU, else one per cpus_per_worker CPUs
    cpus_per_worker: float = 1.0  # Ray CPUs reserved per actor (0.5 leaves room on a 2-CPU box)
    gpus_per_worker: float | None = None  # None = 1 when the cluster has GPUs, else 0
    batch_size: int = 4  # micrographs per actor call (and per Ray Data block)
    max_task_retries: int = 3  # retries of a batch whose actor died; then each is retried alone
    torch_threads: int | None = None  # torch threads per worker; None = ceil(cpus_per_worker)

    def validate(self, where: str = "campaign") -> None:
        if self.format not in FORMATS:
            raise CryopickError(f"{where}.format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        for key in ("box_size", "pixel_size", "torch_threads"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise CryopickError(f"{where}.{key} must be positive, got {value!r}")
        if self.workers < 0:
            raise CryopickError(f"{where}.workers must be >= 0, got {self.workers}")
        if not self.cpus_per_worker > 0:
            raise CryopickError(f"{where}.cpus_per_worker must be positive, got {self.cpus_per_worker}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise CryopickError(f"{where}.gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.batch_size < 1:
            raise CryopickError(f"{where}.batch_size must be >= 1, got {self.batch_size}")
        if self.max_task_retries < 0:
            raise CryopickError(f"{where}.max_task_retries must be >= 0, got {self.max_task_retries}")

    def decisive(self) -> dict[str, Any]:
        """The settings that change the picks (engine settings such as ``workers`` do not)."""
        return {"format": self.format, "box_size": self.box_size, "pixel_size": self.pixel_size,
                "pick": to_dict(self.pick), "mask": to_dict(self.mask)}


def campaign_config(data: dict[str, Any] | None) -> CampaignConfig:
    """Validated :class:`CampaignConfig` from a dict (YAML section); errors name the key."""
    return from_dict(CampaignConfig, data, "campaign")


@dataclass(frozen=True)
class Layout:
    """Paths inside a campaign's output directory."""

    out: Path
    fmt: str

    def pick_path(self, mic: Path) -> Path:
        return self.out / "picks" / f"{mic.stem}{FORMATS[self.fmt]}"

    def record_path(self, mic: Path) -> Path:
        return self.out / "done" / f"{mic.stem}.json"

    @property
    def config(self) -> Path:
        return self.out / "campaign.json"

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
    from cryopick.picker import MODEL_FILE

    return model / MODEL_FILE if model.is_dir() else model


def fingerprint(model: Path, cfg: CampaignConfig) -> str:
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


def failure_reason(exc: BaseException, mic: Path) -> str:
    """One line: the error message without the leading "PATH: " the CryopickError adds."""
    if isinstance(exc, CryopickError):
        msg = str(exc)
        for prefix in (f"{mic}: ", f"{exc.path}: "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        return msg.splitlines()[0] if msg else "error"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _oom_types() -> tuple[type[BaseException], ...]:
    import torch

    torch_oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return (MemoryError, torch_oom)


class MicrographPicker:
    """Loads the model ONCE, then picks micrographs one by one into the campaign directory.

    ``process`` never raises for a bad micrograph: it returns a status row (see ``ROW_KEYS``),
    small enough to send back to a driver (never the heatmap).
    """

    def __init__(self, model: str | Path, cfg: CampaignConfig, out: str | Path, fp: str) -> None:
        import torch

        from cryopick.picker import load_picker
        from cryopick.predict import resolve_device

        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.device = resolve_device(cfg.device)
        self.model, self.meta = load_picker(Path(model), self.device)
        self.cfg = cfg
        self.layout = Layout(Path(out), cfg.format)
        self.fp = fp
        self.box_size = cfg.box_size or round(self.meta.diameter * 1.5)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def _row(
        self, mic: Path, status: str, t0: float, n: int = 0, masked: int = 0, reason: str = ""
    ) -> dict[str, Any]:
        return {"micrograph": str(mic), "status": status, "n_picks": n, "n_masked": masked,
                "seconds": round(time.monotonic() - t0, 4), "reason": reason, "worker": self.worker}

    def _pick(self, binned: Binned) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) picks in ORIGINAL px and (N,) scores; on out-of-memory, retry with half the tile batch."""
        import torch

        from cryopick.picker import pick_binned

        tile_batch = self.cfg.pick.tile_batch
        while True:
            try:
                pick_cfg = dataclasses.replace(self.cfg.pick, tile_batch=tile_batch)
                xy, scores, _heatmap = pick_binned(self.model, binned, self.meta, pick_cfg)
                return xy, scores
            except _oom_types() as exc:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if tile_batch == 1:
                    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise CryopickError(f"out of memory even with tile_batch=1 ({detail})") from None
                tile_batch = max(1, tile_batch // 2)

    def process(self, mic: str | Path) -> dict[str, Any]:
        """Pick one micrograph (or skip it when complete); a status row, never an exception."""
        from cryopick.io.coords import write_coords
        from cryopick.io.micrograph import read_micrograph
        from cryopick.mask import apply_mask
        from cryopick.preprocess import preprocess

        mic, t0 = Path(mic), time.monotonic()
        rec = complete_record(self.layout, mic, self.fp)
        if rec is not None:  # e.g. a batch retried after its actor died half way
            return self._row(mic, "skipped", t0, rec["n_picks"], rec.get("n_masked", 0), "already complete")
        try:
            if not mic.is_file():  # e.g. deleted since the campaign was planned
                raise CryopickError("no such micrograph file", mic)
            st = mic.stat()  # before reading: a file replaced while being picked is redone next run
            m = read_micrograph(mic, self.cfg.pixel_size)
            if self.meta.diameter >= min(m.shape):
                raise CryopickError(
                    f"micrograph is {m.shape[1]}x{m.shape[0]} px, smaller than the particle "
                    f"diameter {self.meta.diameter:g} px", mic)
            binned = preprocess(m.data, self.meta.preprocess, m.pixel_size)
            xy, scores = self._pick(binned)
            xy, scores, removed, flagged = apply_mask(binned, xy, scores, self.meta.diameter, self.cfg.mask)
            out = write_coords(self.layout.pick_path(mic), xy, scores, self.cfg.format, self.box_size)
            record = {
                "micrograph": str(mic), "output": out.name, "output_bytes": out.stat().st_size,
                "n_picks": int(len(xy)), "n_masked": removed, "masked_fraction": round(flagged, 4),
                "mic_bytes": st.st_size, "mic_mtime_ns": st.st_mtime_ns, "fingerprint": self.fp,
                "seconds": round(time.monotonic() - t0, 4), "worker": self.worker,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            write_text_atomic(self.layout.record_path(mic), json.dumps(record) + "\n")
            return self._row(mic, "picked", t0, len(xy), removed)
        except Exception as exc:  # a bad micrograph must never end the campaign
            # a stale output of an earlier run no longer matches this micrograph: remove it
            self.layout.record_path(mic).unlink(missing_ok=True)
            self.layout.pick_path(mic).unlink(missing_ok=True)
            return self._row(mic, "failed", t0, reason=failure_reason(exc, mic))


@dataclass
class CampaignPlan:
    """What a run has to do: all micrographs in order, those still to pick, and the settings."""

    model: Path
    micrographs: list[Path]
    todo: list[Path]
    layout: Layout
    cfg: CampaignConfig
    fingerprint: str
    diameter: float


def plan_campaign(model: Path, micrographs: Sequence[Path], out: Path, cfg: CampaignConfig) -> CampaignPlan:
    """Check inputs before any work starts, write campaign.json, and list what is left to do.

    Raises:
        CryopickError: unreadable model, two micrographs with the same file stem, unwritable OUT.
    """
    from cryopick.picker import load_picker

    model = Path(model)
    _, meta = load_picker(model, "cpu")  # fails fast, with the path, on a bad model
    seen: dict[str, Path] = {}
    for mic in micrographs:
        if mic.stem in seen:
            raise CryopickError(f"two micrographs share the name {mic.stem!r} ({seen[mic.stem]} and {mic}); "
                                "their pick files would collide")
        seen[mic.stem] = mic
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CryopickError(f"cannot create the output directory ({exc.strerror})", out) from None
    layout = Layout(out, cfg.format)
    fp = fingerprint(model, cfg)
    write_text_atomic(layout.config, json.dumps({
        "cryopick_version": __version__, "command": "campaign", "model": str(model.resolve()),
        "n_micrographs": len(micrographs), "fingerprint": fp, "config": to_dict(cfg),
        "model_meta": meta.as_dict(),
    }, indent=2, default=str) + "\n")
    sweep_temp_files(layout)
    todo = [m for m in micrographs if complete_record(layout, m, fp) is None]
    return CampaignPlan(model, list(micrographs), todo, layout, cfg, fp, meta.diameter)


def local_rows(plan: CampaignPlan, progress: bool = True) -> Iterator[dict[str, Any]]:
    """Pick ``plan.todo`` in this process, one status row per micrograph."""
    from tqdm.auto import tqdm

    if not plan.todo:
        return
    picker = MicrographPicker(plan.model, plan.cfg, plan.layout.out, plan.fingerprint)
    bar = tqdm(plan.todo, desc="campaign", unit="mic", disable=not progress, mininterval=1.0)
    failed = 0
    for mic in bar:
        row = picker.process(mic)
        failed += row["status"] == "failed"
        bar.set_postfix(failed=failed, refresh=False)
        yield row


def run_campaign(
    model: Path,
    micrographs: Sequence[Path],
    out: Path,
    cfg: CampaignConfig,
    engine: str = "local",
    progress: bool = True,
) -> Any:
    """Plan, pick what is left (``engine`` = "local" or "ray") and write the campaign's reports.

    Returns:
        :class:`cryopick.campaign_report.CampaignSummary` of the whole campaign.
    """
    from cryopick.campaign_report import finish_campaign

    if engine not in ("local", "ray"):
        raise CryopickError(f"unknown campaign engine {engine!r} (use local or ray)")
    t0 = time.monotonic()
    plan = plan_campaign(model, micrographs, out, cfg)
    if engine == "ray":
        from cryopick.distributed.campaign import ray_rows

        rows_iter = ray_rows(plan, progress)
    else:
        rows_iter = local_rows(plan, progress)
    try:
        rows = list(rows_iter)
    finally:
        sweep_temp_files(plan.layout)  # on success or Ctrl-C alike; workers are done
    return finish_campaign(plan, rows, time.monotonic() - t0)
