"""The real CLI on simulated and on the shared EMPIAR-10017 micrographs, checking numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryopick.inference.border import edge_distance
from cryopick.cli.__main__ import main
from cryopick.io.coords import read_coords, write_coords
from cryopick.inference.picker import load_picker
from conftest import DIAMETER, mic_paths


def cli(argv: list[object]) -> int:
    return main([str(a) for a in argv])


def cli_json(argv: list[object], capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert cli(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def sim_run(sim_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained by `cryopick train` on two simulated micrographs (binned 2x)."""
    run = tmp_path_factory.mktemp("sim_run")
    mics = mic_paths(sim_data, ["sim_0000", "sim_0001"])
    assert cli(["train", "--micrographs", *mics, "--coords", sim_data / "coords", "--diameter", 24, "--out", run, "--bin", 2,
                "--width", 8, "--steps", 150, "--patch-size", 64, "--val-every", 50, "--quiet", "--seed", 1]) == 0
    return run


def test_train_writes_model_config_and_history(sim_run: Path) -> None:
    config = json.loads((sim_run / "config.json").read_text())
    assert config["diameter"] == 24 and config["model"]["base_width"] == 8
    assert config["labels"] == "auto"  # simulated picks are complete: no sparse message, plain F1
    assert config["result"]["sparse_labels"] is False and config["result"]["picked_share"] >= 0.6
    assert config["result"]["val_f1"] > 0.5 and 0.0 < config["result"]["threshold"] < 1.0
    history = (sim_run / "history.csv").read_text().splitlines()
    assert history[0].startswith("step") and len(history) == 4  # header + validation every 50 of 150 steps
    _, meta = load_picker(sim_run)
    assert meta.threshold == pytest.approx(config["result"]["threshold"])
    assert (sim_run / "val_pr.png").stat().st_size > 1000


@pytest.mark.parametrize(("flag", "amp"), [([], None), (["--amp"], True), (["--no-amp"], False)])
def test_train_amp_flag_is_the_train_setting(flag: list[str], amp: bool | None, tmp_path: Path) -> None:
    """`--amp` / `--no-amp` set train.amp, the key campaigns read too (None: bfloat16 where the hardware runs it natively)."""
    from cryopick.cli.__main__ import build_parser
    from cryopick.cli.train import resolve_configs

    args = build_parser().parse_args(["train", "--micrographs", "m.mrc", "--coords", "c", "--diameter", "24",
                                      "--out", str(tmp_path), *flag])
    assert resolve_configs(args)[2].amp is amp


@pytest.mark.parametrize(("flag", "amp"), [([], None), (["--amp"], True), (["--no-amp"], False)])
def test_pick_amp_flag_sets_the_heatmap_precision(flag: list[str], amp: bool | None) -> None:
    """`cryopick pick` takes the same default as training: bfloat16 where the hardware runs it natively."""
    from cryopick.cli.__main__ import build_parser
    from cryopick.cli.pick import pick_config

    args = build_parser().parse_args(["pick", "--model", "m", "--micrographs", "m.mrc", "--out", "o", *flag])
    assert pick_config(args).amp is amp


@pytest.mark.parametrize("fmt", ["star", "box", "csv", "txt"])
def test_pick_every_format_scores_the_same(sim_run: Path, sim_data: Path, tmp_path: Path, fmt: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    mics = mic_paths(sim_data, ["sim_0002", "sim_0003"])
    assert cli(["pick", "--model", sim_run, "--micrographs", *mics, "--out", tmp_path, "--format", fmt,
                "--threshold", 0.05, "--quiet"]) == 0
    result = cli_json(["evaluate", "--picks", tmp_path, "--truth", sim_data / "coords", "--diameter", 24, "--json"], capsys)
    assert set(result) >= {"precision", "recall", "f1", "average_precision", "n_picks", "n_true", "best_f1", "best_threshold"}
    assert result["n_true"] == sum(len(read_coords(sim_data / "coords" / f"{m.stem}.star")[0]) for m in mics)
    # picks come back in ORIGINAL pixels (the model ran on 2x-binned images): they match the truth
    assert result["best_f1"] > 0.8, result
    assert result["recall"] >= result["best_f1"] - 0.05  # a low threshold keeps the weak picks


def test_pick_defaults_heatmaps_and_boxes(sim_run: Path, sim_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mic = mic_paths(sim_data, ["sim_0003"])[0]
    assert cli(["pick", "--model", sim_run, "--micrographs", mic, "--out", tmp_path, "--save-heatmaps", "--boxes", "--quiet"]) == 0
    config = json.loads((tmp_path / "pick_config.json").read_text())
    assert config["model_meta"]["diameter"] == 24
    from cryopick.runtime import bf16_is_fast

    assert config["pick"]["amp"] is bf16_is_fast("cpu")  # the precision used, resolved from the default
    from cryopick.io.micrograph import read_micrograph

    heat = read_micrograph(tmp_path / "heatmaps" / "sim_0003.mrc").data
    assert heat.shape == (128, 128) and 0.0 <= heat.min() and heat.max() <= 1.0
    xy, scores = read_coords(tmp_path / "sim_0003.star")
    _, meta = load_picker(sim_run)
    assert len(xy) > 10 and scores.min() >= meta.threshold - 1e-6  # the stored threshold is the default
    d = np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1)) + np.eye(len(xy)) * 1e9
    assert d.min() >= meta.resolved_min_distance() - 1e-6
    # the edge band the training picks left empty is stored and honoured by default
    truth = np.concatenate([read_coords(sim_data / "coords" / f"sim_000{i}.star")[0] for i in (0, 1)])
    assert 0.0 < meta.border <= edge_distance(truth, (256, 256)).min()
    assert edge_distance(xy, (256, 256)).min() >= meta.border
    assert json.loads((sim_run / "config.json").read_text())["result"]["border"] == pytest.approx(meta.border)
    assert (tmp_path / "sim_0003_boxes.csv").read_text().startswith("x0,y0,x1,y1")
    result = cli_json(["evaluate", "--picks", tmp_path, "--truth", sim_data / "coords", "--diameter", 24, "--json",
                       "--plots", tmp_path / "plots", "--micrographs", sim_data / "micrographs"], capsys)
    assert result["f1"] > 0.75, result
    assert (tmp_path / "plots" / "pr_curve.png").is_file()
    assert (tmp_path / "plots" / "overlay_sim_0003.png").stat().st_size > 1000


def test_evaluate_hand_cases_on_real_expert_picks(empiar: Path, split: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    names = split["test"][:2]
    picks = tmp_path / "picks"
    picks.mkdir()
    n_true = 0
    for name in names:
        xy, _ = read_coords(empiar / "coords" / f"{name}.star")
        n_true += len(xy)
        keep = xy[::2] + np.array([3.0, -4.0])  # half of them, 5 px off (inside the 13.5 px radius)
        far = xy[:10] + np.array([30.0, 0.0])  # ten 30 px off: false positives (if not near another)
        write_coords(picks / f"{name}.star", np.vstack([keep, far]), np.r_[np.ones(len(keep)), np.full(10, 0.1)])
    full = cli_json(["evaluate", "--picks", empiar / "coords", "--truth", empiar / "coords", "--diameter", DIAMETER, "--json"], capsys)
    assert full["f1"] == 1.0 and full["n_true"] == full["n_picks"]
    res = cli_json(["evaluate", "--picks", picks, "--truth", empiar / "coords", "--diameter", DIAMETER, "--json",
                    "--threshold", 0.5], capsys)
    n_keep = sum((len(read_coords(empiar / "coords" / f"{n}.star")[0]) + 1) // 2 for n in names)
    assert res["n_true"] == n_true and res["n_picks"] == n_keep
    assert res["precision"] == 1.0 and res["recall"] == pytest.approx(n_keep / n_true)


@pytest.mark.slow
def test_train_pick_evaluate_on_real_micrographs(empiar: Path, split: dict, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A short real training run: 2 labeled micrographs, 4x binned, must clearly beat chance."""
    run = tmp_path / "run"
    assert cli(["train", "--micrographs", *mic_paths(empiar, split["labeled"][:2]), "--coords", empiar / "coords",
                "--diameter", DIAMETER, "--out", run, "--bin", 4, "--width", 8, "--steps", 120, "--patch-size", 64,
                "--val-every", 40, "--quiet", "--threads", 2]) == 0
    picks = tmp_path / "picks"
    assert cli(["pick", "--model", run, "--micrographs", *mic_paths(empiar, split["test"][:2]), "--out", picks,
                "--threshold", 0.05, "--quiet"]) == 0
    res = cli_json(["evaluate", "--picks", picks, "--truth", empiar / "coords", "--diameter", DIAMETER, "--json"], capsys)
    xy, _ = read_coords(picks / f"{split['test'][0]}.star")
    assert xy[:, 0].max() > 600 and xy[:, 1].max() > 600  # original 1024² pixels, not the 256² binned grid
    assert res["best_f1"] > 0.6, res
    result = json.loads((run / "config.json").read_text())["result"]
    assert result["sparse_labels"] is False and result["picked_share"] >= 0.6, result


@pytest.mark.slow
def test_train_judges_a_tenth_of_real_picks_sparse(empiar: Path, split: dict, tmp_path: Path) -> None:
    """A seeded 10 % of the expert's picks on the same two micrographs: `--labels auto` judges them sparse
    (the model's probability at the held-back picks reads about the picked share; the complete run above, 0.6+)."""
    coords = tmp_path / "coords"
    coords.mkdir()
    rng = np.random.default_rng(0)
    for name in split["labeled"][:2]:
        xy, _ = read_coords(empiar / "coords" / f"{name}.star")
        write_coords(coords / f"{name}.star", xy[rng.random(len(xy)) < 0.1])
    run = tmp_path / "run"
    assert cli(["train", "--micrographs", *mic_paths(empiar, split["labeled"][:2]), "--coords", coords,
                "--diameter", DIAMETER, "--out", run, "--bin", 4, "--width", 8, "--steps", 120, "--patch-size", 64,
                "--val-every", 40, "--quiet", "--threads", 2]) == 0
    result = json.loads((run / "config.json").read_text())["result"]
    assert result["sparse_labels"] is True and result["picked_share"] < 0.6, result
    assert result["unpicked_prior"] is None  # the share is unknown before training: unpicked pixels are background

    # the user says how many particles a micrograph holds: the share is known, unpicked pixels are positive-unlabeled
    pu = tmp_path / "pu"
    assert cli(["train", "--micrographs", *mic_paths(empiar, split["labeled"][:2]), "--coords", coords,
                "--diameter", DIAMETER, "--out", pu, "--bin", 4, "--width", 8, "--steps", 120, "--patch-size", 64,
                "--val-every", 40, "--quiet", "--threads", 2, "--expected-particles", 600]) == 0
    config = json.loads((pu / "config.json").read_text())
    picks = sum(len(read_coords(coords / f"{n}.star")[0]) for n in split["labeled"][:2]) / 2
    assert config["expected_particles"] == 600 and config["labels"] == "sparse"
    assert config["result"]["picked_share"] == pytest.approx(picks / 600) and 0 < config["result"]["unpicked_prior"] < 0.5
    # the unpicked particles of a training micrograph: the PU model finds more of them than the background-taught one
    found = {}
    for name, rundir in (("background", run), ("pu", pu)):
        out = tmp_path / f"picks_{name}"
        assert cli(["pick", "--model", rundir, "--micrographs", *mic_paths(empiar, split["labeled"][:1]), "--out", out,
                    "--threshold", 0.3, "--quiet"]) == 0
        xy, _ = read_coords(out / f"{split['labeled'][0]}.star")
        truth, _ = read_coords(empiar / "coords" / f"{split['labeled'][0]}.star")
        picked, _ = read_coords(coords / f"{split['labeled'][0]}.star")
        unpicked = truth[np.min(np.linalg.norm(truth[:, None] - picked[None], axis=2), axis=1) > 1.0]
        near = np.min(np.linalg.norm(unpicked[:, None] - xy[None], axis=2), axis=1) < DIAMETER / 2 if len(xy) else np.zeros(0)
        found[name] = float(np.mean(near)) if len(xy) else 0.0
    assert found["pu"] > found["background"] + 0.1, found
