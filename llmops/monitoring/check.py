"""``llmops drift check``: has the served model's traffic moved away from what it was trained for?

1. **What is served**: the version of ``serving.model_name`` in Triton's model repository
   (nothing there: :class:`NothingServed`, "nothing served, nothing to check").
2. **The reference**: the served model's held-out questions, scored by the served weights
   in this process exactly as the model measures live requests (cached per version), plus
   the traffic of the first window after the deployment (its first logged requests). A new
   champion means a new version, so the reference resets by itself.
3. **The windows**: the latest window of traffic and the ``monitor.persistence - 1`` before
   it, in requests (``200``) or time (``1h``), each judged by :mod:`llmops.monitoring.drift`.
4. **Service**: Triton's own counters since the previous check (:mod:`llmops.monitoring.metrics`)
   and the p95 compute time from the log; alerts are shown, never a reason to retrain. With
   Triton down the data check still runs from the log and the service part says why it is missing.
5. **Report**: ``reports/llmops_monitor/<time>/drift.json`` (a :class:`DriftReport`) with
   Markdown/HTML and plots, and an MLflow run with ``drift_*`` metrics and ``drift_verdict``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from llmops.config import LlmopsConfig, MonitorConfig, duration_seconds
from llmops.errors import PermanentError
from llmops.layout import safe_name
from llmops.monitoring import drift, log as inference_log
from llmops.records.data import DataCard, QaPair
from llmops.records.monitoring import DriftReport, ReferenceSummary, ServiceWindow, Signal, WindowResult
from llmops.records.stages import LatestReport
from llmops.registry.model_card import model_info
from llmops.serving import repository

log = logging.getLogger(__name__)

REPORT_KIND = "llmops_monitor"
HISTORY = 48
"""Earlier reports the signals-over-time plot shows."""
_WINDOW = re.compile(r"^\s*(?:(?P<requests>\d+)|(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smhd]))\s*$")

Progress = Callable[[str], None]


class NothingServed(PermanentError, RuntimeError):
    """No version of the served model is in Triton's repository: there is no traffic to check."""


class DriftCheckError(PermanentError, ValueError):
    """A drift check was asked for something it cannot do (a bad window, a missing reference file)."""


@dataclass(frozen=True)
class Window:
    """A window of traffic: a number of answered requests, or a duration."""

    text: str
    requests: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str | int) -> Window:
        match = _WINDOW.match(str(text))
        if not match:
            raise DriftCheckError(f"window {text!r}: give a number of requests (200) or a duration (90s, 30m, 1h, 1d)")
        if match["requests"]:
            if int(match["requests"]) < 2:
                raise DriftCheckError(f"window {text!r}: a window holds at least 2 requests")
            return cls(str(text).strip(), requests=int(match["requests"]))
        return cls(str(text).strip(), seconds=duration_seconds(match["amount"] + match["unit"]))


@dataclass
class Served:
    """The version Triton serves, as the repository holds it."""

    name: str
    version: str
    """The registered version (what the model logs and answers as ``model_version``)."""
    model_uri: str | None
    version_dir: Path


def served(cfg: LlmopsConfig) -> Served:
    name = cfg.serving.model_name
    versions = repository.served_versions(cfg, name)
    if not versions:
        raise NothingServed(f"nothing served, nothing to check: no version of {name!r} in "
                            f"{repository.repository_path(cfg)} (deploy one: llmops_deploy)")
    info = repository.read_model_info(cfg, name, versions[-1])
    return Served(name, info.version, info.model_uri, repository.repository_path(cfg) / name / str(versions[-1]))


# ---- the reference's held-out half ------------------------------------------------------------


def heldout_file(version_dir: Path) -> Path | None:
    """The held-out Q&A pairs of the data card the served model was trained on, if still there."""
    info = model_info(version_dir / "hf")
    if info is None or info.data_card is None:
        return None
    card = Path(info.data_card.path) / DataCard.NAME
    if not card.is_file():
        return None
    path = Path(DataCard.read(card).outputs["qa"].path) / "heldout.jsonl"
    return path if path.is_file() else None


def _questions(path: Path) -> list[str]:
    questions = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            questions.append(QaPair.model_validate_json(line).question)
        except ValueError:
            try:
                questions.append(str(json.loads(line)["question"]))
            except (ValueError, KeyError, TypeError):
                raise DriftCheckError(f"{path} line {number}: expected a JSON object with a 'question'") from None
    return questions


def heldout_records(cfg: LlmopsConfig, served_model: Served, vocabulary: Sequence[int], questions_file: Path | None
                    ) -> list[Any]:
    """The held-out questions measured by the served weights, as ``InferenceRecord``s with no
    answer (finish reason empty). Scored once per (version, questions, vocabulary), then cached."""
    questions = _questions(questions_file) if questions_file else []
    if not questions:
        return []
    digest = hashlib.sha256(json.dumps([served_model.version, str(served_model.version_dir), questions,
                                        list(vocabulary)]).encode()).hexdigest()[:16]
    cache = cfg.layout.monitor_state / f"heldout-{served_model.name}-{served_model.version}-{digest}.jsonl"
    if cache.is_file():
        read, _ = inference_log.read_file(cache)
        if len(read) == len(questions):
            return read
    backend = repository.load_backend()
    s = cfg.serving
    generator = backend.TextGenerator.from_pretrained(
        served_model.version_dir / "hf", default_max_tokens=s.default_max_tokens, max_tokens_limit=s.max_tokens_limit,
        max_prompt_tokens=s.max_prompt_tokens)
    records = scored_records(backend, generator, questions, vocabulary, model=served_model.name,
                             version=served_model.version)
    _write_records(cache, records)
    return records


def scored_records(backend: Any, generator: Any, questions: Sequence[str], vocabulary: Sequence[int], *,
                   model: str, version: str) -> list[Any]:
    """``questions`` measured by ``generator`` (a ``TextGenerator`` of ``backend``, the served
    ``model.py``) as the model measures live requests: ``InferenceRecord``s with no answer
    (finish reason empty). A question the model refuses is left out: it is not traffic it sees."""
    language, top = inference_log.detect_language(), frozenset(int(t) for t in vocabulary)
    records = []
    for scored in generator.score_questions([backend.GenerationRequest(text=q) for q in questions]):
        if isinstance(scored, Exception):
            continue
        row, nll = scored
        record = inference_log.measure_question(inference_log.InferenceRecord(
            time=0.0, model=model, version=version, instance="reference", finish_reason="", compute_ms=0.0,
            batch_size=0, prompt_tokens=len(row.ids)), row.question, len(row.question_ids), nll)
        records.append(inference_log.complete(
            inference_log.PendingRecord(record, question=row.question, question_ids=row.question_ids), top, language))
    return records


def _write_records(path: Path, records: Sequence[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)


def reference_traffic(cfg: LlmopsConfig, served_model: Served, spec: Window, now: float) -> tuple[list[Any], bool]:
    """The first window of traffic after the deployment, and whether it is complete.

    Until it is complete, the whole log of the version is read (it is young then); once it
    is, it is kept in the state directory, so later checks read only their recent windows
    however long the champion has served.
    """
    name = f"traffic-{served_model.name}-{served_model.version}-{safe_name(spec.text)}.jsonl"
    cache = cfg.layout.monitor_state / name
    if cache.is_file():
        cached, _ = inference_log.read_file(cache)
        if cached:
            return cached, True
    read = inference_log.read_log(inference_log.log_dir(cfg), served_model.name, version=served_model.version,
                                  until=now)
    answered = [r for r in read.records if r.finish_reason in inference_log.ANSWERED]
    traffic, done = _reference_traffic(answered, spec, now)
    if done:
        _write_records(cache, traffic)
    return traffic, done


# ---- windows ------------------------------------------------------------------------------------


def _reference_traffic(answered: Sequence[Any], spec: Window, now: float) -> tuple[list[Any], bool]:
    """The first window after the deployment (its first answered requests), and whether it is complete."""
    if spec.requests is not None:
        return list(answered[:spec.requests]), len(answered) >= spec.requests
    if not answered:
        return [], False
    end = answered[0].time + float(spec.seconds or 0)
    return [r for r in answered if r.time < end], now >= end


def _windows(rest: Sequence[Any], spec: Window, now: float, count: int) -> list[tuple[float, float, list[Any]]]:
    """Up to ``count`` windows ``(start, end, records)`` of ``rest``, oldest first, the last
    ending at the latest request (in requests) or at ``now`` (in time)."""
    windows = []
    for k in range(count):
        if spec.requests is not None:
            end_index = len(rest) - k * spec.requests
            chunk = list(rest[max(0, end_index - spec.requests):end_index]) if end_index > 0 else []
            if chunk:
                windows.append((chunk[0].time, chunk[-1].time, chunk))
        else:
            seconds = float(spec.seconds or 0)
            start, end = now - (k + 1) * seconds, now - k * seconds
            windows.append((start, end, [r for r in rest if start < r.time <= end]))
    return windows[::-1]


def _service(cfg: LlmopsConfig, served_model: Served, window: list[Any], records: Sequence[Any]
             ) -> tuple[ServiceWindow, list[Signal], list[str]]:
    from llmops.monitoring import metrics
    from llmops.serving.server import TritonServer

    m = cfg.monitor
    service = metrics.service_window(cfg.layout.monitor_state, TritonServer(cfg).metrics_url, served_model.name)
    compute = np.array([r.compute_ms for r in window], dtype=np.float64)
    queue_ms = service.queue_ms_mean or 0.0
    p95 = float(np.percentile(compute, 95)) + queue_ms if len(compute) else None
    if service.available and service.success is not None and service.failure is not None:
        total = service.success + service.failure
        failure_rate, source = (service.failure / total if total else None), "Triton's counters"
    else:
        failed = sum(r.finish_reason in ("error", "refused") for r in records)
        failure_rate, source = (failed / len(records) if records else None), "the inference log"
    signals = [
        Signal(name="p95_latency_ms", kind="service", value=p95, threshold=m.p95_latency_ms,
               drifted=p95 is not None and p95 > m.p95_latency_ms,
               reason=None if service.available else f"compute time only: {service.reason}"),
        Signal(name="failure_rate", kind="service", value=failure_rate, threshold=m.failure_rate,
               drifted=failure_rate is not None and failure_rate > m.failure_rate, reason=f"from {source}"),
    ]
    alerts = [f"{s.name}={s.value:.3g} > {s.threshold:g}" for s in signals if s.drifted and s.value is not None]
    return service, signals, alerts


def _describe(signals: Sequence[Signal]) -> str:
    return ", ".join(f"{s.name}={s.value:.3g} {'>' if s.drifted else '<='} {s.threshold:g}"
                     for s in signals if s.value is not None and s.kind != "service")


def _message(verdict: str, latest: WindowResult | None, reference_requests: int, reference_done: bool,
             reference_spec: Window, m: MonitorConfig) -> str:
    """The verdict in one line, with the numbers behind it (what ``llmops_monitor`` prints)."""
    if verdict == "not_enough_data":
        if not reference_done:
            need = f"{reference_spec.requests} requests" if reference_spec.requests else reference_spec.text
            return (f"not enough data (n={reference_requests}): the reference is still filling "
                    f"({reference_requests} answered requests of the first {need} after the deployment)")
        return f"not enough data (n={latest.requests if latest else 0} < {m.min_requests} answered requests)"
    if latest is None:
        return verdict.replace("_", " ")
    crossed = _describe([s for s in latest.signals if s.drifted])
    if verdict == "drift":
        return f"drift detected ({crossed} for {m.persistence} windows)"
    if latest.drifted:
        return f"no drift: the latest window drifted ({crossed}) but drift needs {m.persistence} windows in a row"
    return f"no drift ({_describe(latest.signals)})"


# ---- the check ----------------------------------------------------------------------------------


def run_check(cfg: LlmopsConfig, *, window: str | None = None, reference: Path | None = None,
              now: float | None = None, to_mlflow: bool = True, progress: Progress = log.info) -> DriftReport:
    """Check the served model's recent traffic for drift; writes the report and returns it."""
    m = cfg.monitor
    spec = Window.parse(window or m.window)
    reference_spec = Window.parse(m.reference_window) if m.reference_window else spec
    now = time.time() if now is None else now
    served_model = served(cfg)
    vocabulary = inference_log.read_vocabulary(served_model.version_dir, m.top_k)
    questions_file = Path(reference) if reference else heldout_file(served_model.version_dir)
    if reference and not Path(reference).is_file():
        raise DriftCheckError(f"--reference {reference} does not exist")

    traffic, reference_done = reference_traffic(cfg, served_model, reference_spec, now)
    # Only what the windows need: the last persistence x window of the log.
    read = inference_log.read_log(
        inference_log.log_dir(cfg), served_model.name, version=served_model.version, until=now,
        since=now - m.persistence * spec.seconds if spec.seconds else None,
        newest_answered=m.persistence * spec.requests if spec.requests else None)
    last = [r for r in traffic if traffic and r.time == traffic[-1].time]  # its batch may go on after it
    rest = [r for r in read.records if r.finish_reason in inference_log.ANSWERED
            and (not traffic or r.time > traffic[-1].time or (r.time == traffic[-1].time and r not in last))]
    windows = _windows(rest, spec, now, m.persistence)
    heldout = heldout_records(cfg, served_model, vocabulary, questions_file)
    progress(f"drift check of {served_model.name} version {served_model.version}: {len(heldout)} held-out questions "
             f"+ {len(traffic)} requests after the deployment as reference; {len(rest)} recent requests read")
    reference_sample = drift.Sample.of(heldout + traffic, vocabulary)

    results: list[WindowResult] = []
    for start, end, chunk in windows:
        in_window = [r for r in read.records if start <= r.time <= end]
        results.append(drift.judge(
            reference_sample, drift.Sample.of(chunk, vocabulary), m, start=start, end=end,
            refused=sum(r.finish_reason == "refused" for r in in_window),
            errors=sum(r.finish_reason == "error" for r in in_window)))
    latest_chunk = windows[-1][2] if windows else []
    service, service_signals, alerts = _service(cfg, served_model, latest_chunk, read.records)
    verdict = drift.verdict(results, m) if reference_done else "not_enough_data"
    latest = results[-1] if results else None
    if latest is not None:
        latest.signals = [*latest.signals, *service_signals]
    window_size = spec.requests or (latest.requests if latest else 0)
    calibration = drift.calibrate(reference_sample, max(window_size, m.min_requests), m) \
        if len(reference_sample) >= 2 * m.min_requests else None

    drifted = {s.name: float(s.value) for s in (latest.signals if latest else [])
               if s.drifted and s.kind != "service" and s.value is not None}
    message = _message(verdict, latest, len(traffic), reference_done, reference_spec, m)
    report = DriftReport(
        time=now, verdict=verdict, message=message, model=served_model.name, version=served_model.version,
        model_uri=served_model.model_uri, window=spec.text, persistence=m.persistence, vote=m.vote,
        reference=ReferenceSummary(
            heldout_questions=len(heldout), heldout_path=str(questions_file) if questions_file else None,
            traffic_requests=len(traffic), traffic_start=traffic[0].time if traffic else None,
            traffic_end=traffic[-1].time if traffic else None, deployed_at=traffic[0].time if traffic else None),
        windows=results, drifted_signals=drifted if verdict == "drift" else {}, service=service,
        service_alerts=alerts, calibration=calibration, log=read.stats)
    return _write(cfg, report, reference_sample, drift.Sample.of(latest_chunk, vocabulary), to_mlflow, progress)


def _history(cfg: LlmopsConfig) -> list[DriftReport]:
    reports = []
    for path in sorted(cfg.layout.reports(REPORT_KIND).glob(f"*/{DriftReport.NAME}"))[-HISTORY:]:
        try:
            reports.append(DriftReport.read(path))
        except Exception as exc:  # noqa: BLE001 - an unreadable old report only leaves a gap in a plot
            log.warning("skipping %s: %s", path, exc)
    return reports


def _write(cfg: LlmopsConfig, report: DriftReport, reference: drift.Sample, window: drift.Sample, to_mlflow: bool,
           progress: Progress) -> DriftReport:
    from llmops.monitoring.report import ReportSamples, log_to_mlflow, write_report

    stamp = datetime.fromtimestamp(report.time, tz=UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    out = cfg.layout.report(REPORT_KIND, f"{stamp}-v{report.version}")
    history = _history(cfg)
    out.mkdir(parents=True, exist_ok=True)
    report.report_dir = str(out)
    samples = ReportSamples(
        reference_lengths=list(reference.lengths), window_lengths=list(window.lengths),
        reference_bits_per_byte=list(reference.bits_per_byte[reference.bits_per_byte > 0]),
        window_bits_per_byte=list(window.bits_per_byte[window.bits_per_byte > 0]),
        reference_bytes_per_token=list(reference.bytes_per_token[reference.bytes_per_token > 0]),
        window_bytes_per_token=list(window.bytes_per_token[window.bytes_per_token > 0]),
        reference_tokens=list(reference.token_shares()), window_tokens=list(window.token_shares()),
        reference_languages=dict(Counter(v or "?" for v in reference.languages)),
        window_languages=dict(Counter(v or "?" for v in window.languages)))
    write_report(out, report, samples, history)
    report.write(out / DriftReport.NAME)
    if to_mlflow:
        report.mlflow_run_id = log_to_mlflow(cfg, report, out)
        report.write(out / DriftReport.NAME)
    LatestReport(run_id=out.name, path=str(out)).write(cfg.layout.latest_report(REPORT_KIND))
    progress(f"report {out / DriftReport.NAME}")
    return report


