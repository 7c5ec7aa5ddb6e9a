"""Every bad input through the real CLI: one line naming the file, exit code 2, nothing damaged."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryopick.cli.__main__ import main
from cryopick.io.coords import write_coords

RNG = np.random.default_rng(5)


def _mrc(path: Path, data: np.ndarray) -> Path:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
    return path


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "mics").mkdir()
    (tmp_path / "coords").mkdir()
    _mrc(tmp_path / "mics" / "good.mrc", RNG.normal(size=(128, 128)).astype(np.float32))
    write_coords(tmp_path / "coords" / "good.star", np.array([[40.0, 40.0], [90.0, 70.0]]))
    return tmp_path


def _truncate(p: Path) -> None:
    _mrc(p, RNG.normal(size=(128, 128)).astype(np.float32))
    p.write_bytes(p.read_bytes()[:3000])


BAD_MICROGRAPHS: dict[str, tuple[Callable[[Path], object], str]] = {
    "missing": (lambda p: None, "no such micrograph file"),
    "truncated": (_truncate, "not a readable MRC file"),
    "not-mrc": (lambda p: p.write_text("hello, I am a text file\n" * 50), "not a readable MRC file"),
    "nan": (lambda p: _mrc(p, np.full((128, 128), np.nan, np.float32)), "NaN"),
}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("kind", sorted(BAD_MICROGRAPHS))
def test_train_on_bad_micrograph(workdir: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    make, message = BAD_MICROGRAPHS[kind]
    bad = workdir / "mics" / "bad.mrc"
    make(bad)
    write_coords(workdir / "coords" / "bad.star", np.array([[30.0, 30.0]]))
    code, err = run_cli(["train", "--micrographs", workdir / "mics" / "good.mrc", bad, "--coords",
                         workdir / "coords", "--diameter", 20, "--out", workdir / "run", "--quiet"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and str(bad) in err and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "coords, message",
    [
        ([[30.0, 30.0], [500.0, 20.0]], "outside the 128x128 micrograph"),
        ([], "coordinate file is empty"),
    ],
    ids=["outside", "empty"],
)
def test_train_on_bad_coordinates(workdir: Path, coords: list, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_coords(workdir / "coords" / "good.star", np.array(coords).reshape(-1, 2))
    code, err = run_cli(["train", "--micrographs", workdir / "mics" / "good.mrc", "--coords", workdir / "coords",
                         "--diameter", 20, "--out", workdir / "run", "--quiet"], capsys)
    assert code == 2 and str(path) in err and message in err and err.count("\n") == 1


def test_missing_coordinate_file_and_huge_diameter(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _mrc(workdir / "mics" / "other.mrc", RNG.normal(size=(64, 64)).astype(np.float32))
    code, err = run_cli(["train", "--micrographs", workdir / "mics" / "other.mrc", "--coords", workdir / "coords",
                         "--diameter", 20, "--out", workdir / "run", "--quiet"], capsys)
    assert code == 2 and "no coordinate file for micrograph other.mrc" in err
    code, err = run_cli(["train", "--micrographs", workdir / "mics" / "good.mrc", "--coords", workdir / "coords",
                         "--diameter", 300, "--out", workdir / "run", "--quiet"], capsys)
    assert code == 2 and "good.mrc" in err and "diameter 300 px is larger than the 128x128 micrograph" in err


def test_failed_train_keeps_the_existing_model(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = workdir / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"an earlier model")
    (run / "config.json").write_text("{}")
    write_coords(workdir / "coords" / "good.star", np.array([[30.0, 30.0], [500.0, 20.0]]))
    code, _ = run_cli(["train", "--micrographs", workdir / "mics" / "good.mrc", "--coords", workdir / "coords",
                       "--diameter", 20, "--out", run, "--quiet"], capsys)
    assert code == 2
    assert (run / "model.pt").read_bytes() == b"an earlier model" and (run / "config.json").read_text() == "{}"


def test_pick_errors(workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["pick", "--model", tmp_path / "nowhere", "--micrographs", workdir / "mics" / "good.mrc",
                         "--out", tmp_path / "picks"], capsys)
    assert code == 2 and "nowhere" in err and "no trained model" in err
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"not a checkpoint")
    code, err = run_cli(["pick", "--model", fake, "--micrographs", workdir / "mics" / "good.mrc",
                         "--out", tmp_path / "picks"], capsys)
    assert code == 2 and "not a cryopick model file" in err and "fake.pt" in err
    code, err = run_cli(["evaluate", "--picks", tmp_path / "none", "--truth", workdir / "coords", "--diameter", 20], capsys)
    assert code == 2 and "none" in err


def test_console_script_prints_one_line_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mrc"
    bad.write_bytes(b"\x00" * 1500)
    write_coords(tmp_path / "broken.star", np.array([[5.0, 5.0]]))
    proc = subprocess.run(
        [sys.executable, "-m", "cryopick.cli", "train", "--micrographs", str(bad), "--coords", str(tmp_path),
         "--diameter", "10", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "broken.mrc" in proc.stderr and "Traceback" not in proc.stderr
