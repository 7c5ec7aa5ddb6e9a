"""Nothing silently wrong: configs, concurrent runs, permissions, interrupted runs and the last tracebacks.

Each test fails without its fix (the issue that listed them: a hostile new user's bad files, bad configs,
kills and two runs at once).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import starfile

from campaign_support import train_tiny_model
from cryopick.cli.__main__ import main as cli
from cryopick.errors import CryopickError
from cryopick.io.lock import OutputLock


@pytest.fixture(scope="module")
def tiny_model(sim_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_model(sim_data, tmp_path_factory.mktemp("tiny_model_rel"))


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = cli(argv)
    err = capsys.readouterr().err
    return rc, err


# 1. a selftrain config is never silently replaced by simulated data

def test_selftrain_data_without_labeled_is_an_error_not_a_simulation(tmp_path: Path, sim_data: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  unlabeled: [{sim_data / 'micrographs'}]\n  coords: {sim_data / 'coords'}\n  diameter: 180\n")
    out = tmp_path / "camp"
    rc, err = _run(["selftrain", "--config", str(cfg), "--out", str(out)], capsys)
    assert rc == 2 and "data.labeled lists no micrographs" in err
    assert not (out / "data").exists() and not (out / "campaign.json").exists()


@pytest.mark.parametrize(("yaml", "message"), [
    ("dta:\n  labeled: []\n", "unknown config key dta"),
    ("data:\n  diameter: '24px'\n", "data.diameter must be of type float"),
])
def test_selftrain_bad_config_fails_before_anything_is_written(tmp_path: Path, yaml: str, message: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml)
    out = tmp_path / "camp"
    rc, err = _run(["selftrain", "--config", str(cfg), "--out", str(out)], capsys)
    assert rc == 2 and message in err
    assert not out.exists()


# 2. one writer per output directory

def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path, tiny_model: Path, sim_data: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "picks"
    with OutputLock(out):
        rc, err = _run(["campaign", "--model", str(tiny_model), "--micrographs", str(sim_data / "micrographs"),
                        "--out", str(out), "--local", "--quiet"], capsys)
        assert rc == 2 and "in use by another cryopick run" in err
        assert f"pid {os.getpid()} on {socket.gethostname()}" in err
        assert sorted(p.name for p in out.iterdir()) == [".cryopick.lock"]  # nothing else written
        with pytest.raises(CryopickError, match="in use"):
            with OutputLock(out):
                pass
    with OutputLock(out):  # released: free again
        pass


def test_a_dead_holders_lock_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from pathlib import Path; "
            "from cryopick.io.lock import OutputLock; l = OutputLock(Path(sys.argv[1])).__enter__(); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out), str(Path(__file__).parents[1] / "platform")],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    with pytest.raises(CryopickError, match=f"pid {proc.pid}"):
        OutputLock(out).__enter__()
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel frees the lock
    proc.wait(10)
    with OutputLock(out):
        assert json.loads((out / ".cryopick.lock").read_text())["pid"] == os.getpid()


# 3. two micrographs with one stem

def test_pick_refuses_two_micrographs_with_one_stem(tmp_path: Path, tiny_model: Path, sim_data: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "mic.mrc").write_bytes((sim_data / "micrographs" / "sim_0000.mrc").read_bytes())
    out = tmp_path / "out"
    rc, err = _run(["pick", "--model", str(tiny_model), "--micrographs", str(tmp_path / "a" / "mic.mrc"),
                    str(tmp_path / "b" / "mic.mrc"), "--out", str(out), "--quiet"], capsys)
    assert rc == 2 and "share the name 'mic'" in err and not out.exists()


# 4. outputs respect the umask

@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_respect_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    from cryopick.io import atomic

    old = os.umask(umask)
    atomic._umask.cache_clear()
    try:
        atomic.write_text_atomic(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
        atomic._umask.cache_clear()
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == mode


# 5. the last tracebacks

def test_non_numeric_star_coordinates_are_one_line(tmp_path: Path, sim_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "coords").mkdir()
    (tmp_path / "coords" / "sim_0000.star").write_text("data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\nabc 10\n20 30\n")
    rc, err = _run(["train", "--micrographs", str(sim_data / "micrographs" / "sim_0000.mrc"), "--coords", str(tmp_path / "coords"),
                    "--diameter", "24", "--out", str(tmp_path / "run"), "--steps", "2", "--quiet"], capsys)
    assert rc == 2 and "sim_0000.star: coordinate columns hold non-numeric values" in err
    (tmp_path / "picks").mkdir()
    (tmp_path / "picks" / "sim_0000.star").write_text("data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 2\n")
    rc, err = _run(["evaluate", "--picks", str(tmp_path / "picks"), "--truth", str(tmp_path / "coords"), "--diameter", "24"], capsys)
    assert rc == 2 and "non-numeric" in err and "Traceback" not in err


def test_pick_out_naming_a_file_and_a_missing_gpu(tmp_path: Path, tiny_model: Path, sim_data: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    mic = str(sim_data / "micrographs" / "sim_0000.mrc")
    (tmp_path / "afile").write_text("keep me")
    rc, err = _run(["pick", "--model", str(tiny_model), "--micrographs", mic, "--out", str(tmp_path / "afile"), "--quiet"], capsys)
    assert rc == 2 and "is a file, not a directory" in err and (tmp_path / "afile").read_text() == "keep me"
    rc, err = _run(["pick", "--model", str(tiny_model), "--micrographs", mic, "--out", str(tmp_path / "o"), "--device", "cuda:99",
                    "--quiet"], capsys)
    assert rc == 2 and "cuda:99" in err and len(err.strip().splitlines()) == 1


# 6. a killed re-train leaves the previous run whole

def test_an_interrupted_retrain_keeps_the_previous_run(tmp_path: Path, sim_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = train_tiny_model(sim_data, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert {"model.pt", "config.json", "history.csv"} <= set(before)
    import cryopick.training.run as train_run

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # stands in for a kill in the middle of training

    monkeypatch.setattr(train_run, "train_picker", killed)
    with pytest.raises(AssertionError):
        train_tiny_model(sim_data, run)  # exits 130, not 0
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert after == before  # the previous run, untouched
    assert json.loads((run / ".partial" / "config.json").read_text()).get("result") is None  # the attempt, marked incomplete
    monkeypatch.undo()
    train_tiny_model(sim_data, run)  # a finished re-train replaces it and clears the attempt
    assert "result" in json.loads((run / "config.json").read_text()) and not (run / ".partial").exists()


# 7. duplicate expert picks

def test_duplicate_expert_picks_are_removed_with_a_warning(tmp_path: Path, sim_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryopick.config import PreprocessConfig
    from cryopick.io.coords import read_coords, write_coords
    from cryopick.training.dataset import load_labeled

    xy, _ = read_coords(sim_data / "coords" / "sim_0000.star")
    write_coords(tmp_path / "sim_0000.star", np.vstack([xy, xy[:5] + 0.5]))
    lm = load_labeled(sim_data / "micrographs" / "sim_0000.mrc", tmp_path, 24.0, PreprocessConfig())
    assert len(lm.xy) == len(xy)
    assert "sim_0000.star: 5 duplicate pick(s)" in capsys.readouterr().err


# 8. a missing file in a manifest is a failure row, not an abort

def test_a_missing_listed_micrograph_is_a_failure_row(tmp_path: Path, tiny_model: Path, sim_data: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "mics.txt"
    manifest.write_text(f"{sim_data / 'micrographs' / 'sim_0000.mrc'}\n{tmp_path / 'gone.mrc'}\n")
    out = tmp_path / "out"
    rc, _ = _run(["campaign", "--model", str(tiny_model), "--micrographs", str(manifest), "--out", str(out), "--local", "--quiet"],
                 capsys)
    assert rc == 1
    failures = (out / "failures.tsv").read_text()
    assert "gone.mrc\tno such micrograph file" in failures and (out / "picks" / "sim_0000.star").is_file()


# minor: evaluate says what it left out; --workers 0; RELION optics block

def test_evaluate_reports_what_it_left_out(tmp_path: Path, sim_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "picks").mkdir()
    for stem in ("sim_0000", "extra"):
        (tmp_path / "picks" / f"{stem}.star").write_bytes((sim_data / "coords" / "sim_0000.star").read_bytes())
    argv = ["evaluate", "--picks", str(tmp_path / "picks"), "--truth", str(sim_data / "coords"), "--diameter", "24"]
    assert cli([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_scored"] == 1 and out["picks_without_truth"] == ["extra"] and "sim_0001" in out["truth_without_picks"]
    rc, err = _run(["evaluate", "--picks", str(tmp_path / "picks" / "extra.star"), "--truth", str(sim_data / "coords"),
                    "--diameter", "24"], capsys)
    assert rc == 2 and "is a file" in err


def test_campaign_workers_zero_and_the_optics_block(tmp_path: Path, tiny_model: Path, sim_data: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    base = ["campaign", "--model", str(tiny_model), "--micrographs", str(sim_data / "micrographs" / "sim_0000.mrc"),
            "--out", str(tmp_path / "o"), "--quiet"]
    rc, err = _run([*base, "--workers", "0"], capsys)
    assert rc == 2 and "--workers must be at least 1" in err
    assert cli([*base, "--local", "--pixel-size", "1.5"]) == 0
    star = starfile.read(tmp_path / "o" / "particles.star", always_dict=True)
    assert float(star["optics"]["rlnMicrographPixelSize"].iloc[0]) == 1.5
    assert (star["particles"]["rlnOpticsGroup"] == 1).all() and len(star["particles"]) > 0


# 9. no orphans after SIGTERM

def test_dashboard_sigterm_stops_streamlit(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cryopick.cli.__main__", "dashboard", "--port", str(port),
                             "--tracking-uri", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the dashboard never listened")
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # Streamlit is gone and the port is free
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.3)
    pytest.fail(f"port {port} still served after SIGTERM: Streamlit was orphaned")


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_a_killed_driver_leaves_no_local_ray_behind() -> None:
    """SIGKILL gives a driver no chance to shut its local Ray down: connect()'s watchdog does it."""
    code = ("from cryopick.distributed.connect import connect; connect(num_cpus=1, quiet=True); "
            "import ray, os, time; print(ray.get_runtime_context().get_node_id(), flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.stdout is not None and proc.stdout.readline().strip()

    def session_pids() -> set[int]:  # the driver's Ray: its GCS and raylet and their children
        rows = [line.split(None, 2) for line in subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True,
                                                                 text=True).stdout.splitlines()[1:]]
        tree = {int(pid) for pid, ppid, _ in rows if int(ppid) == proc.pid}
        tree |= {int(pid) for pid, ppid, _ in rows if int(ppid) in tree}
        return tree

    time.sleep(2)
    before = session_pids()
    assert len(before) >= 3  # gcs_server, raylet, watchdog, agents
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(running(pid) for pid in before):
        time.sleep(0.5)
    alive = [pid for pid in before if running(pid)]
    assert not alive, f"processes of the killed driver's Ray still running: {alive}"


def test_train_and_selftrain_refuse_a_directory_in_use(tmp_path: Path, sim_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryopick.distributed.orchestrator import run_campaign
    from cryopick.selftrain.config import load_config

    run = tmp_path / "run"
    with OutputLock(run):
        rc, err = _run(["train", "--micrographs", str(sim_data / "micrographs" / "sim_0000.mrc"), "--coords", str(sim_data / "coords"),
                        "--diameter", "24", "--out", str(run), "--steps", "2", "--quiet"], capsys)
    assert rc == 2 and "in use by another cryopick run" in err and not (run / "config.json").exists()
    split = json.loads((sim_data / "split.json").read_text())
    mic = lambda names: [str(sim_data / "micrographs" / f"{n}.mrc") for n in names]  # noqa: E731
    cfg = load_config(None, {"out": str(tmp_path / "camp"), "data.labeled": mic(split["labeled"]), "data.coords": str(sim_data / "coords"),
                             "data.diameter": 24.0})
    with OutputLock(cfg.campaign_dir), pytest.raises(CryopickError, match="in use"):
        run_campaign(cfg, progress=False)  # refused before Ray starts or anything is written
    assert sorted(p.name for p in cfg.campaign_dir.iterdir()) == [".cryopick.lock"]
