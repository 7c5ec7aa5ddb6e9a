"""The Streamlit page, run headless with ``streamlit.testing.v1.AppTest``.

The campaign tests read the store of a real tiny self-training campaign (Ray, 2 rounds; about a
minute, shared with the browser test); the empty/broken-state tests build their own stores.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from dashboard_store import WrittenCampaign, empty_store, real_campaign

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.timeout(900)  # the first test also runs the campaign (about a minute idle, minutes under load)

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


@pytest.fixture(scope="session")
def campaign(sim_data: Path, tmp_path_factory: pytest.TempPathFactory, ray_session: object) -> WrittenCampaign:
    return real_campaign(sim_data, tmp_path_factory)


def run_app(monkeypatch: pytest.MonkeyPatch, uri: str) -> AppTest:
    """The page as a first visitor sees it, with ``uri`` as the default store."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CRYOPICK_TRACKING_URI", uri)
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


@pytest.mark.ray
def test_per_round_table_holds_logged_numbers(monkeypatch: pytest.MonkeyPatch, campaign: WrittenCampaign) -> None:
    at = run_app(monkeypatch, campaign.tracking_uri)
    assert not at.error and not at.warning, texts(at, "error") + texts(at, "warning")
    table = next(d.value for d in at.dataframe if "f1" in d.value.columns)
    assert list(table["round"]) == sorted(campaign.rounds)
    for rnd, logged in campaign.rounds.items():
        row = table[table["round"] == rnd].iloc[0]
        for key in ("precision", "recall", "f1", "average_precision", "threshold", "n_picks", "time_total_s"):
            assert row[key] == pytest.approx(logged[key]), (rnd, key)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Rounds completed"] == str(len(campaign.rounds))
    assert metrics["Best F1"] == f"{max(m['f1'] for m in campaign.rounds.values()):.3f}"
    assert any(" → ".join(f"{m['f1']:.3f}" for m in campaign.rounds.values()) in c for c in texts(at, "caption"))
    assert [t.label for t in at.tabs] == ["PR curves", "Tune search", "Pseudo-labels", "Micrographs", "Timing", "Label next", "Label"]
    # Every section drew its content (no "not logged" notes): 5 charts, coverage table, viewer image.
    assert not at.info
    assert len(at.get("vega_lite_chart")) == 5
    coverage = next(d.value for d in at.dataframe if "positive" in d.value.columns)
    last = max(campaign.rounds)
    assert coverage.loc[last, "positive"] == pytest.approx(campaign.rounds[last]["pseudo_positive"])
    assert len(at.get("image")) == 1
    suggested = next(d.value for d in at.dataframe if "disagreement" in d.value.columns)
    written = (campaign.campaign_dir / f"round_{last:03d}" / "suggestions.csv").read_text().splitlines()
    assert list(suggested["rank"]) == list(range(1, len(written))) and suggested["micrograph"].iloc[0] in written[1]


@pytest.mark.ray
def test_micrograph_viewer_follows_choices(monkeypatch: pytest.MonkeyPatch, campaign: WrittenCampaign) -> None:
    at = run_app(monkeypatch, campaign.tracking_uri)
    assert at.selectbox(key="viewer_stem").options == sorted(campaign.stems)
    at.selectbox(key="viewer_round").set_value(0).run()
    at.selectbox(key="viewer_stem").set_value(sorted(campaign.stems)[-1]).run()
    at.slider(key="viewer_min_0").set_value(0.0).run()
    assert not at.exception
    caption = next(c for c in texts(at, "caption") if "true picks" in c)
    npz = campaign.campaign_dir / "round_000" / "preview" / f"{sorted(campaign.stems)[-1]}.npz"
    with np.load(npz) as z:
        n_picks, n_true = len(z["picks_xy"]), len(z["truth_xy"])
    assert caption.startswith(f"{n_picks} of {n_picks} picks at score ≥ 0.00; {n_true} true picks")


def test_empty_store(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    at = run_app(monkeypatch, empty_store(tmp_path_factory, tmp_path / "mlflow.db"))
    assert not at.error
    assert any("no campaigns" in t for t in texts(at, "info"))
    assert not at.dataframe and not at.metric


@pytest.mark.ray
def test_unreachable_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, campaign: WrittenCampaign) -> None:
    missing = tmp_path / "absent" / "mlflow.db"
    at = run_app(monkeypatch, f"sqlite:///{missing}")
    assert any("no MLflow database" in t and str(missing) in t for t in texts(at, "error"))
    assert not missing.parent.exists()
    at = run_app(monkeypatch, "http://127.0.0.1:9")
    assert any("cannot reach the MLflow server" in t for t in texts(at, "error"))
    # Typing a campaign directory in the sidebar switches to its store.
    at.text_input(key="tracking_uri").input(str(campaign.campaign_dir)).run()
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric}["Rounds completed"] == str(len(campaign.rounds))


def test_run_without_metrics(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory,
                             tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = empty_store(tmp_path_factory, tmp_path / "mlflow.db")
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("cryopick")
    pid = client.create_run(exp, run_name="early", tags={"cryopick.kind": "campaign",
                                                          "cryopick.status": "running"}).info.run_id
    client.create_run(exp, run_name="round_000", tags={"cryopick.kind": "round", "cryopick.round": "0",
                                                       "mlflow.parentRunId": pid})
    at = run_app(monkeypatch, uri)
    assert any("early" in t and "no metrics logged yet" in t for t in texts(at, "warning"))
    campaigns = at.dataframe[0].value
    assert isinstance(campaigns, pd.DataFrame) and list(campaigns["campaign"]) == ["early"]
