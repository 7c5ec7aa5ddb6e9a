"""Run a batch: plan, pick what is left (in this process, or on Ray with the engine's rows function), write the reports.

``cryopick campaign`` and ``pipelines/pick.py`` call :func:`run_batch`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cryopick.batch.config import BatchConfig
from cryopick.batch.plan import BatchPlan, plan_batch, sweep_temp_files
from cryopick.batch.report import BatchSummary, finish_batch
from cryopick.batch.worker import MicrographPicker
from cryopick.errors import CryopickError
from cryopick.io.lock import OutputLock
from cryopick.io.manifest import check_unique_stems, output_dir


RowsFn = Callable[[BatchPlan, bool], Iterator[dict[str, Any]]]  # picks plan.todo, one status row per micrograph


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
    engine: str | RowsFn = "local",
    progress: bool = True,
) -> BatchSummary:
    """Plan, pick what is left and write the run's reports.

    ``engine``: "local" (this process) or a rows function such as :func:`cryopick.distributed.batch.ray_rows`
    (the caller chooses Ray, so this package never imports the Ray layer).

    Returns:
        the :class:`BatchSummary` of every micrograph of the run, picked now or earlier.
    """
    rows_fn = local_rows if engine == "local" else engine
    if isinstance(rows_fn, str):
        raise CryopickError(f"unknown batch engine {engine!r}: give 'local' or a rows function "
                            "(cryopick.distributed.batch.ray_rows for Ray)")
    t0 = time.monotonic()
    check_unique_stems(micrographs)
    with OutputLock(output_dir(Path(out))):  # one writer per output directory
        plan = plan_batch(model, micrographs, out, cfg)
        try:
            rows = list(rows_fn(plan, progress))
        finally:
            sweep_temp_files(plan.layout)  # on success or Ctrl-C alike; workers are done
        return finish_batch(plan, rows, time.monotonic() - t0)
