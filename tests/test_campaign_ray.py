"""Campaigns on Ray: a killed prediction actor, a poison micrograph, bad files through the CLI."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from campaign_support import copies, train_tiny_model, write_bad_micrographs

from cryopick.batch.config import BatchConfig
from cryopick.batch.plan import Layout, complete_record, plan_batch
from cryopick.batch.report import LOST_REASON, finish_batch, read_failures
from cryopick.io.coords import read_coords

pytestmark = [pytest.mark.ray]
RAY_CFG = dict(workers=2, cpus_per_worker=0.5, batch_size=2)


@pytest.fixture(scope="module")
def tiny_model(sim_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_model(sim_data, tmp_path_factory.mktemp("tiny_model_ray"))


def _actor_class(delay: float = 0.0, poison: str | None = None) -> type:
    """A ``_PickActor`` that is slow (time to kill it mid-campaign) or dies on one micrograph.

    Defined inside a function so cloudpickle ships it to the workers by value.
    """
    from cryopick.distributed.batch import _PickActor

    class FaultyActor(_PickActor):
        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
            for p in batch["path"]:
                if poison is not None and Path(str(p)).name == poison:
                    os._exit(1)  # like a kernel OOM kill: no exception, no cleanup
            time.sleep(delay * len(batch["path"]))
            return super().__call__(batch)

    return FaultyActor


@pytest.mark.timeout(180)
def test_killed_prediction_actor_leaves_exactly_one_output_per_micrograph(
    ray_session: Any, sim_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    from cryopick.distributed.batch import ray_rows

    mics = copies(sim_data / "micrographs" / "sim_0001.mrc", tmp_path / "mics", 12)
    plan = plan_batch(tiny_model, mics, tmp_path / "out", BatchConfig(**RAY_CFG))
    killed: dict[str, int] = {}

    def kill_first_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            # finished records only: an atomic write's hidden temporary file also ends in .json, until it is renamed
            records = sorted(p for p in (tmp_path / "out" / "done").glob("*.json") if not p.name.startswith("."))
            if records:
                killed["pid"] = int(json.loads(records[0].read_text())["worker"].rsplit(":", 1)[1])
                killed["done_at_kill"] = len(records)
                os.kill(killed["pid"], signal.SIGKILL)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    rows = list(ray_rows(plan, progress=False, actor_cls=_actor_class(delay=0.4)))
    killer.join(5)
    summary = finish_batch(plan, rows, 0.0)
    assert "pid" in killed and killed["done_at_kill"] < len(mics), "the actor must die mid-campaign"
    assert (summary.picked, summary.failed) == (len(mics), 0)
    picks = sorted(p.name for p in (tmp_path / "out" / "picks").iterdir())
    assert picks == sorted(f"{m.stem}.star" for m in mics)  # exactly one file each, no temp files
    workers = set()
    for m in mics:
        rec = complete_record(Layout(tmp_path / "out", "star"), m, plan.fingerprint)
        assert rec is not None
        workers.add(rec["worker"])
    assert len(workers) >= 2
    reference = read_coords(tmp_path / "out" / "picks" / f"{mics[0].stem}.star")[0]
    for m in mics:  # copies of one image: the retried batch gave the same picks
        np.testing.assert_allclose(read_coords(tmp_path / "out" / "picks" / f"{m.stem}.star")[0], reference)


@pytest.mark.timeout(180)
def test_poison_micrograph_fails_alone_and_the_campaign_finishes(
    ray_session: Any, sim_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    from cryopick.distributed.batch import ray_rows

    mics = copies(sim_data / "micrographs" / "sim_0002.mrc", tmp_path / "mics", 6)
    poison = mics[2]
    cfg = BatchConfig(**{**RAY_CFG, "batch_size": 3, "max_task_retries": 0})
    plan = plan_batch(tiny_model, mics, tmp_path / "out", cfg)
    rows = list(ray_rows(plan, progress=False, actor_cls=_actor_class(poison=poison.name)))
    summary = finish_batch(plan, rows, 0.0)
    assert (summary.picked, summary.failed) == (5, 1)  # its batch-mates were redone one by one
    assert read_failures(tmp_path / "out" / "failures.tsv") == [{"micrograph": str(poison), "reason": LOST_REASON}]
    assert sorted(p.name for p in (tmp_path / "out" / "picks").iterdir()) == sorted(
        f"{m.stem}.star" for m in mics if m != poison)


@pytest.mark.timeout(180)
def test_ray_campaign_cli_lists_bad_files_and_exits_nonzero(
    ray_session: Any, sim_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    from cryopick.cli.__main__ import main

    good = sorted((sim_data / "micrographs").glob("*.mrc"))[:2]
    expected = write_bad_micrographs(tmp_path / "bad", good[0])
    out = tmp_path / "out"
    argv = ["campaign", "--model", str(tiny_model), "--micrographs", *map(str, good), str(tmp_path / "bad"),
            "--out", str(out), "--ray", "--workers", "2", "--cpus-per-worker", "0.5", "--quiet"]
    assert main(argv) == 1
    failures = {Path(f["micrograph"]).name: f["reason"] for f in read_failures(out / "failures.tsv")}
    assert set(failures) == set(expected)
    assert all(phrase in failures[name] for name, phrase in expected.items())
    assert sorted(p.name for p in (out / "picks").iterdir()) == sorted(f"{m.stem}.star" for m in good)
    assert main(argv) == 1  # rerun: good ones skipped, bad ones tried and listed again
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["picked"], summary["skipped"], summary["failed"]) == (0, 2, len(expected))


@pytest.mark.timeout(180)
def test_pick_pipeline_runs_a_campaign_on_its_own_local_ray(sim_data: Path, tiny_model: Path, tmp_path: Path) -> None:
    """``pipelines/pick.py`` outside a job: starts its own Ray (resources given), picks, exits 0."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    res = subprocess.run(
        [sys.executable, str(repo / "pipelines" / "pick.py"), "--config", str(repo / "pipelines/configs/pick_cpu.yaml"),
         "--model", str(tiny_model), "--micrographs", str(sim_data / "micrographs"), "--out", str(tmp_path / "out"),
         "--num-cpus", "2", "--quiet"],
        capture_output=True, text=True, timeout=170, env=env,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "4 micrograph(s): 4 picked" in res.stdout
    index = (tmp_path / "out" / "coordinate_files.star").read_text()
    assert all(f"{m.stem}.star" in index for m in (sim_data / "micrographs").glob("*.mrc"))


def _pid_predictor(delay: float) -> type:
    """A ``HeatmapPredictor`` that is slow and names its process in the row's ``node``."""
    from cryopick.distributed.predict import HeatmapPredictor

    class PidPredictor(HeatmapPredictor):
        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            time.sleep(delay * len(batch["path"]))
            rows = super().__call__(batch)
            rows["node"] = np.array([str(os.getpid())] * len(rows["name"]))
            return rows

    return PidPredictor


@pytest.mark.timeout(180)
def test_prediction_pool_grows_to_the_cores_with_the_same_heatmaps(
    ray_session: Any, sim_data: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cryopick.distributed.predict as predict
    from cryopick.config import HeatmapConfig
    from cryopick.inference.picker import load_picker

    mics = copies(sim_data / "micrographs" / "sim_0001.mrc", tmp_path / "mics", 6)
    _, meta = load_picker(tiny_model)
    monkeypatch.setattr(predict, "HeatmapPredictor", _pid_predictor(delay=1.0))
    cfg = HeatmapConfig(tta=1)
    one = list(predict.predict_to_dir(mics, tmp_path / "one", tiny_model, meta.preprocess, cfg, actors=1, progress=False))
    auto = list(predict.predict_to_dir(mics, tmp_path / "auto", tiny_model, meta.preprocess, cfg, actors=0, progress=False))
    assert len({r["node"] for r in one}) == 1
    assert len({r["node"] for r in auto}) == 2  # one actor per CPU of the 2-CPU test cluster
    for m in mics:
        with np.load(tmp_path / "one" / f"{m.stem}.npz") as a, np.load(tmp_path / "auto" / f"{m.stem}.npz") as b:
            np.testing.assert_array_equal(a["heatmap"], b["heatmap"])
