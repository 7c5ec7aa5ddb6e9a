"""Picking campaigns without Ray: bad files, a killed driver, resume, RELION outputs, OOM, config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from campaign_support import copies, train_tiny_model, write_bad_micrographs

from cryopick.batch.config import BatchConfig, batch_config
from cryopick.batch.plan import Layout, complete_record, fingerprint
from cryopick.batch.run import run_batch
from cryopick.batch.worker import MicrographPicker
from cryopick.batch.report import read_failures
from cryopick.cli.__main__ import main as cli
from cryopick.errors import CryopickError
from cryopick.io.coords import read_coords

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tiny_model(sim_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_model(sim_data, tmp_path_factory.mktemp("tiny_model"))


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_bad_files_are_listed_with_reasons_and_good_ones_picked(
    empiar: Path, split: dict, tiny_model: Path, tmp_path: Path
) -> None:
    good = [empiar / "micrographs" / f"{n}.mrc" for n in split["test"][:2]]
    expected = write_bad_micrographs(tmp_path / "bad", good[0])
    out = tmp_path / "out"
    rc = cli(["campaign", "--model", str(tiny_model), "--micrographs", *map(str, good), str(tmp_path / "bad"),
              "--out", str(out), "--local", "--quiet"])
    assert rc == 1  # some failed
    failures = {Path(f["micrograph"]).name: f["reason"] for f in read_failures(out / "failures.tsv")}
    assert set(failures) == set(expected)
    for name, phrase in expected.items():
        assert phrase in failures[name], (name, failures[name])
        assert "\t" not in failures[name] and str(tmp_path) not in failures[name]
    assert _visible(out / "picks") == sorted(f"{p.stem}.star" for p in good)
    for mic in good:
        xy, _ = read_coords(out / "picks" / f"{mic.stem}.star")
        assert len(xy) > 0 and (xy >= 0).all() and (xy < 1024).all()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["total"], summary["picked"], summary["failed"]) == (len(good) + len(expected), 2, len(expected))
    assert (out / "particles_per_micrograph.png").stat().st_size > 1000


def test_driver_killed_mid_campaign_resumes_without_redoing(
    sim_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    mics = copies(sim_data / "micrographs" / "sim_0000.mrc", tmp_path / "mics", 40)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cryopick.cli.__main__", "campaign", "--model", str(tiny_model),
         "--micrographs", str(tmp_path / "mics"), "--out", str(out), "--local", "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "done").is_dir() and len([p for p in (out / "done").glob("*.json") if not p.name.startswith(".")]) >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # the driver dies mid-campaign, with no chance to clean up
    proc.wait(10)
    fp = fingerprint(tiny_model, BatchConfig())
    done = [m for m in mics if complete_record(Layout(out, "star"), m, fp)]
    assert 3 <= len(done) < len(mics), "the driver must be killed mid-campaign"
    # a partial pick file (cut short by a crash of some other writer) and a stale temp file
    partial = out / "picks" / f"{done[0].stem}.star"
    partial.write_bytes(partial.read_bytes()[:40])
    (out / "picks" / f".{mics[-1].stem}.star.abc123.star").write_text("half")
    before = {m: (out / "picks" / f"{m.stem}.star").stat() for m in done[1:]}

    summary = run_batch(tiny_model, mics, out, BatchConfig(), "local", progress=False)
    assert (summary.skipped, summary.picked, summary.failed) == (len(done) - 1, len(mics) - len(done) + 1, 0)
    for m, st in before.items():  # complete outputs were not touched
        after = (out / "picks" / f"{m.stem}.star").stat()
        assert (after.st_ino, after.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert _visible(out / "picks") == sorted(f"{m.stem}.star" for m in mics)  # one file each, no temp
    reference = read_coords(out / "picks" / f"{mics[-1].stem}.star")
    for m in mics:  # same image under 40 names -> 40 identical pick sets, redone one included
        xy, scores = read_coords(out / "picks" / f"{m.stem}.star")
        np.testing.assert_allclose(xy, reference[0])
        np.testing.assert_allclose(scores, reference[1], atol=2e-3)


def test_index_and_merged_star_round_trip_and_settings_change_redoes(
    sim_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    import starfile

    mics = sorted((sim_data / "micrographs").glob("*.mrc"))
    out = tmp_path / "out"
    for fmt in ("star", "box"):
        summary = run_batch(tiny_model, mics, out, BatchConfig(format=fmt), "local", progress=False)
        assert (summary.picked, summary.skipped) == (len(mics), 0)  # new format: everything redone
        index = starfile.read(out / "coordinate_files.star", always_dict=True)["coordinate_files"]
        assert list(index["rlnMicrographName"]) == [str(m) for m in mics]
        star = starfile.read(out / "particles.star", always_dict=True)
        merged = star["particles"]
        assert list(merged.columns) == ["rlnCoordinateX", "rlnCoordinateY", "rlnMicrographName",
                                        "rlnAutopickFigureOfMerit", "rlnOpticsGroup"]  # the headers give the pixel size
        assert list(star["optics"]["rlnOpticsGroupName"]) == ["opticsGroup1"]
        assert len(merged) == summary.particles > 0
        for mic, coords in zip(index["rlnMicrographName"], index["rlnMicrographCoordinates"]):
            assert Path(coords).suffix == f".{fmt}"
            xy, scores = read_coords(coords)
            rows = merged[merged["rlnMicrographName"] == mic]
            np.testing.assert_allclose(rows[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(), xy, atol=0.01)
            if fmt == "star":
                np.testing.assert_allclose(rows["rlnAutopickFigureOfMerit"].to_numpy(), scores, atol=1e-5)
    again = run_batch(tiny_model, mics, out, BatchConfig(format="box"), "local", progress=False)
    assert (again.picked, again.skipped) == (0, len(mics))
    for amp in (True, False):  # the precision is the machine's, as the device is: nothing is redone
        other = run_batch(tiny_model, mics, out, batch_config({"format": "box", "pick": {"amp": amp}}), "local", progress=False)
        assert (other.picked, other.skipped) == (0, len(mics))
    empty = run_batch(tiny_model, mics, out, batch_config({"format": "box", "pick": {"threshold": 1.0}}),
                         "local", progress=False)
    assert (empty.picked, empty.particles) == (len(mics), 0)
    assert starfile.read(out / "particles.star", always_dict=True)["particles"].empty


def test_out_of_memory_halves_tile_batch_then_fails_alone(
    sim_data: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cryopick.inference.picker

    real = cryopick.inference.picker.predict_heatmap
    seen: list[int] = []

    def flaky(model, image, cfg):  # noqa: ANN001, ANN202 - stands in for predict_heatmap
        seen.append(cfg.tile_batch)
        if cfg.tile_batch > limit:
            raise MemoryError("cannot allocate tile batch")
        return real(model, image, cfg)

    monkeypatch.setattr(cryopick.inference.picker, "predict_heatmap", flaky)
    picker = MicrographPicker(tiny_model, BatchConfig(), tmp_path / "out", "fp")
    mic = sim_data / "micrographs" / "sim_0001.mrc"
    limit = 1
    row = picker.process(mic)
    assert row["status"] == "picked" and row["n_picks"] > 0 and seen == [4, 2, 1]
    limit = 0
    row = picker.process(sim_data / "micrographs" / "sim_0002.mrc")
    assert row["status"] == "failed" and "out of memory even with tile_batch=1" in row["reason"]
    assert not (tmp_path / "out" / "picks" / "sim_0002.star").exists()


def test_config_and_inputs_are_checked_before_any_work(tiny_model: Path, sim_data: Path, tmp_path: Path) -> None:
    with pytest.raises(CryopickError, match=r"campaign\.workers must be of type int"):
        batch_config({"workers": "two"})
    with pytest.raises(CryopickError, match=r"unknown config key campaign\.bogus"):
        batch_config({"bogus": 1})
    with pytest.raises(CryopickError, match=r"campaign\.mask\.max_sigma must be positive"):
        batch_config({"mask": {"max_sigma": -1}})
    with pytest.raises(CryopickError, match=r"campaign\.format must be one of"):
        batch_config({"format": "xml"})
    bad_yaml = tmp_path / "c.yaml"
    bad_yaml.write_text("campaign:\n  batch_size: 0\n")
    out = tmp_path / "never"
    mic = str(sim_data / "micrographs" / "sim_0000.mrc")
    assert cli(["campaign", "--config", str(bad_yaml), "--model", str(tiny_model), "--micrographs", mic,
                "--out", str(out)]) == 2
    assert cli(["campaign", "--model", str(tmp_path / "nomodel"), "--micrographs", mic, "--out", str(out)]) == 2
    assert not out.exists()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "sim_0000.mrc").write_bytes(Path(mic).read_bytes())
    with pytest.raises(CryopickError, match="share the name 'sim_0000'"):
        run_batch(tiny_model, [Path(mic), tmp_path / "a" / "sim_0000.mrc"], out, BatchConfig(), "local")


def test_pick_cpu_config_and_pipeline_help(tiny_model: Path, sim_data: Path, tmp_path: Path) -> None:
    import argparse

    from cryopick.cli.campaign import add_args, resolve

    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser()
    add_args(parser)
    args = parser.parse_args(["--config", str(repo / "pipelines/configs/pick_cpu.yaml"), "--model", str(tiny_model),
                              "--micrographs", str(sim_data / "micrographs"), "--out", str(tmp_path / "o")])
    model, mics, out, cfg, engine = resolve(args)
    assert engine == "ray" and cfg.mask.enabled and cfg.cpus_per_worker == 0.5 and len(mics) == 4
    res = subprocess.run([sys.executable, str(repo / "pipelines/pick.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "--config" in res.stdout and "ray job submit" in res.stdout
