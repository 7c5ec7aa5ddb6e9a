"""The dashboard's labeling page: the plain functions behind it, and a click in headless Chromium that
ends up as a pick in ``CAMPAIGN/labels/<stem>.star`` at the right micrograph coordinates."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dashboard_store import WrittenCampaign, real_campaign

from cryopick.dashboard import labeling

CHROMIUM = os.environ.get("CRYOPICK_CHROMIUM", "/usr/bin/chromium")


def test_a_view_maps_displayed_pixels_to_micrograph_pixels() -> None:
    data = np.arange(1000 * 2000, dtype=np.float32).reshape(1000, 2000)
    whole = labeling.make_view(data, None, max_side=800)
    assert whole.zoom == 3 and whole.image.shape == (333, 666) and whole.image.dtype == np.uint8
    assert whole.to_original(0, 0) == (1.5, 1.5)  # the centre of the first 3 x 3 block
    region = labeling.make_view(data, (600.0, 300.0, 840.0, 540.0))
    assert region.zoom == 1 and region.image.shape == (240, 240) and region.origin == (600.0, 300.0)
    assert region.to_original(10, 20) == (610.5, 320.5)
    back = region.to_display(np.array([region.to_original(10, 20)]))
    assert np.allclose(back, [[10, 20]])


def test_a_micrograph_labeled_in_regions_offers_its_open_regions_and_saving_one_adds_it(tmp_path: Path) -> None:
    from cryopick.selftrain.labels import read_labels, write_label
    from cryopick.selftrain.state import CampaignState

    camp = tmp_path / "camp"
    mics = [tmp_path / "m1.mrc", tmp_path / "m2.mrc"]
    (camp / "round_000").mkdir(parents=True)
    (camp / "campaign.json").write_text(json.dumps({"resolved": {"unlabeled": [str(m) for m in mics]}}))
    state = CampaignState()
    state.record(0, 0.5, 0.5)
    state.save(camp)
    (camp / "round_000" / "suggestions.csv").write_text(
        "rank,micrograph,region,x0,y0,x1,y1\n1,m1,\"0,0,100,100\",0,0,100,100\n2,m1,\"100,0,200,100\",100,0,200,100\n"
        "3,m2,\"0,0,100,100\",0,0,100,100\n")
    write_label(camp, mics[0], np.array([[50.0, 50.0]]), "import", boxes=[(0.0, 0.0, 100.0, 100.0)])
    found = labeling.targets(camp)
    assert [(t.stem, t.box) for t in found] == [("m1", (100.0, 0.0, 200.0, 100.0)), ("m2", (0.0, 0.0, 100.0, 100.0)), ("m2", None)]
    labeling.save(camp, found[0], np.array([[150.0, 40.0]]))
    label = read_labels(camp)["m1"]
    assert label.boxes == ((0.0, 0.0, 100.0, 100.0), (100.0, 0.0, 200.0, 100.0)) and label.n_picks == 2
    assert [t.stem for t in labeling.targets(camp)] == ["m2", "m2"]


def test_a_click_removes_the_pick_under_it_or_adds_one() -> None:
    picks = np.array([[100.0, 100.0], [200.0, 200.0]])
    fewer = labeling.toggle(picks, (104.0, 97.0), radius=10)
    assert fewer.tolist() == [[200.0, 200.0]]
    more = labeling.toggle(picks, (150.0, 150.0), radius=10)
    assert len(more) == 3 and more[-1].tolist() == [150.0, 150.0]
    assert labeling.toggle(np.zeros((0, 2)), (5.0, 6.0), 10).tolist() == [[5.0, 6.0]]
    assert labeling.inside(more, (120.0, 120.0, 300.0, 300.0)).tolist() == [[200.0, 200.0], [150.0, 150.0]]


@pytest.fixture(scope="module")
def campaign(sim_data: Path, tmp_path_factory: pytest.TempPathFactory, ray_session: object) -> WrittenCampaign:
    return real_campaign(sim_data, tmp_path_factory)


def own_copy(campaign: WrittenCampaign, dest: Path) -> Path:
    """A copy of the campaign whose MLflow store points at the copy (labels are written there, not in the shared one)."""
    from mlflow import MlflowClient

    copy = Path(shutil.copytree(campaign.campaign_dir, dest))
    MlflowClient(f"sqlite:///{copy / 'mlflow.db'}").set_tag(campaign.run_id, "cryopick.campaign_dir", str(copy))
    return copy


def empty_spot(view: labeling.View, picks: np.ndarray, radius: float) -> tuple[int, int]:
    """A displayed pixel at least 2 radii from every pick, away from the image's edge."""
    h, w = view.image.shape
    for y in range(20, h - 20, 7):
        for x in range(20, w - 20, 7):
            at = np.array(view.to_original(x, y))
            if not len(picks) or np.hypot(*(picks - at).T).min() > 2 * radius:
                return x, y
    pytest.fail("no empty spot on the view")


@pytest.mark.browser
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_clicking_on_the_micrograph_and_saving_writes_the_pick_in_micrograph_pixels(
        campaign: WrittenCampaign, tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file() and not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    from test_dashboard_e2e import free_port, settled, wait_healthy

    from cryopick.config import PickConfig
    from cryopick.inference.picker import load_picker, pick_micrograph
    from cryopick.io.coords import read_coords
    from cryopick.io.micrograph import read_micrograph
    from cryopick.selftrain.state import CampaignState, round_dir

    camp = own_copy(campaign, tmp_path / "camp")
    target = labeling.targets(camp)[0]  # the page opens the top suggestion
    rdir = round_dir(camp, CampaignState.load(camp).completed_rounds[-1])
    model, meta = load_picker(rdir, "cpu")
    mic = read_micrograph(target.micrograph)
    start = labeling.inside(pick_micrograph(model, meta, mic, PickConfig()).xy, target.box)
    view = labeling.make_view(mic.data, target.box)
    x, y = empty_spot(view, start, meta.diameter / 2)
    expected = np.array(view.to_original(x, y))

    port = free_port()
    log = tmp_path / "dashboard.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cryopick.cli", "dashboard", "--tracking-uri", str(camp), "--port", str(port)],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1400})
                page.goto(url, timeout=60_000)
                page.get_by_role("tab", name="Label", exact=True).click()
                main = page.locator('[data-testid="stMain"]')
                main.get_by_text(f"{len(start)} picks (").wait_for(timeout=60_000)
                image = page.frame_locator('iframe[title*="streamlit_image_coordinates"]').locator("img")
                image.wait_for(state="visible", timeout=30_000)
                settled(page)
                image.click(position={"x": x, "y": y})
                main.get_by_text(f"{len(start) + 1} picks (").wait_for(timeout=30_000)
                page.get_by_role("button", name="Save labels").click()
                main.get_by_text("waiting for the next round").wait_for(timeout=30_000)
                main.get_by_text(f"Saved {len(start) + 1} picks to").wait_for(timeout=30_000)
                main.get_by_text(f"cryopick selftrain --out {camp} --rounds 3").wait_for(timeout=30_000)  # 2 rounds ran
            finally:
                browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    star = camp / "labels" / f"{target.stem}.star"
    saved, _ = read_coords(star)
    assert len(saved) == len(start) + 1
    assert np.hypot(*(saved - expected).T).min() <= max(1.0, view.zoom)  # within 1 px at the displayed zoom
    side = json.loads(star.with_suffix(".json").read_text())
    assert side["source"] == "dashboard"
    assert side["complete"] == ("whole" if target.box is None else {"boxes": [list(target.box)]})
