"""Records of the LLMOps view (the ``llmops`` Airflow plugin): what ``/llmops/api/summary``
answers and the page at ``/llmops/`` draws.

One :class:`Summary` per request, built from ``$LLMOPS_HOME`` by ``llmops.ui.summary`` (the
data cards, the training and evaluation reports, the registry, Triton, the drift reports and
the retraining decisions). Every section carries a :class:`SectionState`: ``ok``, ``empty``
(nothing there yet, and ``note`` says what would make something: no champion, Triton down, no
drift check) or ``error`` (reading it failed, ``note`` says why; the other sections still
show). Counts only, as in the data card: never a document's text, a PII value or a prompt.

The actions (``POST /llmops/api/actions/retrain|rollback``) take a :class:`RetrainRequest` or
:class:`RollbackRequest` and answer an :class:`ActionResult`: the DAG run they created.

Paths a browser may open are ``report`` paths: relative to ``$LLMOPS_HOME/reports`` (the
only files the view serves, at ``/llmops/reports/<path>``). A DAG run is named by
:class:`AirflowRun`, whose page is ``/dags/<dag_id>/runs/<run_id>`` in the Airflow UI.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from llmops.config import DURATION_PATTERN
from llmops.records.base import Record
from llmops.records.common import Ref
from llmops.records.data import DataSource, DocumentCounts
from llmops.records.evaluation import GateCheck
from llmops.records.monitoring import ServiceWindow, SignalKind, Verdict
from llmops.records.retrain import RetrainDecision
from llmops.records.serving import DeployResult

SectionState = Literal["ok", "empty", "error"]
"""``ok``: something to show; ``empty``: nothing yet (``note`` says what is missing);
``error``: reading the section failed (``note`` says why)."""


class Section(Ref):
    """What every section of the view has: its state, and a sentence when it is not ``ok``."""

    state: SectionState = "ok"
    note: str | None = None
    """Why the section is empty or failed, in words a user acts on (``no champion yet: …``)."""


class AirflowRun(Ref):
    """A DAG run, linked in the Airflow UI as ``/dags/<dag_id>/runs/<run_id>``."""

    dag_id: str
    run_id: str


# ---- data runs ------------------------------------------------------------------------------


class DataCardView(Ref):
    """One data card: what a data run (or a retraining's increment) fetched, dropped and kept."""

    key: str
    """The data card's stage key (``artifacts/data_card/<key>/``; the ``data_card_hash`` tag)."""
    path: str
    created_at: str | None = None
    newest: bool = False
    """The newest card: what the next training would read."""
    champion: bool = False
    """The card the champion was trained on (its ``data_card_hash`` tag)."""
    run: AirflowRun | None = None
    """The ``llmops_data`` run that wrote it (or the ``llmops_retrain`` run, for an increment)."""
    funnel: str | None = None
    """The data run's ``funnel.png`` (a report path)."""
    sources: list[DataSource]
    """Pages fetched and failed by reason, per crawled site."""
    documents: DocumentCounts
    """Documents extracted, dropped per filter, duplicates removed."""
    pii_counts_by_type: dict[str, int]
    docs: int
    docs_with_pii: int
    qa_finetune: int
    qa_heldout: int
    train_tokens: int
    validation_tokens: int
    new_documents: int | None = None
    """An incremental card: the documents new to the champion."""
    replay_documents: int | None = None


class DataSection(Section):
    cards: list[DataCardView] = []
    """Newest first: the newest card, the champion's, and the ones before them."""
    total_cards: int = 0


# ---- training -------------------------------------------------------------------------------

Point = tuple[float, float]
"""``(x, y)``: a step and a loss, or a Unix time and a value."""


class LossCurve(Ref):
    train: list[Point] = []
    validation: list[Point] = []


class TrainingJobView(Ref):
    """One training job of a run (pretraining or a fine-tuned variant) and its loss curve."""

    kind: Literal["pretrain", "finetune"]
    name: str
    model: str
    """The exported Hugging Face directory."""
    steps: int | None = None
    first_val_loss: float | None = None
    final_val_loss: float | None = None
    mlflow_run_id: str | None = None
    served: bool = False
    """The variant ``llmops://model`` announces (the one evaluated and served)."""
    curve: LossCurve | None = None
    """Train and validation loss by step, from the run directory's ``metrics.jsonl``."""
    curve_note: str | None = None
    """Why there is no curve (the run directory is gone, no metrics logged)."""


class TrainingRunView(Ref):
    """One ``llmops_train`` run: its report and the jobs it ran."""

    report: str
    """``llmops_train/<run>`` (a report path)."""
    time: dt.datetime
    run: AirflowRun | None = None
    data_card: str | None = None
    jobs: list[TrainingJobView] = []


class TrainingSection(Section):
    runs: list[TrainingRunView] = []
    """Newest first."""
    total_runs: int = 0


# ---- the registry and the gate ------------------------------------------------------------


class GateCheckTag(Ref):
    """One gate check as a registered version's tags record it (``gate.<name>``)."""

    name: str
    passed: bool
    detail: str
    """The check's numbers, as the gate wrote them (``bits_per_byte 1.97 (floor: <= 2.2)``)."""


class VersionView(Ref):
    """A registered version of the served model and its lineage."""

    version: str
    aliases: list[str] = []
    created: dt.datetime | None = None
    gate_result: str | None = None
    gate_checks: list[GateCheckTag] = []
    base_version: str | None = None
    """A retrained version: the champion it continued from (tag ``llmops.base_version``)."""
    data_card_hash: str | None = None
    drift_report: str | None = None
    previous_champion: str | None = None
    run_id: str | None = None
    """The MLflow run it was registered from (its evaluation)."""
    metrics: dict[str, float] = {}
    """The gated metrics (tags ``metric.*``)."""


class EvaluationView(Ref):
    """One evaluation report (``reports/evaluation/<key>/``): the gate's verdict on a model."""

    report: str
    """``evaluation/<key>`` (a report path; ``report.html`` and ``metric_bars.png`` inside)."""
    created_at: str | None = None
    model: str
    passed: bool | None = None
    """None: the report records no verdict."""
    champion_compared: bool = False
    checks: list[GateCheck] = []
    metrics: dict[str, float] = {}


class RegistrySection(Section):
    model: str
    """The registered model the view follows (``serving.model_name``)."""
    champion: str | None = None
    challenger: str | None = None
    versions: list[VersionView] = []
    """Newest first."""
    evaluations: list[EvaluationView] = []
    """Newest first: every gate verdict, failed ones included (they register no version)."""
    mlflow_ui: str | None = None
    """The MLflow UI's address (``mlflow.ui_port``, or the tracking server's URL)."""
    registry_note: str | None = None
    """Why the versions are missing while the evaluations show (no registry yet, unreachable)."""


# ---- the deployment -------------------------------------------------------------------------


class TritonCounters(Ref):
    """Triton's counters for the served model since Triton started (Prometheus, summed over versions)."""

    success: int
    failure: int
    request_ms_mean: float | None = None
    queue_ms_mean: float | None = None
    compute_ms_mean: float | None = None


class TrafficBucket(Ref):
    """Requests of one minute of the inference log."""

    start: float
    answered: int
    refused: int
    errors: int


class TrafficStats(Ref):
    """The served model's inference log over the last hour: rate, refusals, latency percentiles."""

    since: float
    until: float
    requests: int
    answered: int
    refused: int
    """Bad requests the model refused (no answer)."""
    errors: int
    per_minute: float
    compute_ms_p50: float | None = None
    compute_ms_p95: float | None = None
    compute_ms_p99: float | None = None
    """Percentiles of the model's time per request (its batch's compute time); Triton's queue
    time is in :class:`TritonCounters` (a mean: Triton 2.51 exports no quantiles by default)."""
    versions: dict[str, int] = {}
    """Requests answered per registered version (two during a rollout)."""
    timeline: list[TrafficBucket] = []


class DeploymentSection(Section):
    model: str
    http_url: str
    metrics_url: str
    live: bool = False
    ready: bool = False
    model_ready: bool = False
    served_versions: list[str] = []
    """The versions Triton has loaded (Triton's version directories are registered versions)."""
    champion: str | None = None
    last_deploy: DeployResult | None = None
    """``reports/llmops_deploy/latest.json``: the newest deployment or rollback."""
    counters: TritonCounters | None = None
    since_last_check: ServiceWindow | None = None
    """Triton's counters since the monitor's previous check (read only: the monitor's snapshot is kept)."""
    traffic: TrafficStats | None = None
    triton_note: str | None = None
    """Why Triton's part is missing (not answering, model not loaded)."""


# ---- drift and retraining -------------------------------------------------------------------


class SignalPoint(Ref):
    """One window's value of a signal."""

    time: float
    """The window's end (Unix s)."""
    value: float | None = None
    threshold: float
    drifted: bool = False
    drift_decided: bool = False
    """The check whose latest window this was decided drift."""


class SignalSeries(Ref):
    """A data or quality signal over every window the checks judged, oldest first."""

    name: str
    kind: SignalKind
    points: list[SignalPoint] = []


class DriftCheckView(Ref):
    """One ``llmops drift check`` (``reports/llmops_monitor/<time>-v<version>/drift.json``)."""

    time: float
    verdict: Verdict
    message: str
    version: str
    report: str
    """``llmops_monitor/<time>-v<version>`` (a report path; ``drift.html`` inside)."""
    service_alerts: list[str] = []


class RetrainDecisionView(Ref):
    """A line of ``retrain/decisions.jsonl`` and the ``llmops_retrain`` run that decided it."""

    decision: RetrainDecision
    run: AirflowRun


class DriftSection(Section):
    checks: list[DriftCheckView] = []
    """Newest first."""
    total_checks: int = 0
    signals: list[SignalSeries] = []
    decisions: list[RetrainDecisionView] = []
    """Newest first."""
    retrain_starts: list[float] = []
    """When retrainings started (Unix s): drawn on the drift charts."""


# ---- the whole view -------------------------------------------------------------------------


class Summary(Record):
    """``/llmops/api/summary``: every section of the LLMOps view, read when it was asked for."""

    time: dt.datetime
    home: str
    """``LLMOPS_HOME`` as the API server sees it."""
    data: DataSection
    training: TrainingSection
    registry: RegistrySection
    deployment: DeploymentSection
    drift: DriftSection


# ---- the actions: POST /llmops/api/actions/<action> ------------------------------------------


class RetrainRequest(Record):
    """The body of ``POST /llmops/api/actions/retrain`` (optional): ``llmops_retrain``'s Params."""

    clear_failed_gate: bool = False
    """Retrain even when a retraining on the same data failed the gate (the DAG's Param)."""
    cooldown: str | None = Field(None, pattern=DURATION_PATTERN)
    """This run's cooldown after the last deployment (``6h``, ``0``); none: ``retrain.cooldown``."""


class RollbackRequest(Record):
    """The body of ``POST /llmops/api/actions/rollback`` (optional)."""

    to_version: str | None = Field(None, pattern=r"^\s*([1-9][0-9]*)?\s*$")
    """The registered version to serve again; empty: the version the champion replaced."""


class ActionResult(Record):
    """What an action answers: the DAG run it created."""

    action: Literal["retrain", "rollback"]
    dag_id: str
    run_id: str
    url: str
    """The run's page in the Airflow UI."""
    conf: dict[str, str | bool]
    """The run's conf (its Params)."""
    triggered_by: str
    """The user the run is recorded under."""
