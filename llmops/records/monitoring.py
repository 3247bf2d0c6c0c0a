"""Records of monitoring: what ``llmops drift check`` decided and why (``drift.json``), the
Triton metric snapshot kept between checks, and the extra of the ``llmops://drift`` event.

The inference log's own record (one line per request) is declared once, in
``include/triton/inference_log.py`` (the model runs where llmops is not installed), and
read through ``llmops.monitoring.log``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from llmops.records.base import Record
from llmops.records.common import Ref

Verdict = Literal["drift", "no_drift", "not_enough_data"]
SignalKind = Literal["data", "quality", "service"]


class Signal(Ref):
    """One drift signal of one window: its value against its threshold."""

    name: str
    """``length_wasserstein``, ``token_js``, … (logged to MLflow as ``drift_<name>``)."""
    kind: SignalKind
    """``data`` and ``quality`` signals vote for drift; ``service`` ones are shown only."""
    value: float | None = None
    """None when it cannot be computed (``reason`` says why)."""
    threshold: float
    drifted: bool = False
    """``value`` crossed ``threshold``."""
    reference: float | None = None
    """The reference's side of the comparison (a median, a rate), where there is one."""
    window: float | None = None
    """The window's side."""
    p_value: float | None = None
    """The matching test's p-value (KS, chi²), shown for context: decisions use ``value``."""
    reason: str | None = None


class WindowResult(Ref):
    """The signals of one window of traffic."""

    start: float
    """Unix time of the window's first record (or its start, for a window in time)."""
    end: float
    requests: int
    """Answered requests (finish reason ``stop`` or ``length``) in the window."""
    refused: int = 0
    errors: int = 0
    signals: list[Signal] = []
    votes: int = 0
    """Data and quality signals that crossed their thresholds."""
    drifted: bool = False
    """``votes`` reached ``monitor.vote`` (and the window had ``monitor.min_requests``)."""
    enough_data: bool = True


class ReferenceSummary(Ref):
    """What the window was compared with."""

    heldout_questions: int
    """The served model's held-out questions, scored by it in the checking process."""
    heldout_path: str | None = None
    traffic_requests: int = 0
    """Requests of the first window after the deployment."""
    traffic_start: float | None = None
    traffic_end: float | None = None
    deployed_at: float | None = None
    """When the served version started answering (its first logged request)."""


class Calibration(Ref):
    """The thresholds tried on windows resampled from the reference: how often they would
    have raised a false alarm."""

    windows: int
    window_requests: int
    false_alarms: int
    """Resampled windows that drifted (reached the vote)."""
    false_alarm_rate: float
    signal_rates: dict[str, float] = {}
    """Per signal, the share of resampled windows where it crossed its threshold."""


class ServiceWindow(Ref):
    """Triton's own counters over the time since the previous check (Prometheus deltas)."""

    available: bool
    reason: str | None = None
    """Why the metrics are missing (Triton down, no previous snapshot yet)."""
    seconds: float | None = None
    success: int | None = None
    failure: int | None = None
    queue_ms_mean: float | None = None
    compute_ms_mean: float | None = None
    request_ms_mean: float | None = None
    counter_reset: bool = False
    """A counter went down since the previous snapshot: Triton restarted in between."""


class LogStats(Ref):
    """What reading the inference log found."""

    files: int = 0
    records: int = 0
    skipped_files: list[str] = []
    """Unreadable files, each with the reason (skipped with a warning, never fatal)."""
    bad_lines: int = 0
    """Partial or invalid lines skipped (a line being written, a truncated file)."""
    dropped: int = 0
    """Records the model dropped because its writer's queue was full."""


class DriftReport(Record):
    """``drift.json``: one ``llmops drift check``."""

    NAME: ClassVar[str] = "drift.json"

    time: float
    verdict: Verdict
    message: str
    """``drift detected (token_js=0.52 > 0.35, …)``, ``no drift (…)`` or ``not enough data (n=…)``."""
    model: str
    """The Triton model name."""
    version: str
    """The registered version serving (the champion)."""
    model_uri: str | None = None
    window: str
    """The window as asked (``200`` requests, ``1h``)."""
    persistence: int
    vote: int
    reference: ReferenceSummary
    windows: list[WindowResult] = []
    """Oldest first; the last is the latest window."""
    drifted_signals: dict[str, float] = {}
    """The latest window's data and quality signals that crossed their thresholds."""
    service: ServiceWindow
    service_alerts: list[str] = []
    """Service thresholds crossed (p95 latency, failure rate): shown, never a reason to retrain."""
    calibration: Calibration | None = None
    log: LogStats = LogStats()
    report_dir: str | None = None
    mlflow_run_id: str | None = None


class MetricSnapshot(Record):
    """``monitoring/state/triton_metrics.json``: Triton's counters at the previous check, so the
    next one reports deltas (and sees a restart as a counter that went down)."""

    NAME: ClassVar[str] = "triton_metrics.json"

    time: float
    model: str
    counters: dict[str, float]
    """``nv_inference_request_success`` … summed over the model's versions."""


class DriftEvent(Record):
    """The extra of a ``llmops://drift`` event: what drifted, in which report, on which champion."""

    report: str
    """The ``drift.json`` path."""
    verdict: Verdict
    signals: dict[str, float]
    model: str
    version: str
    """The champion version that was serving."""
    model_uri: str | None = None
