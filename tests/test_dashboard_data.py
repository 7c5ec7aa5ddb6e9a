"""Dashboard data layer and figures: MLflow campaign store -> tidy tables -> charts."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dashboard_store import WrittenCampaign, empty_store, shared_campaign

from cryopick.dashboard import data, figures
from cryopick.errors import CryopickError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="session")
def campaign(sim_data: Path, tmp_path_factory: pytest.TempPathFactory) -> WrittenCampaign:
    return shared_campaign(sim_data, tmp_path_factory)


@pytest.fixture(scope="module")
def rounds(campaign: WrittenCampaign) -> pd.DataFrame:
    return data.rounds_table(campaign.tracking_uri, campaign.run_id)


def test_campaign_list(campaign: WrittenCampaign) -> None:
    df = data.list_campaigns(campaign.tracking_uri)
    assert list(df["campaign"]) == [campaign.name]
    row = df.iloc[0]
    assert row["run_id"] == campaign.run_id and row["status"] == "finished" and row["rounds"] == len(campaign.rounds)
    assert row["best_f1"] == pytest.approx(max(m["f1"] for m in campaign.rounds.values()))
    assert Path(row["campaign_dir"]) == campaign.campaign_dir


def test_rounds_table_holds_logged_numbers(campaign: WrittenCampaign, rounds: pd.DataFrame) -> None:
    assert list(rounds["round"]) == sorted(campaign.rounds)
    for rnd, logged in campaign.rounds.items():
        row = rounds[rounds["round"] == rnd].iloc[0]
        for key, value in logged.items():
            assert row[key] == pytest.approx(value), (rnd, key)
        assert row["run_status"] == "FINISHED"
    assert rounds.loc[0, ["pseudo_positive", "pseudo_negative", "pseudo_ignored"]].isna().all()  # round 0
    long = data.metrics_long(rounds)
    assert set(long["metric"]) == {"precision", "recall", "f1"} and len(long) == 3 * len(campaign.rounds)


def test_coverage_and_timing_tables(campaign: WrittenCampaign, rounds: pd.DataFrame) -> None:
    cov = data.coverage_table(rounds)
    assert sorted(set(cov["round"])) == [1, 2]  # round 0 has no pseudo-labels
    share = cov.set_index(["round", "label"])["share"]
    assert share[(2, "positive")] == pytest.approx(campaign.rounds[2]["pseudo_positive"])
    assert share[(1, "ignored")] == pytest.approx(campaign.rounds[1]["pseudo_ignored"])
    tim = data.timings_table(rounds)
    per = tim.pivot(index="round", columns="stage", values="seconds")
    assert per.loc[1, "train"] == pytest.approx(campaign.rounds[1]["time_train_s"])
    assert per.sum(axis=1).to_numpy() == pytest.approx([campaign.rounds[r]["time_total_s"] for r in per.index])
    assert per["other"].to_numpy() == pytest.approx(0.75)  # total minus the four stages
    with pytest.raises(data.MissingArtifact, match="round 0"):
        data.coverage_table(rounds[rounds["round"] == 0])


def test_pr_and_tune_from_artifacts(campaign: WrittenCampaign, rounds: pd.DataFrame) -> None:
    pr = data.pr_curves(campaign.tracking_uri, rounds, campaign.campaign_dir)
    logged = pd.read_csv(campaign.campaign_dir / "round_001" / "pr_curve.csv")
    assert pr.groupby("round").size().tolist() == [len(logged)] * 3
    np.testing.assert_allclose(pr[pr["round"] == 1]["recall"], logged["recall"])
    tune = data.tune_trials(campaign.tracking_uri, rounds, campaign.campaign_dir)
    assert tune.groupby("round")["chosen"].sum().tolist() == [1, 1, 1]
    chosen = tune[tune["chosen"]].set_index("round")
    assert chosen["f1"].to_numpy() == pytest.approx([campaign.rounds[r]["f1"] for r in chosen.index])


def test_artifact_fallback_and_missing(campaign: WrittenCampaign, rounds: pd.DataFrame, tmp_path: Path) -> None:
    row = rounds.iloc[1].to_dict() | {"artifact_uri": str(tmp_path / "gone")}
    # Artifact store moved away: the campaign directory still has the round's files.
    raw = data.read_artifact(campaign.tracking_uri, row, "pr_curve.csv", campaign.campaign_dir)
    assert raw == (campaign.campaign_dir / "round_001" / "pr_curve.csv").read_bytes()
    with pytest.raises(data.MissingArtifact, match="pr_curve.csv not logged"):
        data.read_artifact(campaign.tracking_uri, row, "pr_curve.csv", None)
    with pytest.raises(data.MissingArtifact):
        data.pr_curves(campaign.tracking_uri, pd.DataFrame([row]), None)


def test_preview_loader(campaign: WrittenCampaign, rounds: pd.DataFrame) -> None:
    row = rounds.iloc[-1].to_dict()
    stems = data.preview_stems(campaign.tracking_uri, row, campaign.campaign_dir)
    assert stems == sorted(campaign.stems)
    pv = data.load_preview(campaign.tracking_uri, row, stems[0], campaign.campaign_dir)
    with np.load(campaign.campaign_dir / "round_002" / "preview" / f"{stems[0]}.npz") as z:
        np.testing.assert_allclose(pv.picks_xy, z["picks_xy"])
        np.testing.assert_allclose(pv.truth_xy, z["truth_xy"])
        assert pv.image.shape == pv.heatmap.shape == z["image"].shape
    np.testing.assert_allclose(pv.to_binned([[10.0, 30.0]]), [[5.0, 15.0]])  # scale 2 in y and x


def test_invalid_preview_is_a_dashboard_error(tmp_path: Path) -> None:
    (tmp_path / "preview").mkdir()
    np.savez(tmp_path / "preview" / "m.npz", image=np.zeros((4, 4)))  # no heatmap, scale, picks
    row = {"round": 1, "run_id": "x", "artifact_uri": str(tmp_path)}
    assert data.preview_stems("sqlite:///unused.db", row) == ["m"]
    with pytest.raises(data.DashboardError, match="not a valid preview"):
        data.load_preview("sqlite:///unused.db", row, "m")


def test_unreachable_stores_are_typed_and_create_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mlflow.db"
    with pytest.raises(data.StoreUnreachable, match="no MLflow database"):
        data.list_campaigns(f"sqlite:///{missing}")
    assert not missing.parent.exists()  # MLflow itself would have created it
    with pytest.raises(data.StoreUnreachable, match="cannot reach the MLflow server"):
        data.check_store("http://127.0.0.1:9", timeout_s=2)
    bad = tmp_path / "bad.db"
    bad.write_text("not a database")
    with pytest.raises(data.StoreUnreachable, match="cannot open"):
        data.get_client(f"sqlite:///{bad}")


def test_empty_states(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = empty_store(tmp_path_factory, tmp_path / "mlflow.db")
    with pytest.raises(data.NoRunsYet, match="no campaigns"):
        data.list_campaigns(uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("cryopick")
    parent = client.create_run(exp, run_name="fresh", tags={"cryopick.kind": "campaign", "cryopick.status": "running"})
    pid = parent.info.run_id
    with pytest.raises(data.NoRunsYet, match="fresh has no rounds yet"):
        data.rounds_table(uri, pid)
    client.create_run(exp, run_name="round_000", tags={"cryopick.kind": "round", "cryopick.round": "0",
                                                       "mlflow.parentRunId": pid})
    with pytest.raises(data.NoMetrics, match="no metrics logged yet"):
        data.rounds_table(uri, pid)
    # Parent-only logging (no nested runs) still gives a per-round table.
    other = client.create_run(exp, run_name="flat", tags={"cryopick.kind": "campaign"}).info.run_id
    for step, f in enumerate((0.5, 0.6)):
        client.log_metric(other, "f1", f, step=step)
    flat = data.rounds_table(uri, other)
    assert flat["f1"].tolist() == [0.5, 0.6] and flat["precision"].isna().all()


def test_tracking_uri_resolution(campaign: WrittenCampaign, tmp_path: Path) -> None:
    db = campaign.campaign_dir / "mlflow.db"
    assert data.resolve_tracking_uri(campaign.campaign_dir) == f"sqlite:///{db}"
    assert data.resolve_tracking_uri(str(db)) == f"sqlite:///{db}"
    assert data.resolve_tracking_uri("http://host:5000") == "http://host:5000"
    env = {"CRYOPICK_TRACKING_URI": "http://a:1", "MLFLOW_TRACKING_URI": "http://b:2"}
    assert data.default_tracking_uri(["-x", "--tracking-uri", "http://c:3"], env, tmp_path) == "http://c:3"
    assert data.default_tracking_uri(["-x", "--timeout=5"], env, tmp_path) == "http://a:1"
    assert data.default_tracking_uri([], {"MLFLOW_TRACKING_URI": "http://b:2"}, tmp_path) == "http://b:2"
    assert data.default_tracking_uri([], {}, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    (tmp_path / "campaigns" / "c1").mkdir(parents=True)
    (tmp_path / "campaigns" / "c1" / "mlflow.db").touch()
    assert data.default_tracking_uri([], {}, tmp_path).endswith("/campaigns/c1/mlflow.db")


def test_figures(campaign: WrittenCampaign, rounds: pd.DataFrame) -> None:
    spec = figures.metrics_chart(data.metrics_long(rounds)).to_dict()
    values = next(iter(spec["datasets"].values()))
    assert sorted(v["value"] for v in values if v["metric"] == "f1") == [m["f1"] for m in campaign.rounds.values()]
    for chart in (figures.pr_chart(data.pr_curves(campaign.tracking_uri, rounds, campaign.campaign_dir)),
                  figures.tune_chart(data.tune_trials(campaign.tracking_uri, rounds, campaign.campaign_dir)),
                  figures.coverage_chart(data.coverage_table(rounds)), figures.timing_chart(data.timings_table(rounds))):
        assert chart.to_dict()["datasets"]
    row = rounds.iloc[-1].to_dict()
    pv = data.load_preview(campaign.tracking_uri, row, campaign.stems[0], campaign.campaign_dir)
    fig = figures.micrograph_figure(pv, min_score=0.5, title="t")
    ax = fig.axes[0]
    n_shown = int((pv.picks_score >= 0.5).sum())
    assert 0 < n_shown < len(pv.picks_xy)  # the threshold really hides some picks
    assert {c.get_label(): len(c.get_offsets()) for c in ax.collections} == {
        f"true picks ({len(pv.truth_xy)})": len(pv.truth_xy), f"picks ({n_shown})": n_shown}
    assert len(ax.images) == 2  # micrograph + heatmap
    assert len(figures.micrograph_figure(pv, show_heatmap=False).axes[0].images) == 1


def test_cli_command(campaign: WrittenCampaign) -> None:
    from cryopick.cli import dashboard as cli
    from cryopick.cli.__main__ import build_parser

    args = build_parser().parse_args(["dashboard", "--tracking-uri", str(campaign.campaign_dir), "--port", "8999"])
    assert args._main is cli.main
    cmd = cli.streamlit_command(args)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]).name == "app.py" and Path(cmd[4]).is_file()
    assert cmd[cmd.index("--server.port") + 1] == "8999" and cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[-3:] == ["--", "--tracking-uri", f"sqlite:///{campaign.campaign_dir / 'mlflow.db'}"]
    with pytest.raises(CryopickError, match="not a TCP port"):
        cli.main(argparse.Namespace(port=0, tracking_uri=None, address="127.0.0.1", open=False))
