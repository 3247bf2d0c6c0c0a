"""The drift report: valid pictures, documents that name every signal and every reason, one MLflow run."""

import time

import numpy as np
import pytest
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

from llmops.config import load_config
from llmops.monitoring.report import ReportSamples, log_to_mlflow, write_report
from llmops.records.monitoring import (
    Calibration,
    DriftReport,
    LogStats,
    ReferenceSummary,
    ServiceWindow,
    Signal,
    WindowResult,
)
from llmops.registry import tracking

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOUR = 3600.0
SKIPPED = "2026010100.jsonl: [Errno 13] Permission denied"


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's Default experiment would create ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return load_config(environ={}, overrides={"home": str(tmp_path / "home")})


def signals(js: float, *, drifted: bool) -> list[Signal]:
    return [
        Signal(name="token_js", kind="data", value=js, threshold=0.35, drifted=drifted),
        Signal(name="length_wasserstein", kind="data", value=0.21, threshold=0.6, reference=41.0, window=44.5,
               p_value=0.12),
        Signal(name="bits_per_byte_ratio", kind="quality", value=1.07, threshold=1.15, reference=1.9, window=2.03),
        Signal(name="language_cramers_v", kind="data", value=None, threshold=0.3,
               reason="one language in both samples"),
        Signal(name="p95_latency_ms", kind="service", value=180.0, threshold=500.0),
    ]


def window(start: float, js: float, *, drifted: bool) -> WindowResult:
    return WindowResult(start=start, end=start + HOUR, requests=120, refused=2, signals=signals(js, drifted=drifted),
                        votes=int(drifted), drifted=False)


def drift_report(at: float = T0 + 3 * HOUR, **changes) -> DriftReport:
    fields = dict(
        time=at, verdict="no_drift", message="no drift (1 of 2 votes; token_js=0.52 > 0.35)", model="llmops",
        version="3", model_uri="models:/llmops/3", window="1h", persistence=2, vote=2,
        reference=ReferenceSummary(heldout_questions=64, heldout_path="/data/heldout.jsonl", traffic_requests=150,
                                   traffic_start=T0 - HOUR, traffic_end=T0, deployed_at=T0 - HOUR),
        windows=[window(at - 2 * HOUR, 0.18, drifted=False), window(at - HOUR, 0.52, drifted=True)],
        service=ServiceWindow(available=False, reason="no previous metrics snapshot yet"),
        service_alerts=["p95 latency 812 ms > 500 ms"],
        calibration=Calibration(windows=20, window_requests=120, false_alarms=1, false_alarm_rate=0.05,
                                signal_rates={"token_js": 0.05, "length_wasserstein": 0.0}),
        log=LogStats(files=3, records=390, skipped_files=[SKIPPED], bad_lines=1, dropped=4),
    )
    return DriftReport(**(fields | changes))


def samples() -> ReportSamples:
    rng = np.random.default_rng(0)
    k = 64
    reference_tokens = rng.dirichlet(np.ones(k + 1))
    return ReportSamples(
        reference_lengths=rng.poisson(40, 150).tolist(), window_lengths=rng.poisson(45, 120).tolist(),
        reference_bits_per_byte=rng.normal(1.9, 0.2, 150).tolist(),
        window_bits_per_byte=rng.normal(2.0, 0.2, 120).tolist(),
        reference_bytes_per_token=rng.normal(4.1, 0.5, 150).tolist(),
        window_bytes_per_token=rng.normal(3.8, 0.5, 120).tolist(),
        reference_tokens=reference_tokens.tolist(), window_tokens=rng.permutation(reference_tokens).tolist(),
        reference_languages={"en": 140, "fr": 10}, window_languages={"en": 80, "de": 30, "fr": 10},
    )


def assert_png(path):
    image = imread(path)
    height, width = image.shape[:2]
    assert height >= 200 and width >= 400, (path, image.shape)
    assert image.std() > 0.01, f"{path} is blank"


def test_report_draws_both_pictures_and_names_every_signal_threshold_and_reason(tmp_path):
    report = drift_report()
    history = [drift_report(T0 + 2 * HOUR, verdict="drift", message="drift detected (token_js=0.5 > 0.35)"),
               drift_report(T0 + HOUR)]  # out of order on purpose: windows are drawn by time
    started = time.perf_counter()
    paths = write_report(tmp_path / "drift", report, samples(), history)
    elapsed = time.perf_counter() - started

    assert [p.name for p in paths] == ["distributions.png", "signals.png", "drift.md", "drift.html"]
    assert all(p.parent == tmp_path / "drift" and p.is_file() for p in paths)
    assert not (tmp_path / "drift" / "drift.json").exists()  # the caller writes the record
    for png in paths[:2]:
        assert_png(png)
    md = paths[2].read_text()
    assert md.index("no_drift") < md.index("## Signals of the latest window")  # the verdict comes first
    assert report.message in md
    for signal in report.windows[-1].signals:
        assert f"| {signal.name} | {signal.kind} |" in md
    for threshold in ("| 0.35 |", "| 0.6 |", "| 1.15 |", "| 0.3 |", "| 500 |"):
        assert threshold in md
    assert "one language in both samples" in md
    assert "2026-01-01T01:00:00Z" in md and "2026-01-01T03:00:00Z" in md  # window bounds in UTC
    assert "Triton's metrics are unavailable: no previous metrics snapshot yet" in md
    assert "p95 latency 812 ms > 500 ms" in md
    assert "false-alarm rate 0.05" in md and "| token_js | 0.05 | 0.35 |" in md
    assert SKIPPED in md and "4 records dropped" in md and "1 bad lines" in md
    assert "/data/heldout.jsonl" in md and "| held-out questions | 64 |" in md
    assert md.count("drift detected (token_js=0.5 > 0.35)") == 1  # history row
    assert md.index("| 2026-01-01T01:00:00Z | 3 | no_drift |") < md.index("| 2026-01-01T02:00:00Z | 3 | drift |")
    page = paths[3].read_text()
    assert '<img src="distributions.png"' in page and '<img src="signals.png"' in page
    assert SKIPPED in page and "token_js" in page
    assert elapsed < 5, f"report took {elapsed:.1f} s"


def test_not_enough_data_with_no_samples_still_renders(tmp_path):
    report = drift_report(verdict="not_enough_data", message="not enough data (n=3)", calibration=None,
                          windows=[WindowResult(start=T0, end=T0 + 60, requests=3, enough_data=False)],
                          service_alerts=[], log=LogStats())
    paths = write_report(tmp_path, report, ReportSamples())
    for png in paths[:2]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        imread(png)
    md = paths[2].read_text()
    assert "**not_enough_data**: not enough data (n=3)" in md
    assert "No calibration was run." in md and "No file was skipped." in md and "No service alerts." in md
    assert write_report(tmp_path / "empty", drift_report(windows=[]), ReportSamples())[2].is_file()


def test_token_shares_of_different_bucket_counts_are_refused():
    with pytest.raises(ValueError, match="same top-K buckets"):
        ReportSamples(reference_tokens=[0.5, 0.5], window_tokens=[0.2, 0.3, 0.5])


def test_a_check_is_one_mlflow_run_with_its_signals_tags_and_report(cfg, tmp_path):
    report = drift_report(verdict="drift", message="drift detected (token_js=0.52 > 0.35)")
    report_dir = tmp_path / "report"
    write_report(report_dir, report, ReportSamples())

    run_id = log_to_mlflow(cfg, report, report_dir)

    client = MlflowClient(tracking.tracking_uri(cfg))
    run = client.get_run(run_id)
    assert run.info.experiment_id == client.get_experiment_by_name(cfg.mlflow.experiment).experiment_id
    assert run.info.run_name == "drift-check-v3" and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["drift_verdict"] == "drift" and tags["llmops.kind"] == "drift_check"
    assert tags["llmops.model"] == "llmops" and tags["llmops.model_version"] == "3"
    metrics = run.data.metrics
    assert metrics["drift_token_js"] == 0.52
    assert metrics["drift_p95_latency_ms"] == 180.0 and metrics["drift_bits_per_byte_ratio"] == 1.07
    assert metrics["drift_requests"] == 120 and metrics["drift_votes"] == 1
    assert metrics["drift_false_alarm_rate"] == 0.05
    assert "drift_language_cramers_v" not in metrics  # no value, no metric
    assert run.data.params == {"window": "1h", "persistence": "2", "vote": "2"}
    artifacts = {a.path for a in client.list_artifacts(run_id, "drift")}
    assert artifacts == {"drift/distributions.png", "drift/signals.png", "drift/drift.md", "drift/drift.html"}

    assert log_to_mlflow(cfg, report, None) == run_id  # a retried task logs into the same run
    later = log_to_mlflow(cfg, drift_report(T0 + 4 * HOUR), None)
    assert later != run_id and client.get_run(later).data.tags["drift_verdict"] == "no_drift"
