"""End to end: `cryopick dashboard` (`streamlit run`) on localhost, opened in headless Chromium.

The store is a real tiny self-training campaign's (Ray, 2 rounds). The test waits for the
per-round chart, checks the page shows the campaign's round count and F1 values, saves
screenshots into the test's temporary directory (the README's come from a real campaign:
``tests/screenshots.py``), then logs one more round and checks the page picks it up. Needs Debian's ``chromium`` (``/usr/bin/chromium``, or
``$CRYOPICK_CHROMIUM``); Playwright drives it, its own browser downloads are not used.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from dashboard_store import WrittenCampaign, real_campaign

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.ray, pytest.mark.timeout(900)]  # may run the shared campaign

REPO = Path(__file__).resolve().parents[1]
DOC_IMAGES = REPO / "docs" / "img"
CHROMIUM = os.environ.get("CRYOPICK_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def campaign(sim_data: Path, tmp_path_factory: pytest.TempPathFactory, ray_session: object) -> WrittenCampaign:
    """The store of a real tiny self-training campaign (shared with the AppTest tests)."""
    return real_campaign(sim_data, tmp_path_factory)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dashboard exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"dashboard not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def store_copy(campaign: WrittenCampaign, tmp_path: Path) -> Path:
    """A copy of the campaign directory: the test logs one more round into it (artifact paths in
    its ``mlflow.db`` still point at the original, which stays untouched for the other tests)."""
    return Path(shutil.copytree(campaign.campaign_dir, tmp_path / campaign.name))


@pytest.fixture
def server(store_copy: Path, tmp_path: Path) -> Iterator[str]:
    """`cryopick dashboard` on a free port, in its own process group (stopped by that id)."""
    port = free_port()
    log = tmp_path / "dashboard.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cryopick.cli", "dashboard", "--tracking-uri", str(store_copy),
             "--port", str(port)],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def settled(page: Page) -> None:
    """Wait out a running (auto-refresh) rerun: Streamlit greys stale elements meanwhile."""
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=30_000)
    page.wait_for_timeout(800)  # chart transitions


def metric_value(page: Page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]').filter(has_text=label)
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def log_round(store: Path, rnd: int, f1: float) -> None:
    """What the orchestrator does when a round finishes: a nested run with its metrics."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    parent = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                "tags.`cryopick.kind` = 'campaign'")[0]
    run = client.create_run(parent.info.experiment_id, run_name=f"round_{rnd:03d}", tags={
        "cryopick.kind": "round", "cryopick.round": str(rnd), "mlflow.parentRunId": parent.info.run_id})
    for key, value in {"precision": f1, "recall": f1, "f1": f1}.items():
        client.log_metric(run.info.run_id, key, value, step=rnd)
        client.log_metric(parent.info.run_id, key, value, step=rnd)
    client.set_terminated(run.info.run_id)


def test_dashboard_in_chromium(server: str, store_copy: Path, campaign: WrittenCampaign, tmp_path: Path) -> None:
    SCREENSHOT, VIEWER_SHOT = tmp_path / "dashboard.png", tmp_path / "dashboard_viewer.png"  # noqa: N806
    if not Path(CHROMIUM).is_file() and not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    f1 = [f"{campaign.rounds[r]['f1']:.3f}" for r in sorted(campaign.rounds)]
    with sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium refuses its sandbox.
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(server, timeout=60_000)
            chart = page.locator('[data-testid="stVegaLiteChart"]').first
            chart.wait_for(state="visible", timeout=60_000)
            chart.locator("canvas, svg").first.wait_for(state="visible", timeout=30_000)  # vega drew it
            main = page.locator('[data-testid="stMain"]')
            main.get_by_text(f"F1 per round: {' → '.join(f1)}").wait_for(timeout=30_000)
            assert metric_value(page, "Rounds completed") == str(len(f1))
            assert metric_value(page, "Latest F1") == f1[-1]
            assert metric_value(page, "Best F1") == max(f1, key=float)
            body = main.inner_text()
            assert f"Campaign {campaign.name}" in body
            assert "Traceback" not in body and "Error" not in body
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            settled(page)
            page.screenshot(path=str(SCREENSHOT))
            # The micrograph viewer draws in the browser too: its tab shows the overlay image.
            page.get_by_role("tab", name="Micrographs").click()
            image = page.locator('[data-testid="stImage"] img').first
            image.wait_for(state="visible", timeout=30_000)
            page.wait_for_function("img => img.complete && img.naturalWidth > 300", arg=image.element_handle())
            assert "true picks" in main.inner_text()
            image.scroll_into_view_if_needed()
            settled(page)
            page.screenshot(path=str(VIEWER_SHOT))
            # Refresh while a campaign runs: shortest interval, log a round, the page picks it up.
            page.get_by_role("slider").first.focus()
            page.keyboard.press("Home")
            thumb = page.locator('[data-testid="stSliderThumbValue"]').first
            page.wait_for_function("el => el.innerText.trim() === '2'", arg=thumb.element_handle(), timeout=10_000)
            t0 = time.monotonic()
            log_round(store_copy, len(f1), 0.9)
            main.get_by_text(f"F1 per round: {' → '.join([*f1, '0.900'])}").wait_for(timeout=30_000)
            assert metric_value(page, "Rounds completed") == str(len(f1) + 1)
            assert time.monotonic() - t0 < 10  # a 2 s refresh, not the 10 s default
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 20_000 and VIEWER_SHOT.stat().st_size > 20_000
