"""Run a batch: plan, pick what is left (in this process or on Ray), write the reports.

``cryopick campaign`` and ``pipelines/pick.py`` call :func:`run_batch`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cryopick.batch.config import BatchConfig
from cryopick.batch.plan import BatchPlan, plan_batch, sweep_temp_files
from cryopick.batch.report import BatchSummary, finish_batch
from cryopick.batch.worker import MicrographPicker
from cryopick.errors import CryopickError
from cryopick.io.lock import OutputLock
from cryopick.io.manifest import check_unique_stems, output_dir


def local_rows(plan: BatchPlan, progress: bool = True) -> Iterator[dict[str, Any]]:
    """Pick ``plan.todo`` in this process, one status row per micrograph."""
    from tqdm.auto import tqdm

    if not plan.todo:
        return
    picker = MicrographPicker(plan.model, plan.cfg, plan.layout.out, plan.fingerprint)
    bar = tqdm(plan.todo, desc="pick", unit="mic", disable=not progress, mininterval=1.0)
    failed = 0
    for mic in bar:
        row = picker.process(mic)
        failed += row["status"] == "failed"
        bar.set_postfix(failed=failed, refresh=False)
        yield row


def run_batch(
    model: Path,
    micrographs: Sequence[Path],
    out: Path,
    cfg: BatchConfig,
    engine: str = "local",
    progress: bool = True,
) -> BatchSummary:
    """Plan, pick what is left (``engine`` = "local" or "ray") and write the run's reports.

    Returns:
        the :class:`BatchSummary` of every micrograph of the run, picked now or earlier.
    """
    if engine not in ("local", "ray"):
        raise CryopickError(f"unknown batch engine {engine!r} (use local or ray)")
    t0 = time.monotonic()
    check_unique_stems(micrographs)
    with OutputLock(output_dir(Path(out))):  # one writer per output directory
        plan = plan_batch(model, micrographs, out, cfg)
        if engine == "ray":
            from cryopick.distributed.batch import ray_rows

            rows_iter = ray_rows(plan, progress)
        else:
            rows_iter = local_rows(plan, progress)
        try:
            rows = list(rows_iter)
        finally:
            sweep_temp_files(plan.layout)  # on success or Ctrl-C alike; workers are done
        return finish_batch(plan, rows, time.monotonic() - t0)
