"""One worker of a batch run: loads the model once, then picks micrographs into the batch layout.

Used as is in this process (:mod:`cryopick.batch.run`) and inside each Ray actor
(:mod:`cryopick.distributed.batch`). Every micrograph goes through
:func:`cryopick.inference.picker.pick_micrograph` with the mask and out-of-memory retry on.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from cryopick.batch.config import BatchConfig
from cryopick.batch.plan import Layout, complete_record
from cryopick.errors import CryopickError
from cryopick.io.atomic import write_text_atomic


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


class MicrographPicker:
    """Loads the model ONCE, then picks micrographs one by one into the batch output directory.

    ``process`` never raises for a bad micrograph: it returns a status row (see ``ROW_KEYS``),
    small enough to send back to a driver (never the heatmap).
    """

    def __init__(self, model: str | Path, cfg: BatchConfig, out: str | Path, fp: str, threads: int | None = None) -> None:
        import torch

        from cryopick.inference.picker import load_picker
        from cryopick.inference.tiling import resolve_device

        if threads:
            torch.set_num_threads(threads)
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

    def process(self, mic: str | Path) -> dict[str, Any]:
        """Pick one micrograph (or skip it when complete); a status row, never an exception."""
        from cryopick.inference.picker import pick_micrograph
        from cryopick.io.coords import write_coords
        from cryopick.io.micrograph import read_micrograph

        mic, t0 = Path(mic), time.monotonic()
        rec = complete_record(self.layout, mic, self.fp)
        if rec is not None:  # e.g. a batch retried after its actor died half way
            return self._row(mic, "skipped", t0, rec["n_picks"], rec.get("n_masked", 0), "already complete")
        try:
            if not mic.is_file():  # e.g. deleted since the campaign was planned
                raise CryopickError("no such micrograph file", mic)
            st = mic.stat()  # before reading: a file replaced while being picked is redone next run
            m = read_micrograph(mic, self.cfg.pixel_size)
            picked = pick_micrograph(self.model, self.meta, m, self.cfg.pick, mask=self.cfg.mask, retry_oom=True)
            xy, scores, removed, flagged = picked.xy, picked.scores, picked.n_masked, picked.masked_fraction
            out = write_coords(self.layout.pick_path(mic), xy, scores, self.cfg.format, self.box_size)
            record = {
                "micrograph": str(mic), "output": out.name, "output_bytes": out.stat().st_size,
                "n_picks": int(len(xy)), "n_masked": removed, "masked_fraction": round(flagged, 4),
                "mic_bytes": st.st_size, "mic_mtime_ns": st.st_mtime_ns, "fingerprint": self.fp, "pixel_size": m.pixel_size,
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
