"""Triton's own view of the served model: request counts and latencies from its Prometheus
endpoint, as deltas since the previous drift check.

Triton's counters only grow from its start, so one scrape says little; the difference
between two scrapes says what happened in between. The previous scrape is kept as a
``MetricSnapshot`` per model in the monitor state directory. A counter that went down means
Triton restarted (or reloaded the model) in between: the counters began again from zero, so
the current values are the deltas since that restart.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from llmops.errors import TransientError
from llmops.layout import safe_name
from llmops.records.base import RecordError
from llmops.records.monitoring import MetricSnapshot, ServiceWindow

SUCCESS = "nv_inference_request_success"
FAILURE = "nv_inference_request_failure"
REQUEST_US = "nv_inference_request_duration_us"
QUEUE_US = "nv_inference_queue_duration_us"
COMPUTE_US = ("nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
              "nv_inference_compute_output_duration_us")
COUNTERS = (SUCCESS, FAILURE, "nv_inference_count", "nv_inference_exec_count", REQUEST_US, QUEUE_US, *COMPUTE_US)
"""Triton's per-model counters (labels ``model`` and ``version``) that a check keeps."""

# No proxies: an http_proxy in the environment must not swallow a scrape of a local server.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MetricsUnavailable(TransientError):
    """Triton's metrics endpoint did not answer with Prometheus text: Triton is down, starting
    or restarting, so a later check may succeed."""


def scrape(url: str, model: str, timeout_s: float = 5.0) -> dict[str, float]:
    """Every counter of :data:`COUNTERS` for ``model``, summed over its versions (a rollout
    serves two at once); 0 for a counter Triton does not show (the model is not loaded)."""
    try:
        with _NO_PROXY.open(url, timeout=timeout_s) as resp:
            text = resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        raise MetricsUnavailable(f"Triton's metrics at {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
        raise MetricsUnavailable(f"Triton's metrics at {url} did not answer: {exc}") from None
    counters = dict.fromkeys(COUNTERS, 0.0)
    try:
        for family in text_string_to_metric_families(text):
            # The parser drops a counter family's ``_total`` and adds it to every sample; Triton
            # names its counters without it. Summaries and histograms (``_sum``, ``_bucket``) are skipped.
            name = family.name.removesuffix("_total")
            if name not in counters:
                continue
            for sample in family.samples:
                if sample.name.removesuffix("_total") == name and sample.labels.get("model") == model:
                    counters[name] += sample.value
    except ValueError as exc:
        raise MetricsUnavailable(f"Triton's metrics at {url} are not Prometheus text: {exc}") from None
    return counters


def snapshot_path(state_dir: Path, model: str) -> Path:
    """``<state_dir>/<model>-triton_metrics.json``: one snapshot per served model."""
    return Path(state_dir) / f"{safe_name(model)}-{MetricSnapshot.NAME}"


def service_window(state_dir: Path, url: str, model: str, now: float | None = None, *,
                   save: bool = True) -> ServiceWindow:
    """Triton's counters for ``model`` since the previous check, and this check kept for the next.

    The means are per successful request: Triton adds a request's durations to its counters
    only when it succeeds (a summary's ``_count`` matches ``nv_inference_request_success``),
    so dividing by failures too would shrink them. ``compute_ms_mean`` is the time a request
    spent in the backend (input + infer + output); in a dynamic batch each request counts the
    whole batch's execution, which is what its caller waited for.

    A Triton that does not answer leaves the snapshot alone, so the next check still spans
    the gap. ``save=False`` only looks (a dry run). ``seconds`` is the time since the previous
    check, also after a restart (then the counters cover only the part since the restart).
    """
    now = time.time() if now is None else now
    try:
        current = scrape(url, model)
    except MetricsUnavailable as exc:
        return ServiceWindow(available=False, reason=str(exc))
    path = snapshot_path(state_dir, model)
    previous, why_none = _previous(path)
    if save:
        path.parent.mkdir(parents=True, exist_ok=True)
        MetricSnapshot(time=now, model=model, counters=current).write(path)
    if previous is None:
        return ServiceWindow(available=False, reason=why_none)

    before = {name: previous.counters.get(name, 0.0) for name in COUNTERS}
    reset = any(current[name] < before[name] for name in COUNTERS)
    if reset:  # Triton restarted: its counters began again from zero
        before = dict.fromkeys(COUNTERS, 0.0)
    delta = {name: current[name] - before[name] for name in COUNTERS}
    succeeded = delta[SUCCESS]

    def ms_per_request(total_us: float) -> float | None:
        return total_us / succeeded / 1000.0 if succeeded > 0 else None

    return ServiceWindow(
        available=True, seconds=now - previous.time, success=round(succeeded), failure=round(delta[FAILURE]),
        queue_ms_mean=ms_per_request(delta[QUEUE_US]),
        compute_ms_mean=ms_per_request(sum(delta[name] for name in COMPUTE_US)),
        request_ms_mean=ms_per_request(delta[REQUEST_US]), counter_reset=reset)


def _previous(path: Path) -> tuple[MetricSnapshot | None, str]:
    """The saved snapshot, or None and why the deltas must wait for the next check."""
    if not path.exists():
        return None, "first scrape: deltas start at the next check"
    try:
        return MetricSnapshot.read(path), ""
    except RecordError as exc:
        return None, f"the previous snapshot is unreadable ({exc}): deltas start at the next check"
