"""``llmops drift check`` without a stack: the failures a user meets first (nothing served,
Triton down) and the windows it cuts from the log. The whole check on the real served model,
with traffic through Triton and the ``llmops_monitor`` DAG, is tests/e2e/test_monitor.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.cli import main
from llmops.config import load_config
from llmops.monitoring import log as inference_log
from llmops.monitoring.check import NothingServed, run_check
from llmops.records.monitoring import DriftReport
from tests.monitoring.test_drift import records
from tests.serving.test_backend import random_model  # noqa: F401


def test_nothing_served_means_nothing_to_check(tmp_path: Path) -> None:
    cfg = load_config(environ={}, overrides={"home": str(tmp_path)})
    with pytest.raises(NothingServed, match="nothing served, nothing to check"):
        run_check(cfg, to_mlflow=False)


def test_the_cli_says_nothing_is_served_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path))
    assert main(["drift", "check", "--no-mlflow"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llmops: error: NothingServed: nothing served, nothing to check") and err.count("\n") == 1


@pytest.fixture
def served_with_log(random_model: Path, tmp_path: Path):  # noqa: F811
    """Version 2 of ``llmops`` in the repository (no Triton running) and a log of 60 requests
    like the reference's followed by 40 shifted ones, written by the model's own writer."""
    from llmops.records.serving import RegistryFacts
    from llmops.serving.repository import build_version

    cfg = load_config(environ={}, overrides={"home": str(tmp_path), "serving": {"metrics_port": 1}})
    build_version(cfg, hf_dir=random_model, name="llmops", version=2, info=RegistryFacts(version="2"), kind="cpu")
    writer = inference_log.InferenceLogWriter(inference_log.log_dir(cfg), model="llmops", instance="i0")
    rows = records(60, seed=0) + records(40, seed=1, shift=True)
    for k, row in enumerate(rows):
        row.version, row.time = "2", 1_000_000.0 + k
        writer.submit(inference_log.PendingRecord(row))
    writer.close()
    return cfg


def test_with_triton_down_the_data_check_runs_and_the_service_part_says_why(served_with_log) -> None:
    report = run_check(served_with_log, window="20", now=1_000_200.0, to_mlflow=False)
    assert report.verdict == "drift", report.message  # the last two windows are the shifted ones
    assert [w.requests for w in report.windows] == [20, 20]
    assert report.reference.traffic_requests == 20 and report.reference.heldout_questions == 0
    assert not report.service.available and "did not answer" in (report.service.reason or "")
    (latency,) = [s for s in report.windows[-1].signals if s.name == "p95_latency_ms"]
    assert latency.value == pytest.approx(50.0) and "compute time only" in (latency.reason or "")
    assert DriftReport.read(Path(report.report_dir or "") / DriftReport.NAME) == report
    assert (Path(report.report_dir or "") / "drift.md").read_text().count("drift") > 3


def test_the_reference_window_must_fill_before_a_verdict(served_with_log) -> None:
    report = run_check(served_with_log, window="200", now=1_000_200.0, to_mlflow=False)
    assert report.verdict == "not_enough_data" and "reference is still filling" in report.message


def test_the_reference_traffic_is_kept_once_complete_so_later_checks_read_only_recent_windows(served_with_log) -> None:
    cfg = served_with_log
    first = run_check(cfg, window="20", now=1_000_200.0, to_mlflow=False)
    (log_file,) = (inference_log.log_dir(cfg) / "llmops").glob("*.jsonl")
    lines = log_file.read_text().splitlines(keepends=True)
    log_file.write_text("".join(lines[20:]))  # the deployment's first window has gone (retention)
    again = run_check(cfg, window="20", now=1_000_200.0, to_mlflow=False)
    assert again.reference == first.reference and again.verdict == first.verdict == "drift"
    assert [w.requests for w in again.windows] == [20, 20]
