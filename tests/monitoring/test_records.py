"""Monitoring records round-trip and refuse what they do not know; an inference-log line is
validated against the one dataclass the model writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmops.monitoring import log as inference_log
from llmops.records.base import RecordError
from llmops.records.monitoring import (
    DriftEvent,
    DriftReport,
    MetricSnapshot,
    ReferenceSummary,
    ServiceWindow,
    Signal,
    WindowResult,
)

REPORT = DriftReport(
    time=1.0, verdict="drift", message="drift detected (token_js=0.6 > 0.45)", model="llmops", version="3",
    window="20", persistence=2, vote=2, reference=ReferenceSummary(heldout_questions=24, traffic_requests=20),
    windows=[WindowResult(start=0.0, end=1.0, requests=20, votes=2, drifted=True, signals=[
        Signal(name="token_js", kind="data", value=0.6, threshold=0.45, drifted=True)])],
    drifted_signals={"token_js": 0.6}, service=ServiceWindow(available=False, reason="first scrape"))


@pytest.mark.parametrize("record", [
    REPORT, DriftEvent(report="/r/drift.json", verdict="drift", signals={"token_js": 0.6}, model="llmops", version="3"),
    MetricSnapshot(time=1.0, model="llmops", counters={"nv_inference_request_success": 4.0})])
def test_monitoring_records_round_trip_and_refuse_unknown_fields(record, tmp_path: Path) -> None:
    path = record.write(tmp_path / "r.json")
    assert type(record).read(path) == record
    path.write_text(json.dumps({**json.loads(path.read_text()), "renamed": 1}))
    with pytest.raises(RecordError, match="renamed"):
        type(record).read(path)


def test_a_drift_event_is_plain_json_for_the_airflow_ui() -> None:
    event = DriftEvent(report="/r/drift.json", verdict="drift", signals={"token_js": 0.6}, model="llmops",
                       version="3").dump()
    assert json.loads(json.dumps(event)) == event and "model_uri" not in event or event["model_uri"] is None


def test_an_inference_log_line_is_validated_against_the_models_dataclass() -> None:
    record = inference_log.InferenceRecord(time=1.0, model="llmops", version="3", instance="i",
                                           finish_reason="stop", compute_ms=2.0, batch_size=1)
    line = json.loads(record.to_json())
    assert inference_log._validate(line) == record
    del line["finish_reason"]
    with pytest.raises(ValidationError, match="finish_reason"):
        inference_log._validate(line)
