"""A 2-round self-training campaign on (cropped) EMPIAR-10017 micrographs: the campaign directory
of docs/dev/contracts.md, per-round metrics in MLflow, and resuming after an interrupted round."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cryopick.io.coords import read_coords, write_coords
from cryopick.io.micrograph import read_micrograph, write_mrc

pytestmark = pytest.mark.ray
CROP = 320  # px of the 1024-px micrographs kept (top-left), to keep 2 CPU cores busy for seconds, not minutes


class Interrupt(Exception):
    """Stands in for a killed driver in the middle of a round."""


def crop_set(empiar: Path, split: dict[str, list[str]], out: Path) -> dict[str, Any]:
    """Top-left CROP x CROP of 1 labeled, 1 unlabeled and 1 test micrograph, with their picks."""
    names = {"labeled": split["labeled"][:1], "unlabeled": split["unlabeled"][:1], "test": split["test"][:1]}
    for group in names.values():
        for n in group:
            m = read_micrograph(empiar / "micrographs" / f"{n}.mrc")
            write_mrc(out / "micrographs" / f"{n}.mrc", m.data[:CROP, :CROP], m.pixel_size)
            xy, _ = read_coords(empiar / "coords" / f"{n}.star")
            write_coords(out / "coords" / f"{n}.star", xy[(xy < CROP - 0.5).all(axis=1)])
    mic = lambda ns: [str(out / "micrographs" / f"{n}.mrc") for n in ns]  # noqa: E731
    return {"data.labeled": mic(names["labeled"]), "data.unlabeled": mic(names["unlabeled"]), "data.test": mic(names["test"]),
            "data.coords": str(out / "coords"), "data.diameter": 27.0}


TINY = {
    "preprocess.bin": 2.0, "model.base_width": 8, "model.depth": 3,
    "train.steps": 20, "train.batch_size": 8, "train.patch_size": 48, "train.val_every": 10, "train.val_fraction": 0.25,
    "selftrain.rounds": 2, "selftrain.patches_per_epoch": 64, "selftrain.method": "offline",  # teacher: test_teacher_round
    "selftrain.min_pseudo_share": 0.0,  # a 20-step model finds few confident particles; round 1 must still train here
    "tune.thresholds": [0.3, 0.6], "tune.min_distance_fractions": [0.5, 0.75],
    "ray.num_workers": 2, "ray.cpu_per_worker": 0.5, "ray.use_gpu": "false",
}


@pytest.fixture(scope="module")
def campaign(ray_session: Any, empiar: Path, split: dict[str, list[str]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run a 2-round campaign that is interrupted after round 1's training, then rerun it."""
    from cryopick.distributed.orchestrator import run_campaign
    from cryopick.selftrain.config import load_config

    root = tmp_path_factory.mktemp("campaign")
    cfg = load_config(None, {**crop_set(empiar, split, root / "data"), **TINY, "out": str(root / "camp")})
    stages: list[tuple[int, str]] = []

    def interrupt(rnd: int, stage: str) -> None:
        stages.append((rnd, stage))
        if (rnd, stage) == (1, "train"):
            raise Interrupt

    with pytest.raises(Interrupt):
        run_campaign(cfg, progress=False, hook=interrupt, log=lambda s: None)
    camp = cfg.campaign_dir
    after_interrupt = {
        "state": json.loads((camp / "state.json").read_text()),
        "round0_metrics_mtime": (camp / "round_000" / "metrics.json").stat().st_mtime_ns,
        "round1_model_mtime": (camp / "round_001" / "model.pt").stat().st_mtime_ns,
        "round1_has_metrics": (camp / "round_001" / "metrics.json").exists(),
    }
    resumed: list[tuple[int, str]] = []
    lines: list[str] = []
    result = run_campaign(cfg, progress=False, hook=lambda r, s: resumed.append((r, s)), log=lines.append)
    return {"cfg": cfg, "dir": camp, "stages": stages, "resumed": resumed, "after": after_interrupt, "result": result, "lines": lines}


@pytest.mark.timeout(420)
def test_two_round_campaign_writes_contract_and_mlflow(campaign: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    camp: Path = campaign["dir"]
    state = json.loads((camp / "state.json").read_text())
    assert state["completed_rounds"] == [0, 1] and state["best_round"] in (0, 1)
    assert state["tracking_uri"] == f"sqlite:///{camp}/mlflow.db" and (camp / "mlflow.db").is_file()
    assert json.loads((camp / "campaign.json").read_text())["train"]["steps"] == 20
    for rnd in (0, 1):
        rdir = camp / f"round_{rnd:03d}"
        for name in ("model.pt", "config.json", "history.csv", "tune.csv", "pr_curve.csv", "metrics.json"):
            assert (rdir / name).is_file(), f"{rdir.name}/{name}"
        assert len((rdir / "tune.csv").read_text().splitlines()) == 1 + 2 * 2  # header + one row per trial
        stem = Path(campaign["cfg"].data.test[0]).stem
        assert (rdir / "picks" / f"{stem}.star").is_file()
        with np.load(rdir / "preview" / f"{stem}.npz") as z:
            assert {"image", "heatmap", "scale", "picks_xy", "picks_score", "truth_xy"} <= set(z.files)
            assert z["heatmap"].dtype == np.float16 and len(z["truth_xy"]) > 50
            n_truth = len(z["truth_xy"])
        m = json.loads((rdir / "metrics.json").read_text())
        assert m["scored_on"] == "test" and 0.0 <= m["f1"] <= 1.0 and m["n_true"] == n_truth
        # the round's labeling suggestions: regions of the unlabeled micrographs, best first
        rows = list(csv.DictReader(open(rdir / "suggestions.csv")))
        unlabeled = {Path(p).stem for p in campaign["cfg"].data.unlabeled}
        assert rows and [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
        assert {r["micrograph"] for r in rows} <= unlabeled and all(r["region"] != "whole" for r in rows)
        assert m["time_suggest_s"] >= 0.0
    # the threshold is count-matched on the unlabeled micrograph: as many picks per expected particle
    # as the validation-best threshold keeps on the validation strip
    from cryopick.inference.picker import load_picker
    from cryopick.selftrain.scoring import load_heatmap, picks_of

    cfg = campaign["cfg"]
    m0 = json.loads((camp / "round_000" / "metrics.json").read_text())
    trial = next(t for t in csv.DictReader(open(camp / "round_000" / "tune.csv"))
                 if float(t["threshold"]) == m0["val_threshold"] and float(t["min_distance"]) == m0["min_distance"])
    per_true = float(trial["recall"]) / float(trial["precision"])
    truth = read_coords(Path(cfg.data.coords) / f"{Path(cfg.data.labeled[0]).stem}.star")[0]
    expected = per_true * len(truth)  # labeled and unlabeled crops have the same area
    unl = load_heatmap(camp / "round_000" / "heatmaps" / f"{Path(cfg.data.unlabeled[0]).stem}.npz",
                       border=load_picker(camp / "round_000")[1].border)
    _, scores = picks_of(unl, 0.02, m0["min_distance"], 1.0)
    assert abs((scores >= m0["threshold"]).sum() - expected) <= 1 or m0["threshold"] == 0.02  # tune.csv rounds P and R
    # round 1 pseudo-labels it from that same heatmap (copied, with its image), not from a second prediction
    with np.load(camp / "round_001" / "pseudo" / f"{Path(cfg.data.unlabeled[0]).stem}.npz") as z:
        assert "image" in z.files and np.array_equal(z["heatmap"], unl.heatmap.astype(z["heatmap"].dtype))
    pseudo = json.loads((camp / "round_001" / "pseudo_labels.json").read_text())
    assert pseudo["n_micrographs"] == 1 and pseudo["positive"] + pseudo["negative"] + pseudo["ignored"] == pytest.approx(1.0)
    share = json.loads((camp / "round_000" / "calibration.json").read_text())["positive_share"]
    assert 0.01 < share < 0.3  # particle share of the expert-labeled validation pixels
    # class balance: background never outweighs particles by more than the expert labels do
    assert pseudo["negative"] <= pseudo["positive"] * (1 - share) / share + 1e-6

    client = MlflowClient(tracking_uri=state["tracking_uri"])
    parent = client.get_run(state["mlflow_parent_run_id"])
    assert parent.data.tags["cryopick.kind"] == "campaign" and parent.data.tags["cryopick.status"] == "finished"
    assert parent.data.tags["cryopick.campaign_dir"] == str(camp)
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "f1")] == [0, 1]
    exp = parent.info.experiment_id
    rounds = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(r.data.tags["cryopick.round"] for r in rounds) == ["0", "1"]  # the interrupted attempt left no duplicate
    for run in rounds:
        rnd = int(run.data.tags["cryopick.round"])
        metrics = json.loads((camp / f"round_{rnd:03d}" / "metrics.json").read_text())
        for key in ("precision", "recall", "f1", "average_precision", "threshold", "val_threshold", "min_distance", "train_loss", "val_f1",
                    "n_picks", "pseudo_positive", "pseudo_negative", "pseudo_ignored", "time_train_s", "time_total_s"):
            assert run.data.metrics[key] == pytest.approx(metrics[key]), key
            assert [h.step for h in client.get_metric_history(run.info.run_id, key)] == [rnd]
        assert run.info.run_name == f"round_{rnd:03d}" and run.data.params["train.steps"] == "20"
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"model", "picks", "pr_curve.csv", "tune.csv", "preview", "metrics.json", "suggestions.csv"} <= arts, arts


@pytest.mark.timeout(60)
def test_rerun_resumes_after_the_interrupted_round(campaign: dict[str, Any]) -> None:
    from cryopick.distributed.orchestrator import run_campaign

    after = campaign["after"]
    assert after["state"]["completed_rounds"] == [0] and not after["round1_has_metrics"]
    assert campaign["stages"][-2:] == [(1, "pseudo"), (1, "train")]
    # the rerun did not redo round 0 nor round 1's finished training; it did finish round 1
    assert all(r == 1 for r, _ in campaign["resumed"])
    assert campaign["resumed"][-1] == (1, "done")
    camp: Path = campaign["dir"]
    assert (camp / "round_000" / "metrics.json").stat().st_mtime_ns == after["round0_metrics_mtime"]
    assert (camp / "round_001" / "model.pt").stat().st_mtime_ns >= after["round1_model_mtime"]
    cfg = json.loads((camp / "round_001" / "config.json").read_text())
    assert cfg["warm_start_from"].endswith("round_000/model.pt")
    assert cfg["result"]["warm_start_floor"] is True  # the same expert labels as round 0: its model is the floor
    assert any("resuming campaign" in line for line in campaign["lines"])
    # a third run finds nothing to do and starts no Ray work
    lines: list[str] = []
    res = run_campaign(campaign["cfg"], progress=False, log=lines.append)
    assert "nothing to do" in lines[-1] and [m["round"] for m in res.rounds] == [0, 1]


@pytest.mark.timeout(240)
def test_a_campaign_can_start_from_an_existing_round0_model(campaign: dict[str, Any], tmp_path: Path) -> None:
    """`selftrain.round0_model`: round 0 is the given picker, scored like a trained one (no training)."""
    from cryopick.distributed.orchestrator import run_campaign
    from cryopick.selftrain.config import load_config

    source = campaign["dir"] / "round_000"
    over = {k: v for k, v in campaign["cfg"].as_dict()["data"].items() if v}
    cfg = load_config(None, {**{f"data.{k}": v for k, v in over.items()}, **TINY, "selftrain.rounds": 1,
                             "selftrain.round0_model": str(source), "out": str(tmp_path / "paired")})
    lines: list[str] = []
    result = run_campaign(cfg, progress=False, log=lines.append)
    mine = json.loads((cfg.campaign_dir / "round_000" / "metrics.json").read_text())
    theirs = json.loads((source / "metrics.json").read_text())
    # the same weights on the same micrographs: the same heatmaps, Tune choice and scores
    for key in ("f1", "precision", "recall", "val_f1", "threshold", "min_distance", "n_picks"):
        assert mine[key] == pytest.approx(theirs[key]), key
    assert mine["time_train_s"] < 5.0 and [m["round"] for m in result.rounds] == [0]
    written = json.loads((cfg.campaign_dir / "round_000" / "config.json").read_text())
    assert written["adopted_from"] == str(source.resolve())
    assert not any("validation" in line and "optimistic" in line for line in lines)  # same strips: nothing seen
    assert not (cfg.campaign_dir / "ray_results" / f"{cfg.name}_round_000").exists()  # no Ray Train run


@pytest.mark.timeout(300)
def test_a_round_without_pseudo_labeled_particles_keeps_the_model_and_stops(campaign: dict[str, Any], tmp_path: Path) -> None:
    """Too few pseudo-labeled particles (none: p > 1 never holds): round 1 keeps round 0's model, untrained,
    scores as round 0 did, and the campaign stops although 3 rounds were asked for."""
    from cryopick.distributed.orchestrator import run_campaign
    from cryopick.selftrain.config import load_config

    source = campaign["dir"] / "round_000"
    over = {k: v for k, v in campaign["cfg"].as_dict()["data"].items() if v}
    cfg = load_config(None, {**{f"data.{k}": v for k, v in over.items()}, **TINY, "selftrain.rounds": 3,
                             "selftrain.positive": 1.0, "selftrain.min_pseudo_share": 0.1,
                             "selftrain.round0_model": str(source), "out": str(tmp_path / "starved")})
    lines: list[str] = []
    result = run_campaign(cfg, progress=False, log=lines.append)
    camp = cfg.campaign_dir
    assert [m["round"] for m in result.rounds] == [0, 1]
    assert result.stopped.startswith("round 1: pseudo-labels mark 0.00% of the unlabeled pixels")
    assert "keeps round 0's model" in result.stopped and "selftrain.positive" in result.stopped
    r0, r1 = (json.loads((camp / f"round_00{r}" / "metrics.json").read_text()) for r in (0, 1))
    for key in ("f1", "precision", "recall", "val_f1", "threshold", "min_distance", "n_picks"):
        assert r1[key] == pytest.approx(r0[key]), key
    assert r1["pseudo_positive"] == 0.0 and "keeps round 0's model" in r1["stop"]
    kept = json.loads((camp / "round_001" / "config.json").read_text())
    assert kept["result"]["kept_previous"] and kept["kept_from"] == str((camp / "round_000").resolve())
    assert not (camp / "ray_results" / f"{cfg.name}_round_001").exists()  # no Ray Train run
    assert "note" in json.loads((camp / "round_001" / "pseudo_labels.json").read_text())
    assert json.loads((camp / "state.json").read_text())["stopped"] == result.stopped
    # a rerun finds the campaign complete: the stop is read back from round 1's metrics.json
    again: list[str] = []
    assert [m["round"] for m in run_campaign(cfg, progress=False, log=again.append).rounds] == [0, 1]
    assert "nothing to do" in again[-1]


@pytest.mark.timeout(240)
def test_teacher_round_trains_online_against_an_ema_teacher_with_sparse_labels(campaign: dict[str, Any], tmp_path: Path) -> None:
    """Round 1 with the default method: no offline pseudo-labels; 2 DDP workers train a student against the EMA
    teacher's labels of the unlabeled patches and of the unpicked pixels of the (sparse) labeled micrograph; the
    round writes everything a round writes, and what the teacher labeled is logged."""
    from mlflow.tracking import MlflowClient

    from cryopick.distributed.orchestrator import run_campaign
    from cryopick.selftrain.config import load_config

    source = campaign["dir"] / "round_000"
    over = {k: v for k, v in campaign["cfg"].as_dict()["data"].items() if v}
    cfg = load_config(None, {**{f"data.{k}": v for k, v in over.items()}, **TINY, "selftrain.method": "teacher",
                             "selftrain.labels": "sparse", "selftrain.positive": 0.5, "selftrain.negative": 0.2,
                             "selftrain.round0_model": str(source), "out": str(tmp_path / "teacher")})
    result = run_campaign(cfg, progress=False, log=lambda s: None)
    camp = cfg.campaign_dir
    assert [m["round"] for m in result.rounds] == [0, 1] and result.stopped is not None
    rdir = camp / "round_001"
    trained = json.loads((rdir / "config.json").read_text())
    assert trained["result"]["method"] == "teacher" and trained["result"]["sparse_labels"] is True
    assert not (rdir / "pseudo").exists() and not (rdir / "pseudo_labels.json").exists()  # nothing predicted offline
    history = list(csv.DictReader(open(rdir / "history.csv")))
    taught = [r for r in history if r.get("teacher_positive")]
    assert [int(r["step"]) for r in taught] == [10, 20]
    pos, neg = float(taught[-1]["teacher_positive"]), float(taught[-1]["teacher_negative"])
    assert 0.0 <= pos <= 1.0 and 0.0 <= neg <= 1.0 and pos + neg > 0.0  # a 20-step model is sure of some pixels at 0.5 / 0.2
    m = json.loads((rdir / "metrics.json").read_text())
    assert m["pseudo_positive"] == pytest.approx(pos) and m["pseudo_negative"] == pytest.approx(neg)
    for name in ("model.pt", "tune.csv", "pr_curve.csv", "suggestions.csv", "calibration.json"):
        assert (rdir / name).is_file(), name
    state = json.loads((camp / "state.json").read_text())
    run = MlflowClient(state["tracking_uri"]).search_runs(
        [MlflowClient(state["tracking_uri"]).get_run(state["mlflow_parent_run_id"]).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{state['mlflow_parent_run_id']}' and tags.`cryopick.round` = '1'")[0]
    assert run.data.metrics["pseudo_positive"] == pytest.approx(pos)


@pytest.mark.timeout(240)
def test_a_fresh_round_trains_a_new_student_against_the_previous_model_held_fixed(campaign: dict[str, Any], tmp_path: Path) -> None:
    """`selftrain.warm_start: false` with the teacher method (Noisy Student): the student starts from random weights,
    round 0's model labels for it and never moves, competes at step 0 as the floor, and the round keeps the student's
    best checkpoint or round 0's weights, nothing else."""
    import torch

    from cryopick.distributed.orchestrator import run_campaign
    from cryopick.distributed.train_loop import STATE_FILE
    from cryopick.selftrain.config import load_config

    source = campaign["dir"] / "round_000"
    over = {k: v for k, v in campaign["cfg"].as_dict()["data"].items() if v}
    cfg = load_config(None, {**{f"data.{k}": v for k, v in over.items()}, **TINY, "selftrain.method": "teacher",
                             "selftrain.warm_start": False, "selftrain.positive": 0.5, "selftrain.negative": 0.2,
                             "selftrain.round0_model": str(source), "out": str(tmp_path / "fresh")})
    run_campaign(cfg, progress=False, log=lambda s: None)
    rdir = cfg.campaign_dir / "round_001"
    trained = json.loads((rdir / "config.json").read_text())
    assert trained["warm_start_from"] is None and trained["result"]["method"] == "teacher"
    assert trained["result"]["warm_start_floor"] is True  # round 0's labels: its model is the floor
    history = list(csv.DictReader(open(rdir / "history.csv")))
    assert history[0]["step"] == "0" and history[0]["val_f1"] != ""  # the fixed teacher, scored before any step
    assert float(history[-1]["teacher_positive"]) + float(history[-1]["teacher_negative"]) > 0.0
    round0 = torch.load(source / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    last = sorted((cfg.campaign_dir / "ray_results").rglob(STATE_FILE), key=lambda f: f.parent.name)[-1]
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["step"] == 20
    for k, v in round0.items():  # the teacher never moved ...
        assert torch.equal(state["teacher"][k], v), k
    moved = [k for k, v in round0.items() if v.is_floating_point() and not torch.allclose(state["model"][k], v)]
    assert moved  # ... while the student trained from its own start
    kept = torch.load(rdir / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    expected = round0 if state["best_step"] == 0 else state["best_state"]
    for k, v in expected.items():
        assert torch.allclose(kept[k].float(), v.float()), k


@pytest.mark.timeout(240)
def test_expected_particles_make_round_zero_learn_sparse_picks_as_positive_unlabeled(campaign: dict[str, Any], tmp_path: Path) -> None:
    """A user who expects four times the particles they picked: round 0 already knows the picks are sparse (auto),
    trains the unpicked pixels as positive-unlabeled with the prior those numbers give, and stores that share."""
    from cryopick.distributed.orchestrator import run_campaign
    from cryopick.selftrain import stages
    from cryopick.selftrain.config import load_config, resolve_data

    data = {f"data.{k}": v for k, v in campaign["cfg"].as_dict()["data"].items() if v}
    picks = len(read_coords(Path(data["data.coords"]) / f"{Path(data['data.labeled'][0]).stem}.star")[0])
    cfg = load_config(None, {**data, **TINY, "selftrain.rounds": 1, "selftrain.expected_particles": 4 * picks,
                             "out": str(tmp_path / "pu")})
    said: list[str] = []
    run_campaign(cfg, progress=False, log=said.append)
    rdir = cfg.campaign_dir / "round_000"
    result = json.loads((rdir / "config.json").read_text())["result"]
    prior = stages.unpicked_prior(resolve_data(cfg), 27.0, 0.25)
    assert result["sparse_labels"] is True and 0.0 < prior < 0.5
    assert result["unpicked_prior"] == pytest.approx(prior)
    assert json.loads((rdir / stages.CALIBRATION_FILE).read_text())["picked_share"] == pytest.approx(0.25)
    assert any("sparse" in line for line in said)


def test_labels_imported_after_a_round_join_the_labeled_set_from_the_next_round(
        campaign: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Round 0 (the fixture's, adopted), then the user labels a region of the unlabeled micrograph (`cryopick label import --region`); the
    rerun keeps round 0 and trains round 1 with that micrograph labeled (its picks from labels/, the rest of it
    ignored, the bottom of the region held back for validation), recorded in state.json and MLflow."""
    from mlflow import MlflowClient

    from cryopick.cli.__main__ import main
    from cryopick.distributed.orchestrator import run_campaign
    from cryopick.selftrain.config import load_config

    data = {f"data.{k}": v for k, v in campaign["cfg"].as_dict()["data"].items() if v}
    over = {**data, **TINY, "selftrain.rounds": 1, "selftrain.round0_model": str(campaign["dir"] / "round_000"),
            "out": str(tmp_path / "camp")}
    run_campaign(load_config(None, over), progress=False, log=lambda s: None)
    camp = tmp_path / "camp"
    r0 = (camp / "round_000" / "metrics.json").stat().st_mtime_ns
    stem = Path(data["data.unlabeled"][0]).stem
    picks = tmp_path / "relion" / f"{stem}.star"  # the user's manual picks, as RELION writes them
    picks.parent.mkdir()
    picks.write_bytes((Path(data["data.coords"]) / f"{stem}.star").read_bytes())
    region = ["--region", f"0,0,{CROP},{CROP // 2}"]
    assert main(["label", "import", "--campaign", str(camp), str(picks), *region]) == 0
    assert main(["label", "import", "--campaign", str(camp), str(picks), *region]) == 2  # never silently replaced
    assert "already has labels" in capsys.readouterr().err
    lines: list[str] = []
    # the suggestion strategy may change on resume: it ranks the next suggestions, nothing already computed
    run_campaign(load_config(None, {**over, "selftrain.rounds": 2, "selftrain.suggest": "errors"}), progress=False, log=lines.append)
    assert (camp / "round_000" / "metrics.json").stat().st_mtime_ns == r0  # round 0 is not redone
    trained = json.loads((camp / "round_001" / "config.json").read_text())
    assert str(Path(data["data.unlabeled"][0]).resolve()) in trained["labeled"] and trained["pseudo_labeled"] == []
    # the new region is not in round 0's labels: its model is an ordinary checkpoint of round 1, not the floor
    assert trained["result"]["warm_start_floor"] is False
    assert json.loads((camp / "round_000" / "config.json").read_text())["labels_sha256"] != trained["labels_sha256"]
    assert (camp / "round_001" / "heatmaps" / f"{Path(data['data.labeled'][0]).stem}.npz").is_file()  # validated on
    assert (camp / "round_001" / "heatmaps" / f"{stem}.npz").is_file()  # and on the region's strip
    with open(camp / "round_001" / "suggestions.csv") as fh:  # of its 270-px regions, those not half labeled yet
        rows = list(csv.DictReader(fh))
    assert {(r["micrograph"], r["y0"]) for r in rows} == {(stem, "50")}
    assert all(abs(float(r["score"]) - float(r["expected_errors"])) < 0.01 for r in rows)  # ranked by expected errors
    state = json.loads((camp / "state.json").read_text())
    assert state["completed_rounds"] == [0, 1] and state["labels"] == {stem: 1}
    assert any(f"join the labeled set from round 1: {stem}" in line for line in lines), lines
    parent = MlflowClient(state["tracking_uri"]).get_run(state["mlflow_parent_run_id"])
    assert json.loads(parent.data.tags["cryopick.labels"]) == {stem: 1}
