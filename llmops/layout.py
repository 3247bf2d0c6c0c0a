"""Where everything lives under ``$LLMOPS_HOME``: one object, one method per row of the
README's artifact layout table. No other module joins path segments under the home.

Paths are local: object storage (S3, GCS) for artifacts is not supported yet; the
MLflow artifact root may already be remote (``mlflow.artifact_location``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def safe_name(name: str) -> str:
    """A run id or a model name as one path segment (``manual__2026-…+00:00`` has colons)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


@dataclass(frozen=True)
class Layout:
    """The directory tree of one ``LLMOPS_HOME``."""

    home: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home))

    # ---- keyed outputs ----------------------------------------------------------------

    @property
    def artifacts(self) -> Path:
        """``artifacts/``: every keyed stage output."""
        return self.home / "artifacts"

    def stage_dir(self, stage: str) -> Path:
        """``artifacts/<stage>/``: the outputs of one stage (and its ``.tmp-*`` work in progress)."""
        return self.artifacts / stage

    def stage_output(self, stage: str, key: str) -> Path:
        """``artifacts/<stage>/<key>/``: one finished stage output, ``manifest.json`` inside."""
        return self.stage_dir(stage) / key

    def runs(self, kind: str) -> Path:
        """``runs/<kind>/``: the training jobs of one kind (pretrain, finetune)."""
        return self.home / "runs" / kind

    def run_dir(self, kind: str, name: str, key: str) -> Path:
        """``runs/<kind>/<name>-<key>/``: one training job, resumed in place."""
        return self.runs(kind) / f"{name}-{key}"

    # ---- reports ----------------------------------------------------------------------

    def reports(self, kind: str) -> Path:
        """``reports/<kind>/``: reports of one DAG (``llmops_data``, ``llmops_train``,
        ``llmops_deploy``) or of the evaluations (``evaluation``)."""
        return self.home / "reports" / kind

    def report(self, kind: str, name: str) -> Path:
        """``reports/<kind>/<name>/``: one report (a DAG run's, keyed by its run id)."""
        return self.reports(kind) / safe_name(name)

    def latest_report(self, kind: str) -> Path:
        """``reports/<kind>/latest.json``: points to the newest report of that kind."""
        return self.reports(kind) / "latest.json"

    # ---- caches -----------------------------------------------------------------------

    def cache(self, kind: str, name: str) -> Path:
        """``cache/<kind>/<name>/``: a download that can be fetched again (``models``: base
        models by URI; ``serving``: registered versions staged for Triton)."""
        return self.home / "cache" / kind / safe_name(name)

    # ---- services ---------------------------------------------------------------------

    @property
    def airflow_home(self) -> Path:
        """``airflow/``: AIRFLOW_HOME (airflow.db, logs, generated password and secrets)."""
        return self.home / "airflow"

    @property
    def stack(self) -> Path:
        """``stack/``: ``<component>.pid`` and ``<component>.log`` of the embedded stack."""
        return self.home / "stack"

    @property
    def triton(self) -> Path:
        """``triton/``: the embedded Triton server's log, pid file and admin key."""
        return self.home / "triton"

    @property
    def triton_models(self) -> Path:
        """``triton/models/``: Triton's model repository."""
        return self.triton / "models"

    @property
    def mlflow_db(self) -> Path:
        """``mlflow.db``: the embedded MLflow tracking and registry store (SQLite)."""
        return self.home / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        """``mlartifacts/``: the embedded MLflow artifact root."""
        return self.home / "mlartifacts"

    @property
    def demo_site(self) -> Path:
        """``demo_site/``: the demo site's ground truth and access log."""
        return self.home / "demo_site"

    @property
    def demo_site_published(self) -> Path:
        """``demo_site/published.json``: the demo site's published sections (``llmops demo-site
        publish``), which ``llmops demo-site serve`` follows while it runs and starts from."""
        return self.demo_site / "published.json"

    # ---- monitoring -------------------------------------------------------------------

    @property
    def inference_log(self) -> Path:
        """``monitoring/inference/<model>/<hour>_<instance>.jsonl``: the served model's inference log."""
        return self.home / "monitoring" / "inference"

    @property
    def monitor_state(self) -> Path:
        """``monitoring/state/``: Triton metric snapshots between checks, cached reference features."""
        return self.home / "monitoring" / "state"

    @property
    def retrain_decisions(self) -> Path:
        """``retrain/decisions.jsonl``: what every ``llmops_retrain`` run decided, and why."""
        return self.home / "retrain" / "decisions.jsonl"

    # ---- logs -------------------------------------------------------------------------

    def failed_crawl_index(self, crawl_id: str) -> Path:
        """``logs/failed-crawls/<crawl>-index.jsonl``: the index of a crawl that fetched nothing."""
        return self.home / "logs" / "failed-crawls" / f"{safe_name(crawl_id)}-index.jsonl"

    @property
    def bench_results(self) -> Path:
        """``bench/results.json``: the last ``make bench``."""
        return self.home / "bench" / "results.json"
