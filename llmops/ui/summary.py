"""The LLMOps view's summary: every section read from ``$LLMOPS_HOME`` when it is asked for.

``build_summary(cfg)`` returns one :class:`~llmops.records.ui.Summary`. Each section is
read by its own function and guarded: a section that fails to read becomes ``state:
error`` with the reason, and the others still show (a half-written report, an unreachable
registry or a Triton that is down must not take the page with them). A section with
nothing in it yet is ``state: empty`` and says what would fill it.

What each section reads (every path through ``cfg.layout``):

* data runs: the data cards (``artifacts/data_card/<key>/data_card.json``, newest by their
  manifest's ``created_at``; the champion's is named by its ``data_card_hash`` tag) and the
  data run reports that point to them (``reports/llmops_data/<run>/``: ``funnel.png``);
* training: ``reports/llmops_train/<run>/summary.json`` and each job's ``metrics.jsonl`` in
  its run directory (the loss curves);
* the registry: the MLflow registry's versions of ``serving.model_name`` (aliases, gate and
  lineage tags) and every evaluation report (``reports/evaluation/<key>/metrics.json``, failed
  gates included: they register nothing);
* the deployment: Triton's health, model metadata and Prometheus counters, the monitor's last
  metric snapshot (read, never written), the inference log's last hour and the newest deploy
  report;
* drift: the drift reports (``reports/llmops_monitor/<time>-v<version>/drift.json``) and the
  retraining decisions (``retrain/decisions.jsonl``).

Nothing here writes: an MLflow store that does not exist yet is not created (the view says
"nothing registered yet"), Triton's metric snapshot is left for the monitor.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from llmops.config import LlmopsConfig
from llmops.errors import PermanentError
from llmops.layout import Layout, safe_name
from llmops.records.base import RecordError
from llmops.records.data import DataCard, DataReport, LatestDataReport
from llmops.records.evaluation import EvaluationReport
from llmops.records.monitoring import DriftReport, SignalKind
from llmops.records.serving import DeployResult
from llmops.records.stages import LatestReport, StageManifest
from llmops.records.training import Kind, TrainedModel, TrainingReport
from llmops.records.ui import (
    AirflowRun,
    DataCardView,
    DataSection,
    DeploymentSection,
    DriftCheckView,
    DriftSection,
    EvaluationView,
    GateCheckTag,
    LossCurve,
    Point,
    RegistrySection,
    RetrainDecisionView,
    SignalPoint,
    SignalSeries,
    Summary,
    TrafficBucket,
    TrafficStats,
    TrainingJobView,
    TrainingRunView,
    TrainingSection,
    TritonCounters,
    VersionView,
)

log = logging.getLogger(__name__)

DATA_DAG, TRAIN_DAG, RETRAIN_DAG, ROLLBACK_DAG = "llmops_data", "llmops_train", "llmops_retrain", "llmops_rollback"
VIEW_DAGS = (DATA_DAG, TRAIN_DAG, "llmops_evaluate", "llmops_deploy", "llmops_monitor", RETRAIN_DAG)
"""The DAGs whose runs the view shows: reading it needs read access to their runs."""

# The report kinds the view reads and serves, as their writers name them (REPORT_KIND of
# llmops.data.pipeline, llmops.training.pipeline, llmops.monitoring.check; the evaluation's
# and the deployment's reports). Literal here so that importing this module stays cheap;
# tests/ui checks they match the writers'.
DATA_REPORTS, TRAIN_REPORTS, EVAL_REPORTS, DEPLOY_REPORTS, DRIFT_REPORTS = (
    "llmops_data", "llmops_train", "evaluation", "llmops_deploy", "llmops_monitor")
REPORT_KINDS = (DATA_REPORTS, TRAIN_REPORTS, EVAL_REPORTS, DEPLOY_REPORTS, DRIFT_REPORTS)

MAX_CARDS = 6
MAX_TRAINING_RUNS = 6
MAX_EVALUATIONS = 10
MAX_VERSIONS = 20
MAX_DRIFT_REPORTS = 96
"""Drift reports read for the charts: four days of hourly checks."""
MAX_CHECKS_SHOWN = 12
MAX_DECISIONS = 20
MAX_CURVE_POINTS = 300
TRAFFIC_WINDOW_S = 3600.0
TRAFFIC_BUCKET_S = 60.0
PROBE_TIMEOUT_S = 1.5
"""Each call to Triton: connection refused answers at once, a host that swallows packets must
not hold the page for long."""

T = TypeVar("T")

# ---- report paths: the only files the view serves ------------------------------------------


class ReportPathError(PermanentError, ValueError):
    """A path the view will not serve: outside the reports, hidden, or not a file."""


def report_path(layout: Layout, path: str | Path) -> str | None:
    """``path`` as a report path (``<kind>/<name>/<file>``, relative to ``reports/``), or None when
    it is not inside the reports of a kind the view serves."""
    resolved = Path(path).resolve()
    for kind in REPORT_KINDS:
        root = layout.reports(kind).resolve()
        if resolved.is_relative_to(root) and resolved != root:
            return str(PurePosixPath(kind, *resolved.relative_to(root).parts))
    return None


def report_file(layout: Layout, path: str) -> Path:
    """The file a report path names, or :class:`ReportPathError`.

    Refused: an absolute path, ``..``, ``.`` or a hidden component (``.tmp-*`` is work in
    progress), a backslash or NUL, a first component that is not a report kind, and anything
    that resolves (through symlinks) outside that kind's reports or is not a regular file.
    """
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise ReportPathError(f"not a report path: {path!r}")
    parts = path.split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise ReportPathError(f"not a report path: {path!r}")
    kind, rest = parts[0], parts[1:]
    if kind not in REPORT_KINDS:
        raise ReportPathError(f"not a report kind: {kind!r} (one of {', '.join(REPORT_KINDS)})")
    root = layout.reports(kind).resolve()
    target = root.joinpath(*rest).resolve()
    if not target.is_relative_to(root):
        raise ReportPathError(f"{path!r} leads outside the {kind} reports")
    if not target.is_file():
        raise ReportPathError(f"no report file {path!r}")
    return target


# ---- Airflow runs ----------------------------------------------------------------------------


class _Runs:
    """Report directories are named ``safe_name(run_id)`` (``:`` and ``+`` replaced), so the run
    a report belongs to is found among the runs Airflow knows (handed in by the plugin), or from
    a ``latest.json`` that recorded it."""

    def __init__(self, airflow_runs: Mapping[str, Sequence[str]]) -> None:
        self._by_name = {(dag_id, safe_name(run_id)): run_id
                         for dag_id, run_ids in airflow_runs.items() for run_id in run_ids}

    def find(self, dag_id: str, report_name: str, *hints: str | None) -> AirflowRun | None:
        for hint in hints:
            if hint and safe_name(hint) == report_name:
                return AirflowRun(dag_id=dag_id, run_id=hint)
        run_id = self._by_name.get((dag_id, report_name))
        return AirflowRun(dag_id=dag_id, run_id=run_id) if run_id else None


def _latest_run_id(layout: Layout, kind: str) -> str | None:
    path = layout.latest_report(kind)
    try:
        return LatestReport.read(path).run_id if path.exists() else None
    except RecordError:
        return None


# ---- the whole summary -----------------------------------------------------------------------


def build_summary(cfg: LlmopsConfig, *, now: float | None = None,
                  airflow_runs: Mapping[str, Sequence[str]] | None = None, host: str = "127.0.0.1",
                  probe_timeout_s: float = PROBE_TIMEOUT_S) -> Summary:
    """Every section of the view, read now.

    ``airflow_runs`` (dag id → run ids Airflow knows) links reports to their DAG runs; ``host``
    is the host name the user reached Airflow at, for the MLflow UI's address.
    """
    now = time.time() if now is None else now
    runs = _Runs(airflow_runs or {})
    name = cfg.serving.model_name
    registry = _guarded("registry", lambda: _registry(cfg, host),
                        lambda note: _RegistryRead(RegistrySection(model=name, state="error", note=note), None))
    champion = registry.section.champion
    data = _guarded("data", lambda: _data(cfg, runs, registry.champion_card),
                    lambda note: DataSection(state="error", note=note))
    training = _guarded("training", lambda: _training(cfg, runs),
                        lambda note: TrainingSection(state="error", note=note))
    deployment = _guarded("deployment", lambda: _deployment(cfg, champion, now, probe_timeout_s),
                          lambda note: DeploymentSection(model=name, http_url="", metrics_url="", state="error",
                                                         note=note))
    drift = _guarded("drift", lambda: _drift(cfg), lambda note: DriftSection(state="error", note=note))
    return Summary(time=dt.datetime.fromtimestamp(now, dt.UTC), home=str(cfg.home), data=data, training=training,
                   registry=registry.section, deployment=deployment, drift=drift)


def _guarded(what: str, read: Callable[[], T], failed: Callable[[str], T]) -> T:
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - one section's failure must not take the page with it
        log.warning("LLMOps view: the %s section failed: %s", what, exc, exc_info=True)
        return failed(f"reading the {what} section failed: {type(exc).__name__}: {exc}")


# ---- data runs -------------------------------------------------------------------------------


def _finished_outputs(root: Path, record: str) -> list[tuple[StageManifest, Path]]:
    """The finished keyed outputs under ``root`` (a manifest, written last) holding the file
    ``record``, newest first; work in progress (``.tmp-*``) is left out."""
    found = []
    for path in root.iterdir() if root.is_dir() else ():
        if path.name.startswith(".") or not (path / StageManifest.NAME).is_file() or not (path / record).is_file():
            continue
        try:
            found.append((StageManifest.read(path / StageManifest.NAME), path))
        except RecordError as exc:
            log.warning("LLMOps view: skipping %s: %s", path, exc)
    # created_at has whole seconds: outputs finished within one second are ordered by when
    # their manifest (written last) was written.
    return sorted(found, key=lambda item: (item[0].created_at, (item[1] / StageManifest.NAME).stat().st_mtime_ns),
                  reverse=True)


def _data_reports(layout: Layout) -> dict[str, str]:
    """Data card directory (resolved) → the name of the data run report that wrote it."""
    out = {}
    for path in sorted(layout.reports(DATA_REPORTS).glob(f"*/{DataReport.NAME}")):
        try:
            report = DataReport.read(path)
        except RecordError as exc:
            log.warning("LLMOps view: skipping %s: %s", path, exc)
            continue
        if report.data_card is not None:
            out[str(Path(report.data_card.json_file).parent.resolve())] = path.parent.name
    return out


def _data(cfg: LlmopsConfig, runs: _Runs, champion_card: str | None) -> DataSection:
    layout = cfg.layout
    outputs = _finished_outputs(layout.stage_dir("data_card"), DataCard.NAME)
    if not outputs:
        return DataSection(state="empty", note="no data card yet: trigger llmops_data (its last task writes one)")
    shown = outputs[:MAX_CARDS]
    shown += [(m, p) for m, p in outputs[MAX_CARDS:] if p.name == champion_card]
    reports = _data_reports(layout)
    latest_path = layout.latest_report(DATA_REPORTS)
    latest = LatestDataReport.read(latest_path).run_id if latest_path.exists() else None
    cards = []
    for i, (manifest, path) in enumerate(shown):
        card = DataCard.read(path / DataCard.NAME)
        report_name = reports.get(str(path.resolve()))
        run = None
        if card.retrain is not None:
            run = AirflowRun(dag_id=RETRAIN_DAG, run_id=card.retrain.run_id)
        elif report_name:
            run = runs.find(DATA_DAG, report_name, latest)
        funnel = layout.report(DATA_REPORTS, report_name) / "funnel.png" if report_name else None
        splits = card.tokens.splits
        cards.append(DataCardView(
            key=path.name, path=str(path), created_at=manifest.created_at, newest=i == 0,
            champion=path.name == champion_card, run=run,
            funnel=report_path(layout, funnel) if funnel and funnel.is_file() else None,
            sources=card.sources, documents=card.documents, pii_counts_by_type=card.pii.pii_counts_by_type,
            docs=card.pii.docs, docs_with_pii=card.pii.docs_with_pii, qa_finetune=card.qa.finetune_pairs,
            qa_heldout=card.qa.heldout_pairs,
            train_tokens=splits["train"].n_tokens if "train" in splits else 0,
            validation_tokens=splits["validation"].n_tokens if "validation" in splits else 0,
            new_documents=card.increment.new_documents if card.increment else None,
            replay_documents=card.increment.replay_documents if card.increment else None))
    return DataSection(cards=cards, total_cards=len(outputs))


# ---- training --------------------------------------------------------------------------------


def _curve(entry: TrainedModel) -> tuple[LossCurve | None, str | None]:
    """The job's train and validation loss by step, from its ``metrics.jsonl``, or why there is none."""
    from llmops.training.plots import read_metrics, series

    if entry.run_dir is None:
        return None, "a base model given by hand: no training run"
    path = Path(entry.run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None, f"{path} is gone"
    data = series(read_metrics(path))
    if not data["train_loss"] and not data["val_loss"]:
        return None, "no loss values logged"
    return LossCurve(train=_thin(data["train_loss"]), validation=_thin(data["val_loss"])), None


def _thin(points: Sequence[tuple[int, float]], limit: int = MAX_CURVE_POINTS) -> list[Point]:
    """At most ``limit`` points, evenly spaced, the last one kept (a curve's end is its verdict)."""
    pts = [(float(x), float(y)) for x, y in points]
    if len(pts) <= limit:
        return pts
    step = math.ceil(len(pts) / limit)
    return pts[::step] + ([pts[-1]] if (len(pts) - 1) % step else [])


def _training(cfg: LlmopsConfig, runs: _Runs) -> TrainingSection:
    layout = cfg.layout
    paths = sorted(layout.reports(TRAIN_REPORTS).glob(f"*/{TrainingReport.NAME}"),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    if not paths:
        return TrainingSection(state="empty", note="no training run yet: llmops_train starts when llmops_data "
                                                    "announces new token shards (llmops://tokens)")
    latest = _latest_run_id(layout, TRAIN_REPORTS)
    views = []
    for path in paths[:MAX_TRAINING_RUNS]:
        report = TrainingReport.read(path)
        entries: list[tuple[Kind, TrainedModel]] = [("pretrain", report.pretrain)] if report.pretrain else []
        entries += [("finetune", entry) for entry in report.finetune]
        jobs = []
        for kind, entry in entries:
            curve, note = _curve(entry)
            jobs.append(TrainingJobView(
                kind=kind, name=entry.name, model=entry.model, steps=entry.steps, first_val_loss=entry.first_val_loss,
                final_val_loss=entry.final_val_loss, mlflow_run_id=entry.mlflow_run_id,
                served=kind == "finetune" and entry.name == report.served_variant, curve=curve, curve_note=note))
        views.append(TrainingRunView(
            report=str(PurePosixPath(TRAIN_REPORTS, path.parent.name)),
            time=dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC),
            run=runs.find(TRAIN_DAG, path.parent.name, latest), data_card=report.data_card, jobs=jobs))
    return TrainingSection(runs=views, total_runs=len(paths))


# ---- the registry and the gate ------------------------------------------------------------


@dataclass
class _RegistryRead:
    section: RegistrySection
    champion_card: str | None
    """The champion's ``data_card_hash`` tag: the key of the data card it was trained on."""


def registry_store_missing(cfg: LlmopsConfig) -> str | None:
    """Why there is no registry to read yet (the embedded SQLite store was never created), or None.

    Connecting would create and migrate an empty store: a page view must not."""
    from llmops.registry.tracking import redact, tracking_uri

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return f"no MLflow store yet ({redact(uri)}): nothing is registered"
    return None


def mlflow_ui(cfg: LlmopsConfig, host: str) -> str:
    """The MLflow UI: a tracking server's own address, else ``mlflow.ui_port`` on the host the
    user reached Airflow at (the embedded stack serves both on one machine)."""
    from llmops.registry.tracking import tracking_uri

    uri = tracking_uri(cfg)
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return f"http://{host}:{cfg.mlflow.ui_port}"


def _evaluations(layout: Layout) -> list[EvaluationView]:
    views = []
    for manifest, path in _finished_outputs(layout.reports(EVAL_REPORTS), EvaluationReport.NAME)[:MAX_EVALUATIONS]:
        report = EvaluationReport.read(path / EvaluationReport.NAME)
        views.append(EvaluationView(
            report=str(PurePosixPath(EVAL_REPORTS, path.name)), created_at=manifest.created_at, model=report.model,
            passed=report.gate.passed if report.gate else None,
            champion_compared=report.gate.champion_compared if report.gate else False,
            checks=report.gate.checks if report.gate else [], metrics=report.metrics.numbers()))
    return views


def _version_view(mv: Any, aliases: list[str]) -> VersionView:
    from llmops.registry import model_registry as reg

    tags: dict[str, str] = dict(mv.tags or {})
    checks = []
    for key, value in sorted(tags.items()):
        if key.startswith("gate."):
            verdict, _, detail = value.partition(": ")
            checks.append(GateCheckTag(name=key.removeprefix("gate."), passed=verdict == "passed", detail=detail))
    metrics = {}
    for key, value in tags.items():
        if key.startswith("metric."):
            try:
                metrics[key.removeprefix("metric.")] = float(value)
            except ValueError:
                continue
    created = dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC) if mv.creation_timestamp else None
    return VersionView(version=str(mv.version), aliases=aliases, created=created, gate_result=tags.get("gate_result"),
                       gate_checks=checks, base_version=tags.get(reg.BASE_VERSION_TAG),
                       data_card_hash=tags.get(reg.DATA_CARD_TAG), drift_report=tags.get(reg.DRIFT_REPORT_TAG),
                       previous_champion=tags.get(reg.PREVIOUS_CHAMPION_TAG), run_id=mv.run_id, metrics=metrics)


def _registry(cfg: LlmopsConfig, host: str) -> _RegistryRead:
    name = cfg.serving.model_name
    section = RegistrySection(model=name, mlflow_ui=mlflow_ui(cfg, host), evaluations=_evaluations(cfg.layout))
    champion_card = None
    missing = registry_store_missing(cfg)
    if missing:
        section.registry_note = missing
    else:
        from llmops.registry import model_registry as reg, tracking

        try:
            client = tracking.connect(tracking.tracking_uri(cfg))
        except tracking.TrackingError as exc:  # the evaluations still show
            section.registry_note = str(exc)
            client = None
        if client is not None:
            escaped = name.replace("'", "\\'")
            found = sorted(client.search_model_versions(f"name = '{escaped}'"), key=lambda mv: int(mv.version),
                           reverse=True)
            section.champion = reg.version_for(cfg, name, reg.CHAMPION) if found else None
            section.challenger = reg.version_for(cfg, name, reg.CHALLENGER) if found else None
            aliases = {alias: version for alias, version in (("champion", section.champion),
                                                             ("challenger", section.challenger)) if version}
            section.versions = [_version_view(mv, [a for a, v in aliases.items() if v == str(mv.version)])
                                for mv in found[:MAX_VERSIONS]]
            champion = next((v for v in section.versions if v.version == section.champion), None)
            if champion is None and section.champion:  # older than the versions shown
                champion = _version_view(client.get_model_version(name, section.champion), ["champion"])
            champion_card = champion.data_card_hash if champion else None
            if not found:
                section.registry_note = f"no version of {name} registered yet"
    if not section.versions and not section.evaluations:
        section.state = "empty"
        section.note = ("nothing evaluated or registered yet: llmops_evaluate gates each trained model and "
                        "registers the ones that pass")
    return _RegistryRead(section, champion_card)


# ---- the deployment --------------------------------------------------------------------------


def _deployment(cfg: LlmopsConfig, champion: str | None, now: float, timeout: float) -> DeploymentSection:
    from llmops.monitoring.metrics import (
        COMPUTE_US,
        FAILURE,
        QUEUE_US,
        REQUEST_US,
        SUCCESS,
        MetricsUnavailable,
        scrape,
        service_window,
    )
    from llmops.serving.server import TritonServer

    server = TritonServer(cfg)
    name = cfg.serving.model_name
    section = DeploymentSection(model=name, http_url=server.http_url, metrics_url=server.metrics_url,
                                champion=champion, traffic=_traffic(cfg, name, now))
    latest = cfg.layout.latest_report(DEPLOY_REPORTS)
    if latest.is_file():
        section.last_deploy = DeployResult.read(latest)

    section.live = server.get_json("/v2/health/live", "health", timeout) is not None
    if not section.live:
        section.state = "empty"
        section.note = (f"Triton is not answering at {server.http_url}: nothing is served "
                        f"(llmops stack start, or llmops serve start)")
        return section
    section.ready = server.ready(timeout)
    metadata = server.get_json(f"/v2/models/{name}", "metadata", timeout)
    section.served_versions = sorted((str(v) for v in (metadata or {}).get("versions", [])), key=_version_key)
    section.model_ready = server.get_json(f"/v2/models/{name}/ready", "health", timeout) is not None
    if not section.model_ready:
        section.triton_note = f"Triton is up but {name} is not loaded: no champion deployed yet, or it failed to load"
    try:
        counters = scrape(server.metrics_url, name, timeout_s=timeout)
        success = counters[SUCCESS]

        def mean_ms(total_us: float) -> float | None:
            return total_us / success / 1000.0 if success > 0 else None

        section.counters = TritonCounters(
            success=round(success), failure=round(counters[FAILURE]), request_ms_mean=mean_ms(counters[REQUEST_US]),
            queue_ms_mean=mean_ms(counters[QUEUE_US]),
            compute_ms_mean=mean_ms(sum(counters[n] for n in COMPUTE_US)))
        # save=False: the monitor's snapshot is its own; the view only reads the deltas since it.
        section.since_last_check = service_window(cfg.layout.monitor_state, server.metrics_url, name, now, save=False)
    except MetricsUnavailable as exc:
        section.triton_note = str(exc)
    return section


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def _traffic(cfg: LlmopsConfig, name: str, now: float) -> TrafficStats | None:
    """The inference log's last hour: requests per minute by outcome, latency percentiles."""
    import numpy as np

    from llmops.monitoring.log import ANSWERED, log_dir, read_log

    since = now - TRAFFIC_WINDOW_S
    records = read_log(log_dir(cfg), name, since=since, until=now).records
    if not records:
        return None
    answered = [r for r in records if r.finish_reason in ANSWERED]
    buckets = [TrafficBucket(start=since + i * TRAFFIC_BUCKET_S, answered=0, refused=0, errors=0)
               for i in range(int(TRAFFIC_WINDOW_S / TRAFFIC_BUCKET_S))]
    versions: dict[str, int] = {}
    for r in records:
        bucket = buckets[min(int((r.time - since) // TRAFFIC_BUCKET_S), len(buckets) - 1)]
        if r.finish_reason in ANSWERED:
            bucket.answered += 1
            versions[r.version] = versions.get(r.version, 0) + 1
        elif r.finish_reason == "refused":
            bucket.refused += 1
        else:
            bucket.errors += 1
    latency = np.asarray([r.compute_ms for r in answered], dtype=float)
    p50, p95, p99 = (float(v) for v in np.percentile(latency, [50, 95, 99])) if len(latency) else (None,) * 3
    return TrafficStats(
        since=since, until=now, requests=len(records), answered=len(answered),
        refused=sum(b.refused for b in buckets), errors=sum(b.errors for b in buckets),
        per_minute=len(records) / (TRAFFIC_WINDOW_S / 60.0), compute_ms_p50=p50, compute_ms_p95=p95,
        compute_ms_p99=p99, versions=versions, timeline=buckets)


# ---- drift and retraining -------------------------------------------------------------------


def _drift_reports(layout: Layout) -> tuple[list[tuple[DriftReport, str]], int]:
    """The newest drift reports, oldest first, with their report paths; and how many there are.
    Directory names start with the check's UTC time, so name order is time order."""
    paths = sorted(layout.reports(DRIFT_REPORTS).glob(f"*/{DriftReport.NAME}"))
    out = []
    for path in paths[-MAX_DRIFT_REPORTS:]:
        try:
            out.append((DriftReport.read(path), str(PurePosixPath(DRIFT_REPORTS, path.parent.name))))
        except RecordError as exc:  # a report being rewritten, or of a newer llmops: a gap in the charts
            log.warning("LLMOps view: skipping %s: %s", path, exc)
    return sorted(out, key=lambda item: item[0].time), len(paths)


def _signal_series(reports: list[DriftReport]) -> list[SignalSeries]:
    """Every signal over every window the checks judged: data and quality signals first (they
    vote), then the service ones (shown only)."""
    from llmops.monitoring.report import window_points  # one reading of overlapping windows, as signals.png

    points = window_points(reports[-1], reports[:-1])
    order = {"data": 0, "quality": 1, "service": 2}
    kinds: dict[str, SignalKind] = {}
    for window, _ in points:
        for signal in window.signals:
            kinds.setdefault(signal.name, signal.kind)
    series = []
    for signal_name in sorted(kinds, key=lambda n: order.get(kinds[n], 3)):
        found = [SignalPoint(time=window.end, threshold=s.threshold, drifted=s.drifted, drift_decided=decided,
                             value=s.value if s.value is not None and math.isfinite(s.value) else None)
                 for window, decided in points for s in window.signals if s.name == signal_name]
        series.append(SignalSeries(name=signal_name, kind=kinds[signal_name], points=found))
    return series


def _drift(cfg: LlmopsConfig) -> DriftSection:
    from llmops.retrain.guards import decisions

    reports, total = _drift_reports(cfg.layout)
    made = decisions(cfg)
    if not reports and not made:
        return DriftSection(state="empty", note="no drift check yet: llmops_monitor checks the served model's "
                                                "traffic (monitor.schedule, hourly by default) once a model serves")
    section = DriftSection(total_checks=total)
    section.checks = [DriftCheckView(time=r.time, verdict=r.verdict, message=r.message, version=r.version,
                                     report=path, service_alerts=r.service_alerts)
                      for r, path in reversed(reports[-MAX_CHECKS_SHOWN:])]
    if reports:
        section.signals = _signal_series([r for r, _ in reports])
    section.decisions = [RetrainDecisionView(decision=d, run=AirflowRun(dag_id=RETRAIN_DAG, run_id=d.run_id))
                         for d in reversed(made[-MAX_DECISIONS:])]
    section.retrain_starts = [d.time.timestamp() for d in made if d.outcome == "started"]
    if not reports:
        section.note = "no drift check yet: the retraining decisions below came by schedule or by hand"
    return section
