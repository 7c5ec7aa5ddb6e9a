"""Which MLflow store the dashboard reads, and the errors it shows on the page instead of a traceback."""

from __future__ import annotations

import argparse
import functools
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryopick.errors import CryopickError

if TYPE_CHECKING:
    from mlflow import MlflowClient

ENV_VAR = "CRYOPICK_TRACKING_URI"


class DashboardError(CryopickError):
    """A state the page explains in words instead of drawing; ``level`` picks error/warning/info."""

    level = "error"


class StoreUnreachable(DashboardError):
    """The tracking URI names no store that can be opened."""


class NoRunsYet(DashboardError):
    """The store or campaign has nothing to show yet."""

    level = "info"


class NoMetrics(DashboardError):
    """Runs exist but none has logged metrics."""

    level = "warning"


class MissingArtifact(DashboardError):
    """An artifact a section needs is not (yet) logged."""

    level = "info"


# --- tracking URI ---------------------------------------------------------------------------------


def resolve_tracking_uri(value: str | Path) -> str:
    """A tracking URI from what a user typed: a URI, an ``mlflow.db`` file or a campaign directory."""
    text = str(value).strip()
    if not text:
        raise StoreUnreachable("no tracking URI given")
    if "://" in text or text.startswith(("sqlite:", "file:", "databricks")):
        return text
    path = Path(text).expanduser().resolve()
    if path.is_dir() and (path / "mlflow.db").is_file():
        path = path / "mlflow.db"  # a campaign directory: its default store (contracts.md)
    if path.suffix == ".db" or not path.is_dir():
        return f"sqlite:///{path}"
    return path.as_uri()  # a file store (mlruns/ directory)


def default_tracking_uri(argv: Sequence[str], environ: Mapping[str, str], cwd: Path) -> str:
    """The URI the dashboard opens first.

    Order: ``--tracking-uri`` after ``streamlit run app.py --``; ``$CRYOPICK_TRACKING_URI``;
    ``$MLFLOW_TRACKING_URI``; the most recently written ``<cwd>/campaigns/*/mlflow.db``;
    MLflow's own default ``sqlite:///<cwd>/mlflow.db``.
    """
    # allow_abbrev=False and parse_known_args: under pytest/AppTest argv holds pytest's own options.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--tracking-uri")
    known, _ = parser.parse_known_args(list(argv))
    for candidate in (known.tracking_uri, environ.get(ENV_VAR), environ.get("MLFLOW_TRACKING_URI")):
        if candidate:
            return resolve_tracking_uri(candidate)
    stores = sorted((cwd / "campaigns").glob("*/mlflow.db"), key=lambda p: p.stat().st_mtime)
    return f"sqlite:///{stores[-1].resolve()}" if stores else f"sqlite:///{(cwd / 'mlflow.db').resolve()}"


def check_store(uri: str, timeout_s: float = 3.0) -> None:
    """Raise :class:`StoreUnreachable` unless ``uri`` names an existing store.

    Checked by hand before MLflow sees the URI: MLflow silently creates a missing SQLite file (and
    its directories), and retries an unreachable server with long back-offs.
    """
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite":
        # sqlite:///rel/path.db is relative to the working directory, sqlite:////abs/path.db absolute.
        path = Path(urllib.parse.unquote(uri.removeprefix("sqlite:///").split("?")[0])).resolve()
        if not path.is_file():
            raise StoreUnreachable(f"no MLflow database at {path} (has a campaign been started with this store?)")
    elif parsed.scheme in ("", "file"):
        path = Path(urllib.parse.unquote(parsed.path))
        if not path.is_dir():
            raise StoreUnreachable(f"no MLflow file store at {path}")
    elif parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:  # noqa: S310
                resp.read(64)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreUnreachable(f"cannot reach the MLflow server at {uri}: {reason}") from None


@functools.lru_cache(maxsize=8)
def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)  # opens the store now, so errors surface here
    return client


def get_client(uri: str) -> MlflowClient:
    """An MLflow client for an existing store (cached per URI; the existence check is not)."""
    check_store(uri)
    try:
        return _client(uri)
    except Exception as exc:  # noqa: BLE001 - any backend failure is "cannot open" for the page
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StoreUnreachable(f"cannot open the MLflow store {uri}: {type(exc).__name__}: {first}") from None
