"""MLflow tracking of a campaign, per docs/dev/contracts.md; driver-side only.

One parent run per campaign (tags ``cryopick.kind=campaign``, ``cryopick.campaign_dir``,
``cryopick.status``; metrics precision/recall/f1 with ``step=round``) and one nested run per round
(``cryopick.kind=round``, ``cryopick.round``, ``mlflow.parentRunId``) with params, metrics and the
round's artifacts. Everything goes through ``MlflowClient(tracking_uri)`` (the fluent API has no
per-call tracking URI). The default store is ``sqlite:///<abs campaign>/mlflow.db`` with artifacts
in ``<campaign>/mlartifacts``, so a laptop campaign needs no server.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryopick.selftrain.state import flatten

PARAM_MAX = 500  # MLflow allows 6000 chars; long file lists are summarised well below that


def param_value(value: Any) -> str:
    """A readable, bounded param string; lists of files become 'N: first, second, ...'."""
    if isinstance(value, (list, tuple)):
        text = f"{len(value)}: " + ", ".join(Path(str(v)).name if "/" in str(v) else str(v) for v in value)
    else:
        text = str(value)
    return text if len(text) <= PARAM_MAX else text[: PARAM_MAX - 3] + "..."


def flat_params(config: Mapping[str, Any]) -> dict[str, str]:
    return {k: param_value(v) for k, v in flatten(dict(config)).items()}


class CampaignTracker:
    """Parent and nested MLflow runs of one campaign."""

    def __init__(self, tracking_uri: str, experiment: str, campaign_dir: Path, name: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.campaign_dir = campaign_dir
        self.name = name
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            # a campaign-local store keeps its artifacts beside it; a server decides for itself
            local = tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:") or "://" not in tracking_uri
            location = (campaign_dir / "mlartifacts").as_uri() if local else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = exp.experiment_id
        self.parent_id: str | None = None

    def start(self, config: Mapping[str, Any], parent_id: str | None = None) -> str:
        """Create the parent run, or reopen ``parent_id`` when resuming; returns its id."""
        from mlflow.entities import Param, RunTag

        if parent_id is not None:
            try:
                run = self.client.get_run(parent_id)
                self.parent_id = run.info.run_id
                self.client.update_run(self.parent_id, status="RUNNING")
                self.client.set_tag(self.parent_id, "cryopick.status", "running")
                return self.parent_id
            except Exception:  # noqa: BLE001 - a deleted/foreign run: start a new parent
                pass
        tags = {"cryopick.kind": "campaign", "cryopick.campaign_dir": str(self.campaign_dir), "cryopick.status": "running"}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=self.name)
        self.parent_id = run.info.run_id
        params = [Param(k, v) for k, v in flat_params(config).items()]
        for i in range(0, len(params), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.parent_id, params=params[i : i + 100])
        self.client.log_batch(self.parent_id, tags=[RunTag("cryopick.tracking_uri", self.uri)])
        return self.parent_id

    def log_round(
        self,
        rnd: int,
        metrics: Mapping[str, float],
        config: Mapping[str, Any],
        artifacts: Sequence[tuple[str, Path]],
        documents: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> str:
        """One nested run for round ``rnd`` (an earlier, interrupted attempt's run is deleted first).

        Args:
            metrics: logged with ``step=rnd``; precision/recall/f1 also on the parent.
            artifacts: (artifact folder, local file or directory) pairs; "" is the run's root;
                missing ones are skipped.
            documents: JSON documents logged as artifacts (name -> content), e.g. metrics.json.
        """
        from mlflow.entities import Metric, Param

        assert self.parent_id is not None, "start() first"
        for old in self.round_runs(rnd):
            self.client.delete_run(old.info.run_id)
        tags = {"cryopick.kind": "round", "cryopick.round": str(rnd), "mlflow.parentRunId": self.parent_id,
                "cryopick.campaign_dir": str(self.campaign_dir)}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"round_{rnd:03d}")
        rid = run.info.run_id
        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, rnd) for k, v in metrics.items() if v is not None]
        params = [Param(k, v) for k, v in {**flat_params(config), "round": str(rnd)}.items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(rid, params=params[i : i + 100])
        self.client.log_batch(rid, metrics=ms)
        for art_path, local in artifacts:
            if Path(local).is_dir():
                self.client.log_artifacts(rid, str(local), art_path)
            elif Path(local).is_file():
                self.client.log_artifact(rid, str(local), art_path or None)
        for name, doc in (documents or {}).items():
            self.client.log_dict(rid, dict(doc), name)
        self.client.set_terminated(rid, "FINISHED")
        parent = [Metric(k, float(metrics[k]), now, rnd) for k in ("precision", "recall", "f1") if k in metrics]
        self.client.log_batch(self.parent_id, metrics=parent)
        return rid

    def round_runs(self, rnd: int) -> list[Any]:
        """Nested runs of round ``rnd`` under this campaign's parent."""
        if self.parent_id is None:
            return []
        flt = f"tags.`mlflow.parentRunId` = '{self.parent_id}' and tags.`cryopick.round` = '{rnd}'"
        return list(self.client.search_runs([self.experiment_id], filter_string=flt))

    def tag(self, key: str, value: str) -> None:
        """A ``cryopick.<key>`` tag on the campaign's parent run."""
        if self.parent_id is not None:
            self.client.set_tag(self.parent_id, f"cryopick.{key}", value)

    def finish(self, status: str, summary: Mapping[str, Any] | None = None) -> None:
        """Mark the parent run finished / failed (``status`` in finished|failed|stopped)."""
        if self.parent_id is None:
            return
        self.client.set_tag(self.parent_id, "cryopick.status", status)
        for k, v in (summary or {}).items():
            self.client.set_tag(self.parent_id, f"cryopick.{k}", str(v))
        self.client.set_terminated(self.parent_id, "FINISHED" if status == "finished" else "FAILED")
