"""Monitoring on the session's served champion (``lifecycle``: no second stack, no training):
synthetic users ask the real Triton model through tritonclient, the model writes its
inference log, and ``llmops drift check`` / the ``llmops_monitor`` DAG under the scheduler
decide. Tests run in file order on one traffic history (windows of 20 requests):

    reference window (first 20 after the deployment) | normal | normal  -> no drift
    3 requests in the last 3 s                                          -> not enough data
    | shifted (one odd window)                                          -> no drift (persistence)
    | normal, sent 8 at a time with long answers (latency spike)        -> no drift, service alert, no event
    | shifted | shifted                                                 -> drift, llmops://drift
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from llmops.monitoring import log as inference_log, traffic
from llmops.monitoring.check import run_check

pytestmark = pytest.mark.slow

MONITOR = "llmops_monitor"
WINDOW = 20


def answered(lifecycle) -> int:
    records = inference_log.read_log(inference_log.log_dir(lifecycle.cfg), "llmops").records
    return sum(r.finish_reason in inference_log.ANSWERED for r in records)


def send(lifecycle, questions: list[str], *, max_tokens: int = 8, concurrency: int = 1) -> None:
    """Ask the served model, then wait until the log holds every answer: a record is on disk
    within 5 s of its request (the writer thread flushes whenever its queue is empty)."""
    s = lifecycle.cfg.serving
    before = answered(lifecycle)
    result = traffic.send(questions, url=f"{s.host}:{s.grpc_port}", protocol="grpc", model=s.model_name,
                          max_tokens=max_tokens, concurrency=concurrency)
    assert result.answered == len(questions), result
    deadline = time.monotonic() + 5
    while answered(lifecycle) < before + len(questions):
        assert time.monotonic() < deadline, f"{before + len(questions) - answered(lifecycle)} records missing after 5 s"
        time.sleep(0.1)


def fill_reference(lifecycle) -> None:
    """Top up the first window after the deployment (the live checks and earlier tests' requests count)."""
    if answered(lifecycle) < WINDOW:
        send(lifecycle, traffic.reference_questions(WINDOW - answered(lifecycle), seed=100))


def trigger_monitor(lifecycle, window: str = str(WINDOW)):
    client = lifecycle.client
    run_id = client.trigger(MONITOR, {"window": window})
    deadline = time.monotonic() + 180
    while (state := client.dag_run(MONITOR, run_id).state) not in ("success", "failed"):
        assert time.monotonic() < deadline, f"{MONITOR} run {run_id} still {state}"
        time.sleep(2)
    tis = {t.task_id: t for t in client.task_instances(MONITOR, run_id)}
    log = client.task_log(tis["check"])
    assert state == "success", log[-3000:]
    return run_id, {k: t.state for k, t in tis.items()}, log


def test_starting_the_stack_started_no_monitor_run(lifecycle):
    assert lifecycle.client.dag_runs(MONITOR) == []


def test_traffic_like_the_reference_is_no_drift(lifecycle):
    fill_reference(lifecycle)
    send(lifecycle, traffic.reference_questions(2 * WINDOW, seed=1))
    report = run_check(lifecycle.cfg, window=str(WINDOW))
    assert report.verdict == "no_drift", report.message
    assert report.reference.traffic_requests == WINDOW and report.reference.heldout_questions > 0
    assert [w.requests for w in report.windows] == [WINDOW, WINDOW]
    assert not any(w.drifted for w in report.windows), [w.signals for w in report.windows]
    # The check reads hour files newest first until it holds its two windows: across an hour
    # boundary the reference window's requests may sit in an older file it does not open.
    assert report.log.records >= 2 * WINDOW and report.log.skipped_files == []
    assert report.calibration is not None and report.calibration.false_alarm_rate <= 0.05
    assert report.mlflow_run_id and report.message.startswith("no drift (")


def test_too_few_requests_is_not_enough_data(lifecycle):
    time.sleep(3)
    send(lifecycle, traffic.reference_questions(3, seed=2))
    report = run_check(lifecycle.cfg, window="3s", to_mlflow=False)
    assert report.verdict == "not_enough_data" and report.windows[-1].requests == 3, report.message
    assert report.message.startswith("not enough data (n=3")


def test_one_odd_window_among_normal_ones_is_no_drift(lifecycle):
    send(lifecycle, traffic.shifted_questions(WINDOW, seed=3))
    report = run_check(lifecycle.cfg, window=str(WINDOW), to_mlflow=False)
    previous, latest = report.windows
    assert latest.drifted and not previous.drifted, [s for s in latest.signals if s.drifted]
    assert report.verdict == "no_drift" and report.drifted_signals == {}
    assert "drift needs 2 windows in a row" in report.message, report.message


def test_a_latency_spike_alone_is_reported_and_announces_nothing(lifecycle):
    before = run_check(lifecycle.cfg, window=str(WINDOW), to_mlflow=False)
    (normal_p95,) = [s.value for s in before.windows[-1].signals if s.name == "p95_latency_ms"]
    # The threshold sits well above normal traffic's p95; the DAG's task reads it from the
    # configuration file when it runs.
    config_file = Path(lifecycle.env["LLMOPS_CONFIG"])
    config = yaml.safe_load(config_file.read_text()) or {}
    config.setdefault("monitor", {})["p95_latency_ms"] = round(3 * normal_p95, 1)
    config_file.write_text(yaml.safe_dump(config))
    # Normal questions, but eight at a time and with long answers: queueing and compute time jump.
    send(lifecycle, traffic.reference_questions(WINDOW, seed=4), max_tokens=96, concurrency=8)
    _, tis, log = trigger_monitor(lifecycle)
    assert tis == {"check": "success", "announce_drift": "skipped"}, log[-2000:]
    assert "monitor: service alert (not a reason to retrain): p95_latency_ms=" in log, log[-2000:]
    assert "monitor: no drift (" in log
    assert not lifecycle.client.asset_events(uri="llmops://drift")


def test_a_topic_shift_is_detected_within_two_windows_and_announced(lifecycle):
    from llmops.records.monitoring import DriftEvent, DriftReport

    send(lifecycle, traffic.shifted_questions(2 * WINDOW, seed=5))
    _, tis, log = trigger_monitor(lifecycle)
    assert tis == {"check": "success", "announce_drift": "success"}, log[-2000:]
    assert "monitor: drift detected (" in log
    (event,) = lifecycle.client.asset_events(uri="llmops://drift")
    extra = DriftEvent.load(event.extra)
    assert extra.version == "1" and extra.verdict == "drift" and len(extra.signals) >= 2
    report = DriftReport.read(extra.report)
    assert report.verdict == "drift" and all(w.drifted for w in report.windows)
    assert {"distributions.png", "signals.png", "drift.md", "drift.html"} <= {
        p.name for p in (lifecycle.home / "reports" / MONITOR / extra.report.split("/")[-2]).iterdir()}
    from llmops.registry import tracking

    mlflow = tracking.connect(tracking.tracking_uri(lifecycle.cfg))
    logged = mlflow.get_run(report.mlflow_run_id)
    assert logged.data.tags["drift_verdict"] == "drift" and "drift_token_js" in logged.data.metrics
