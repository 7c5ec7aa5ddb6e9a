"""MLflow store of self-training campaigns -> tidy pandas tables for the dashboard.

The store layout is the one in ``docs/dev/contracts.md``: one parent run per campaign
(``cryopick.kind=campaign``) and one nested run per round (``cryopick.kind=round``) with the round
metrics logged at ``step=round`` and the artifacts ``pr_curve.csv``, ``tune.csv`` and
``preview/<stem>.npz``. Every function takes the tracking URI as a plain string, so results can be
cached by the caller; problems surface as a :class:`DashboardError` subclass whose message is
meant for the page as is.
"""

from __future__ import annotations

import functools
import io
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

# the store and its errors (store.py), re-exported: the app and tests read them as data.X
from cryopick.dashboard.store import (
    DashboardError, MissingArtifact, NoMetrics, NoRunsYet, StoreUnreachable, check_store, default_tracking_uri, get_client,
    resolve_tracking_uri,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

ROUND_METRICS = (
    "precision", "recall", "f1", "average_precision", "threshold", "val_threshold", "min_distance", "train_loss", "val_f1",
    "n_picks", "pseudo_positive", "pseudo_negative", "pseudo_ignored",
    "time_train_s", "time_predict_s", "time_tune_s", "time_score_s", "time_total_s",
)
STAGES = {"train": "time_train_s", "predict": "time_predict_s", "tune": "time_tune_s", "score": "time_score_s"}
COVERAGE = {"positive": "pseudo_positive", "negative": "pseudo_negative", "ignored": "pseudo_ignored"}
PR_COLUMNS = ("threshold", "precision", "recall")
TUNE_COLUMNS = ("threshold", "min_distance", "f1", "precision", "recall")


__all__ = [
    "Campaign", "DashboardError", "MissingArtifact", "NoMetrics", "NoRunsYet", "Preview", "StoreUnreachable", "check_store",
    "completed", "coverage_table", "default_tracking_uri", "get_campaign", "get_client", "list_campaigns", "load_preview",
    "metrics_long", "pr_curves", "preview_stems", "read_artifact", "resolve_tracking_uri", "rounds_table", "timings_table",
    "tune_trials",
]


# --- campaigns and rounds -------------------------------------------------------------------------


@dataclass(frozen=True)
class Campaign:
    """One campaign's parent run."""

    run_id: str
    name: str
    experiment_id: str
    status: str
    campaign_dir: Path | None


def _campaign(run: Run) -> Campaign:
    tags, info = run.data.tags, run.info
    cdir = tags.get("cryopick.campaign_dir")
    return Campaign(info.run_id, info.run_name or info.run_id, info.experiment_id,
                    tags.get("cryopick.status") or info.status.lower(), Path(cdir) if cdir else None)


def list_campaigns(uri: str) -> pd.DataFrame:
    """All campaigns in the store, newest first: run_id, campaign, status, rounds, best_f1, started, dir."""
    client = get_client(uri)
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exp_ids, "tags.`cryopick.kind` = 'campaign'", order_by=["attributes.start_time DESC"]) \
        if exp_ids else []
    if not runs:
        raise NoRunsYet(f"no campaigns in {uri} yet: start one with `cryopick selftrain`, this page refreshes")
    rows = []
    for run in runs:
        c = _campaign(run)
        f1 = [m.value for m in client.get_metric_history(c.run_id, "f1")]
        rows.append({"run_id": c.run_id, "campaign": c.name, "status": c.status, "rounds": len(f1),
                     "best_f1": max(f1) if f1 else np.nan,
                     "started": pd.to_datetime(run.info.start_time, unit="ms"),
                     "campaign_dir": str(c.campaign_dir or "")})
    return pd.DataFrame(rows)


def get_campaign(uri: str, run_id: str) -> Campaign:
    """The campaign whose parent run is ``run_id``."""
    try:
        return _campaign(get_client(uri).get_run(run_id))
    except DashboardError:
        raise
    except Exception as exc:  # noqa: BLE001 - mlflow raises its own types per backend
        raise NoRunsYet(f"campaign run {run_id} not found in {uri}: {exc}") from None


def rounds_table(uri: str, campaign_run_id: str) -> pd.DataFrame:
    """One row per round, sorted: ``round``, ``run_id``, ``run_status``, ``artifact_uri`` and every
    contract metric (NaN where not logged, e.g. the round still running).

    Falls back to the parent run's per-round ``precision``/``recall``/``f1`` when no nested round
    runs exist. Raises :class:`NoRunsYet` without rounds, :class:`NoMetrics` when no round has any.
    """
    client = get_client(uri)
    camp = get_campaign(uri, campaign_run_id)
    children = client.search_runs([camp.experiment_id], f"tags.mlflow.parentRunId = '{campaign_run_id}'")
    rows = []
    for run in children:
        tags = run.data.tags
        name = run.info.run_name or ""
        if tags.get("cryopick.kind", "round") != "round" or not (tags.get("cryopick.round") or name.startswith("round_")):
            continue
        rnd = int(tags.get("cryopick.round") or name.removeprefix("round_"))
        row: dict[str, object] = {"round": rnd, "run_id": run.info.run_id, "run_status": run.info.status,
                                  "artifact_uri": run.info.artifact_uri, "start_time": run.info.start_time}
        row.update({k: run.data.metrics.get(k, np.nan) for k in ROUND_METRICS})
        rows.append(row)
    if rows:
        df = pd.DataFrame(rows)
        # A retried round leaves two runs: keep the one with metrics, then the newest.
        df = df.assign(_has=df["f1"].notna()).sort_values(["round", "_has", "start_time"])
        df = df.drop_duplicates("round", keep="last").drop(columns=["_has", "start_time"])
    else:
        df = _rounds_from_parent(client, campaign_run_id)
    if df.empty:
        raise NoRunsYet(f"campaign {camp.name} has no rounds yet ({camp.status}); this page refreshes")
    if not df[list(ROUND_METRICS)].notna().any().any():
        raise NoMetrics(f"campaign {camp.name}: {len(df)} round run(s) but no metrics logged yet")
    return df.sort_values("round").reset_index(drop=True)


def _rounds_from_parent(client: MlflowClient, run_id: str) -> pd.DataFrame:
    per_round: dict[int, dict[str, object]] = {}
    for key in ("precision", "recall", "f1"):
        for m in client.get_metric_history(run_id, key):
            per_round.setdefault(int(m.step), {})[key] = m.value
    rows = [{"round": r, "run_id": run_id, "run_status": "", "artifact_uri": "",
             **{k: vals.get(k, np.nan) for k in ROUND_METRICS}} for r, vals in per_round.items()]
    return pd.DataFrame(rows, columns=["round", "run_id", "run_status", "artifact_uri", *ROUND_METRICS])


def completed(rounds: pd.DataFrame) -> pd.DataFrame:
    """The rounds that have logged their F1 (the scored, finished ones)."""
    return rounds[rounds["f1"].notna()]


def metrics_long(rounds: pd.DataFrame, keys: Sequence[str] = ("precision", "recall", "f1")) -> pd.DataFrame:
    """Tidy ``round, metric, value`` for the chosen metrics of the completed rounds."""
    return completed(rounds).melt(id_vars="round", value_vars=list(keys), var_name="metric", value_name="value")


def coverage_table(rounds: pd.DataFrame) -> pd.DataFrame:
    """Tidy ``round, label, share`` of pseudo-label pixels (rounds >= 1 train on pseudo-labels)."""
    cols = list(COVERAGE.values())
    have = rounds[rounds[cols].notna().any(axis=1)]
    if have.empty:
        raise MissingArtifact("no pseudo-label coverage yet: round 0 trains on the given labels only")
    long = have.melt(id_vars="round", value_vars=cols, var_name="metric", value_name="share")
    long["label"] = long["metric"].map({v: k for k, v in COVERAGE.items()})
    return long[["round", "label", "share"]].dropna().sort_values(["round", "label"]).reset_index(drop=True)


def timings_table(rounds: pd.DataFrame) -> pd.DataFrame:
    """Tidy ``round, stage, seconds``; ``other`` is the part of ``time_total_s`` no stage accounts for."""
    cols = list(STAGES.values())
    have = rounds[rounds[[*cols, "time_total_s"]].notna().any(axis=1)]
    if have.empty:
        raise MissingArtifact("no stage timings logged yet")
    rows = []
    for _, r in have.iterrows():
        for stage, col in STAGES.items():
            if pd.notna(r[col]):
                rows.append({"round": int(r["round"]), "stage": stage, "seconds": float(r[col])})
        other = r["time_total_s"] - np.nansum([r[c] for c in cols])
        if pd.notna(other) and other > 0.01 * r["time_total_s"]:
            rows.append({"round": int(r["round"]), "stage": "other", "seconds": float(other)})
    return pd.DataFrame(rows, columns=["round", "stage", "seconds"])


# --- artifacts ------------------------------------------------------------------------------------


def _local_artifact_dir(artifact_uri: str) -> Path | None:
    parsed = urllib.parse.urlparse(artifact_uri)
    return Path(urllib.parse.unquote(parsed.path)) if artifact_uri and parsed.scheme in ("", "file") else None


def _round_dir(campaign_dir: Path | None, rnd: int) -> Path | None:
    return None if campaign_dir is None else campaign_dir / f"round_{rnd:03d}"


def read_artifact(uri: str, row: Mapping[str, object], relpath: str, campaign_dir: Path | None) -> bytes:
    """Bytes of a round artifact: from the run's artifact store, else from the campaign directory.

    ``row`` is one row of :func:`rounds_table`. The campaign-directory fallback keeps the page working
    when artifacts were moved or are not logged yet but the round directory already holds the file.
    """
    local = _local_artifact_dir(str(row.get("artifact_uri") or ""))
    if local is not None:
        if (local / relpath).is_file():
            return (local / relpath).read_bytes()
    elif row.get("artifact_uri"):
        try:
            with tempfile.TemporaryDirectory() as tmp:
                return Path(get_client(uri).download_artifacts(str(row["run_id"]), relpath, tmp)).read_bytes()
        except Exception:  # noqa: BLE001, S110 - fall back to the campaign directory below
            pass
    fallback = _round_dir(campaign_dir, int(row["round"]))  # type: ignore[call-overload]
    if fallback is not None and (fallback / relpath).is_file():
        return (fallback / relpath).read_bytes()
    raise MissingArtifact(f"round {row['round']}: {relpath} not logged yet")


def _round_csv(uri: str, rounds: pd.DataFrame, name: str, columns: Sequence[str], campaign_dir: Path | None) -> pd.DataFrame:
    frames = []
    for row in rounds.to_dict("records"):
        try:
            df = pd.read_csv(io.BytesIO(read_artifact(uri, row, name, campaign_dir)))
        except MissingArtifact:
            continue
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise DashboardError(f"round {row['round']}: {name} lacks column(s) {', '.join(missing)}")
        frames.append(df[list(columns)].assign(round=int(row["round"])))
    if not frames:
        raise MissingArtifact(f"no round has logged {name} yet")
    out = pd.concat(frames, ignore_index=True)
    return out[["round", *columns]]


def pr_curves(uri: str, rounds: pd.DataFrame, campaign_dir: Path | None = None) -> pd.DataFrame:
    """Tidy ``round, threshold, precision, recall`` from each round's ``pr_curve.csv``."""
    return _round_csv(uri, rounds, "pr_curve.csv", PR_COLUMNS, campaign_dir)


SUGGESTION_COLUMNS = ("rank", "micrograph", "region", "score", "uncertainty", "entropy", "disagreement", "n_picks")


def suggestions(uri: str, rounds: pd.DataFrame, campaign_dir: Path | None = None) -> pd.DataFrame:
    """The latest round's labeling suggestions (``suggestions.csv``), best first."""
    df = _round_csv(uri, rounds, "suggestions.csv", SUGGESTION_COLUMNS, campaign_dir)
    return df[df["round"] == df["round"].max()].sort_values("rank").reset_index(drop=True)


def tune_trials(uri: str, rounds: pd.DataFrame, campaign_dir: Path | None = None) -> pd.DataFrame:
    """Tidy Tune trials (``round`` + the ``tune.csv`` columns) and ``chosen``: the trial Tune chose.

    That is the round's ``val_threshold`` (its picking ``threshold`` is count-matched from it since
    2026-11-29, see :func:`cryopick.selftrain.scoring.count_matched_threshold`), else ``threshold``.
    """
    df = _round_csv(uri, rounds, "tune.csv", TUNE_COLUMNS, campaign_dir)
    idx = rounds.set_index("round")
    val = idx["val_threshold"] if "val_threshold" in idx else pd.Series(np.nan, index=idx.index)
    chosen = pd.DataFrame({"threshold": val.fillna(idx["threshold"]), "min_distance": idx["min_distance"]})
    t = chosen.reindex(df["round"]).to_numpy()
    df["chosen"] = np.isclose(df["threshold"], t[:, 0]) & np.isclose(df["min_distance"], t[:, 1])
    return df


def preview_stems(uri: str, row: Mapping[str, object], campaign_dir: Path | None = None) -> list[str]:
    """Micrograph stems with a ``preview/<stem>.npz`` for one round (sorted)."""
    names: set[str] = set()
    local = _local_artifact_dir(str(row.get("artifact_uri") or ""))
    if local is not None:
        names.update(p.stem for p in (local / "preview").glob("*.npz"))
    elif row.get("artifact_uri"):
        try:
            files = get_client(uri).list_artifacts(str(row["run_id"]), "preview")
            names.update(Path(f.path).stem for f in files if f.path.endswith(".npz"))
        except Exception:  # noqa: BLE001, S110 - fall back to the campaign directory below
            pass
    rdir = _round_dir(campaign_dir, int(row["round"]))  # type: ignore[call-overload]
    if not names and rdir is not None:
        names.update(p.stem for p in (rdir / "preview").glob("*.npz"))
    return sorted(names)


@dataclass(frozen=True)
class Preview:
    """One micrograph of one round, binned: see ``preview/<stem>.npz`` in the contract."""

    stem: str
    image: np.ndarray  # (h, w) float32, binned
    heatmap: np.ndarray  # (h, w) float32, binned
    scale: np.ndarray  # (2,) original px per binned px, (y, x)
    picks_xy: np.ndarray  # (N, 2) original px
    picks_score: np.ndarray  # (N,)
    truth_xy: np.ndarray  # (M, 2) original px, empty without truth

    def to_binned(self, xy: np.ndarray) -> np.ndarray:
        """Original-pixel (x, y) -> binned-pixel (x, y) of :attr:`image`."""
        return np.asarray(xy, dtype=np.float64).reshape(-1, 2) / self.scale[::-1]


def load_preview(uri: str, row: Mapping[str, object], stem: str, campaign_dir: Path | None = None) -> Preview:
    """The preview of micrograph ``stem`` in one round (``row`` from :func:`rounds_table`)."""
    raw = read_artifact(uri, row, f"preview/{stem}.npz", campaign_dir)
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            a = {k: z[k] for k in ("image", "heatmap", "scale", "picks_xy", "picks_score")}
            truth = z["truth_xy"] if "truth_xy" in z.files else np.zeros((0, 2))
        f64 = functools.partial(np.asarray, dtype=np.float64)
        return Preview(stem, a["image"].astype(np.float32), a["heatmap"].astype(np.float32), f64(a["scale"]).reshape(2),
                       f64(a["picks_xy"]).reshape(-1, 2), f64(a["picks_score"]).reshape(-1), f64(truth).reshape(-1, 2))
    except (KeyError, ValueError, OSError) as exc:
        raise DashboardError(f"round {row['round']}: preview/{stem}.npz is not a valid preview: {exc}") from None
