"""Open the campaign dashboard (Streamlit) in the browser.

Runs `streamlit run dashboard/app.py` on --address:--port (default 127.0.0.1:8501) and prints the
URL. --tracking-uri is the MLflow store campaigns write: a URI (sqlite:///..., http://...), an
mlflow.db file or a campaign directory (its mlflow.db). Without it the page opens
$CRYOPICK_TRACKING_URI, $MLFLOW_TRACKING_URI, the newest ./campaigns/*/mlflow.db or
sqlite:///./mlflow.db, in that order; the sidebar can change it. Stop with Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from cryopick.errors import CryopickError


def app_path() -> Path:
    """``dashboard/app.py`` of the checkout this package runs from (or ``$CRYOPICK_DASHBOARD_APP``)."""
    override = os.environ.get("CRYOPICK_DASHBOARD_APP")
    path = Path(override) if override else Path(__file__).resolve().parents[3] / "dashboard" / "app.py"
    if not path.is_file():
        raise CryopickError("dashboard app not found: install cryopick from a checkout (pip install -e .) "
                            "or set CRYOPICK_DASHBOARD_APP", path)
    return path


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI, mlflow.db file or campaign directory")
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; 0.0.0.0 to reach it from other hosts)")
    parser.add_argument("--open", action="store_true", help="also open a browser window")


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line for ``args`` (the app's own options after ``--``)."""
    from cryopick.dashboard.data import resolve_tracking_uri

    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app_path()),
        "--server.port", str(args.port), "--server.address", args.address,
        "--server.headless", "false" if args.open else "true", "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",  # no developer menu / deploy button for users
    ]
    if args.tracking_uri:
        # Resolved here: the server's working directory must not change what a relative path means.
        cmd += ["--", "--tracking-uri", resolve_tracking_uri(args.tracking_uri)]
    return cmd


def main(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise CryopickError(f"--port {args.port} is not a TCP port")
    cmd = streamlit_command(args)
    print(f"cryopick dashboard: http://{args.address}:{args.port}  (Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(cmd)

    def forward(signum: int, _frame: object) -> None:  # SIGTERM/SIGHUP to us: stop Streamlit too, never orphan it
        proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # The terminal sent Streamlit the same SIGINT: give it time to shut down cleanly.
        try:
            return proc.wait(timeout=10) or 0
        except subprocess.TimeoutExpired:
            proc.terminate()
            return 130
