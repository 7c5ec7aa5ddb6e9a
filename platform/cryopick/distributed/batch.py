"""Ray Data engine for batch runs (picking a whole data set): an actor pool that loads the model once per actor.

``ray.data.from_items(paths)`` streams through ``map_batches(_PickActor, compute=ActorPoolStrategy(size=N))``:
each actor reads, picks and writes its micrographs' files atomically (``MicrographPicker``) and
returns only small status rows, so the driver never holds images or heatmaps and memory stays
bounded however many micrographs there are.

Faults:
- a bad micrograph is a ``failed`` row, never an exception;
- an actor that dies (killed, OOM-killed by Ray's memory monitor) is restarted by Ray
  (``max_restarts=-1``) and its batch retried (``max_task_retries``); micrographs the dead actor
  had finished are complete on disk and skipped, so each ends with exactly one output file;
- a batch that exhausts its retries is dropped by Ray Data (``max_errored_blocks=-1``) instead of
  failing the run; its micrographs are retried one per task (one task per actor at a time), so
  one poison micrograph fails alone and is recorded as lost, not taking its batch-mates with it.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import ray
import ray.data

from cryopick.batch.config import BatchConfig
from cryopick.batch.plan import ROW_KEYS, BatchPlan
from cryopick.batch.worker import MicrographPicker
from cryopick.distributed.connect import ray_session

MAX_SINGLE_PASSES = 3  # recovery passes after the batched one


class _PickActor:
    """Ray Data callable class: model loaded in ``__init__`` (once per actor), rows out."""

    def __init__(self, model: str, cfg: BatchConfig, out: str, fp: str, threads: int = 1) -> None:
        self.picker = MicrographPicker(model, cfg, out, fp, threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        rows = [self.picker.process(str(p)) for p in batch["path"]]
        return {k: [r[k] for r in rows] for k in ROW_KEYS}


def pool_shape(cfg: BatchConfig) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) for the connected cluster."""
    res = ray.cluster_resources()
    gpus = float(res.get("GPU", 0.0))
    gpus_per = cfg.gpus_per_worker if cfg.gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
    if cfg.workers:
        workers = cfg.workers
    elif gpus_per > 0:
        workers = max(1, int(gpus // gpus_per))
    else:
        workers = max(1, int(float(res.get("CPU", 1.0)) // cfg.cpus_per_worker))
    return workers, cfg.cpus_per_worker, gpus_per


@contextlib.contextmanager
def _data_context(show_ray_progress: bool) -> Iterator[None]:
    """Tolerate dropped blocks (recovered by the driver) for the duration of a batch run."""
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.max_errored_blocks, ctx.enable_progress_bars)
    ctx.max_errored_blocks = -1
    ctx.enable_progress_bars = show_ray_progress
    try:
        yield
    finally:
        ctx.max_errored_blocks, ctx.enable_progress_bars = saved


def _stream(
    plan: BatchPlan, paths: Sequence[str], batch_size: int, in_flight: int | None, actor_cls: type
) -> Iterator[dict[str, Any]]:
    """One Ray Data pass over ``paths`` (absolute); yields status rows as they arrive.

    ``in_flight``: tasks queued per actor (None = Ray's default); 1 makes an actor's death
    cost only the micrograph it was working on.
    """
    workers, cpus, gpus = pool_shape(plan.cfg)
    # one block per batch: a retried block redoes (or skips, when complete) at most one batch
    ds: ray.data.Dataset = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=math.ceil(len(paths) / batch_size))
    with warnings.catch_warnings():
        # Ray 2.60 has no named parameter for max_restarts/max_task_retries; the **ray_remote_args
        # route is deprecated (removal announced for 2.64) but still the only one.
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(
            actor_cls,
            fn_constructor_kwargs={"model": str(plan.model.resolve()), "cfg": plan.cfg, "threads": max(1, math.ceil(cpus)),
                                   "out": str(plan.layout.out.resolve()), "fp": plan.fingerprint},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(
                size=min(workers, len(paths)), max_tasks_in_flight_per_actor=in_flight
            ),
            num_cpus=cpus,
            num_gpus=gpus,
            max_restarts=-1,  # a killed actor comes back (with its model reloaded)
            max_task_retries=plan.cfg.max_task_retries,  # its batch retried, finitely: a poison batch ends
        )
    for row in ds.iter_rows():  # streaming: small rows only, never the whole dataset
        yield {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def ray_rows(
    plan: BatchPlan, progress: bool = True, actor_cls: type = _PickActor
) -> Iterator[dict[str, Any]]:
    """Pick ``plan.todo`` on the Ray cluster; one status row per micrograph that came back.

    Micrographs whose batch was lost even after retries are retried one per task and per actor
    (up to ``MAX_SINGLE_PASSES`` passes, while they make progress); any still missing are left
    out (``finish_batch`` records them as failed). ``actor_cls`` (a ``_PickActor`` subclass)
    lets fault-injection tests crash or slow chosen actors.
    """
    from tqdm.auto import tqdm

    if not plan.todo:
        return
    with ray_session(quiet=True):  # shuts down a local Ray it started, however the run ends
        original = {str(m.resolve()): str(m) for m in plan.todo}  # rows name micrographs as the user did
        pending = list(original)
        bar = tqdm(total=len(pending), desc="campaign", unit="mic", disable=not progress, mininterval=1.0)
        failed = 0
        # pass 1 in batches; then one micrograph per task and per actor, repeated while it makes
        # progress, so the micrographs that shared a task or an actor with a poison one are recovered
        passes = [(plan.cfg.batch_size, None)] + [(1, 1)] * MAX_SINGLE_PASSES
        with _data_context(show_ray_progress=False):
            for batch_size, in_flight in passes:
                seen: set[str] = set()
                for row in _stream(plan, pending, batch_size, in_flight, actor_cls):
                    if row["micrograph"] in seen or row["micrograph"] not in original:
                        continue
                    seen.add(row["micrograph"])
                    failed += row["status"] == "failed"
                    bar.update(1)
                    bar.set_postfix(failed=failed, refresh=False)
                    yield {**row, "micrograph": original[row["micrograph"]]}
                pending = [p for p in pending if p not in seen]
                if not pending or (not seen and in_flight == 1):
                    break
        bar.close()
