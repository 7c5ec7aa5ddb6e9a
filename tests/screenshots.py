"""Make the README's dashboard screenshots from a real campaign: what a user sees after the README's main command.

    cryopick selftrain --out campaigns/demo            # the README's demo campaign
    python tests/screenshots.py --campaign campaigns/demo

Serves ``cryopick dashboard`` on that campaign, opens it in headless Chromium (Debian's ``chromium``, driven
by Playwright, as ``tests/test_dashboard_e2e.py`` does) and writes ``docs/img/dashboard.png`` and
``docs/img/dashboard_viewer.png``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dashboard_e2e import CHROMIUM, DOC_IMAGES, free_port, settled, wait_healthy  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--campaign", type=Path, required=True, help="a campaign directory with its mlflow.db")
    parser.add_argument("--out", type=Path, default=DOC_IMAGES)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port, log = free_port(), args.out / ".dashboard.log"
    args.out.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "cryopick.cli", "dashboard", "--tracking-uri", str(args.campaign.resolve()),
                                 "--port", str(port)], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(url, timeout=60_000)
            chart = page.locator('[data-testid="stVegaLiteChart"]').first
            chart.wait_for(state="visible", timeout=60_000)
            chart.locator("canvas, svg").first.wait_for(state="visible", timeout=30_000)
            settled(page)
            page.screenshot(path=str(args.out / "dashboard.png"))
            page.get_by_role("tab", name="Micrographs").click()
            image = page.locator('[data-testid="stImage"] img').first
            image.wait_for(state="visible", timeout=30_000)
            page.wait_for_function("img => img.complete && img.naturalWidth > 300", arg=image.element_handle())
            image.scroll_into_view_if_needed()
            settled(page)
            page.screenshot(path=str(args.out / "dashboard_viewer.png"))
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
        log.unlink(missing_ok=True)
    print(f"wrote {args.out / 'dashboard.png'} and {args.out / 'dashboard_viewer.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
