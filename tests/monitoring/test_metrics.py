"""Triton's metrics as deltas between drift checks.

A small local HTTP server plays Triton's metrics endpoint where a failure must be injected
(a restart that resets the counters, an endpoint that is down, text that is not Prometheus);
one test scrapes a real embedded Triton server.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmops.monitoring.metrics import COUNTERS, MetricsUnavailable, scrape, service_window, snapshot_path
from llmops.records.monitoring import MetricSnapshot
from llmops.serving.server import TritonServer
from llmops.stack import free_ports
from tests.serving.conftest import serving_config, triton  # noqa: F401 - the shared real-server fixture

MODEL = "llmops_chat"
SHORT = {"success": "nv_inference_request_success", "failure": "nv_inference_request_failure",
         "count": "nv_inference_count", "exec": "nv_inference_exec_count",
         "request": "nv_inference_request_duration_us", "queue": "nv_inference_queue_duration_us",
         "input": "nv_inference_compute_input_duration_us", "infer": "nv_inference_compute_infer_duration_us",
         "output": "nv_inference_compute_output_duration_us"}


def triton_text(per_version: dict[str, dict[str, float]], other_model: float = 1000.0) -> str:
    """Prometheus text as Triton 2.51 writes it: ``per_version`` maps a version to its counters
    (short names of :data:`SHORT`); another model's counters are all ``other_model``."""
    lines = []
    for short, name in SHORT.items():
        lines += [f"# HELP {name} {short}", f"# TYPE {name} counter"]
        for version, counters in per_version.items():
            lines.append(f'{name}{{model="{MODEL}",version="{version}"}} {counters.get(short, 0.0)}')
        lines.append(f'{name}{{model="other",version="1"}} {other_model}')
    lines += ["# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]",
              "# TYPE nv_cpu_utilization gauge", "nv_cpu_utilization 0.25"]
    return "\n".join(lines) + "\n"


class FakeEndpoint:
    """A metrics endpoint whose answer (``text``, ``status``) a test sets before each check."""

    def __init__(self) -> None:
        self.text = ""
        self.status = 200
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = endpoint.text.encode()
                self.send_response(endpoint.status)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    fake = FakeEndpoint()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return serving_config(tmp_path).layout.monitor_state


def test_scrape_sums_the_models_versions_and_ignores_other_models(endpoint: FakeEndpoint) -> None:
    endpoint.text = triton_text({"1": {"success": 3, "failure": 1, "queue": 100},
                                 "2": {"success": 4, "queue": 50}})

    counters = scrape(endpoint.url, MODEL)

    assert set(counters) == set(COUNTERS)
    assert counters["nv_inference_request_success"] == 7
    assert counters["nv_inference_request_failure"] == 1
    assert counters["nv_inference_queue_duration_us"] == 150
    assert counters["nv_inference_exec_count"] == 0


def test_scrape_reads_counters_whose_samples_end_in_total(endpoint: FakeEndpoint) -> None:
    endpoint.text = ("# TYPE nv_inference_request_success counter\n"
                     f'nv_inference_request_success_total{{model="{MODEL}",version="1"}} 5\n')

    assert scrape(endpoint.url, MODEL)["nv_inference_request_success"] == 5


def test_first_check_is_unavailable_but_saves_a_snapshot(endpoint: FakeEndpoint, state_dir: Path) -> None:
    endpoint.text = triton_text({"1": {"success": 3}})

    window = service_window(state_dir, endpoint.url, MODEL, now=100.0)

    assert not window.available
    assert window.reason == "first scrape: deltas start at the next check"
    saved = MetricSnapshot.read(snapshot_path(state_dir, MODEL))
    assert (saved.time, saved.model, saved.counters["nv_inference_request_success"]) == (100.0, MODEL, 3)


def test_second_check_gives_deltas_and_means_per_successful_request(
        endpoint: FakeEndpoint, state_dir: Path) -> None:
    endpoint.text = triton_text({"1": {"success": 10, "failure": 1, "queue": 1000, "request": 50_000,
                                       "input": 100, "infer": 20_000, "output": 100}})
    service_window(state_dir, endpoint.url, MODEL, now=100.0)
    # 4 more successes (one on a second version), 1 more failure: 8 ms queued, 200 ms in all, 100 ms computing
    endpoint.text = triton_text({"1": {"success": 13, "failure": 2, "queue": 7000, "request": 650_000,
                                       "input": 1100, "infer": 218_000, "output": 1100},
                                 "2": {"success": 1, "queue": 26_000, "request": 200_000,
                                       "infer": 200_000}})

    window = service_window(state_dir, endpoint.url, MODEL, now=160.0)

    assert window.available and not window.counter_reset
    assert (window.seconds, window.success, window.failure) == (60.0, 4, 1)
    assert window.queue_ms_mean == pytest.approx(8.0)
    assert window.request_ms_mean == pytest.approx(200.0)
    assert window.compute_ms_mean == pytest.approx(100.0)
    assert MetricSnapshot.read(snapshot_path(state_dir, MODEL)).time == 160.0


def test_a_window_without_successful_requests_has_no_means(endpoint: FakeEndpoint, state_dir: Path) -> None:
    endpoint.text = triton_text({"1": {"success": 5, "failure": 1}})
    service_window(state_dir, endpoint.url, MODEL, now=100.0)
    endpoint.text = triton_text({"1": {"success": 5, "failure": 3}})

    window = service_window(state_dir, endpoint.url, MODEL, now=110.0)

    assert (window.available, window.success, window.failure) == (True, 0, 2)
    assert window.queue_ms_mean is window.compute_ms_mean is window.request_ms_mean is None


def test_counter_reset_after_a_restart_counts_from_zero(endpoint: FakeEndpoint, state_dir: Path) -> None:
    endpoint.text = triton_text({"1": {"success": 100, "failure": 5, "queue": 100_000, "request": 900_000}})
    service_window(state_dir, endpoint.url, MODEL, now=100.0)
    # Triton restarted: success fell back to 2, while failure alone would look like it grew
    endpoint.text = triton_text({"1": {"success": 2, "failure": 7, "queue": 4000, "request": 60_000}})

    window = service_window(state_dir, endpoint.url, MODEL, now=200.0)

    assert window.available and window.counter_reset
    assert (window.success, window.failure) == (2, 7)
    assert window.queue_ms_mean == pytest.approx(2.0)
    assert window.request_ms_mean == pytest.approx(30.0)


def test_endpoint_down_says_why_and_keeps_the_old_snapshot(endpoint: FakeEndpoint, state_dir: Path) -> None:
    endpoint.text = triton_text({"1": {"success": 3}})
    service_window(state_dir, endpoint.url, MODEL, now=100.0)
    saved = snapshot_path(state_dir, MODEL).read_text()
    (port,) = free_ports(1)
    down = f"http://127.0.0.1:{port}/metrics"

    window = service_window(state_dir, down, MODEL, now=200.0)

    assert not window.available
    assert window.reason is not None and window.reason.startswith(f"Triton's metrics at {down} did not answer: ")
    assert snapshot_path(state_dir, MODEL).read_text() == saved


def test_an_error_status_is_unavailable_and_names_the_url(endpoint: FakeEndpoint) -> None:
    endpoint.status = 503

    with pytest.raises(MetricsUnavailable, match=f"{endpoint.url} answered HTTP 503"):
        scrape(endpoint.url, MODEL)


def test_garbage_text_raises_metrics_unavailable(endpoint: FakeEndpoint) -> None:
    endpoint.text = "<html><body>Triton is starting</body></html>\n"

    with pytest.raises(MetricsUnavailable, match=f"{endpoint.url} are not Prometheus text") as raised:
        scrape(endpoint.url, MODEL)
    assert raised.value.transient


def test_dry_run_writes_no_snapshot(endpoint: FakeEndpoint, state_dir: Path) -> None:
    endpoint.text = triton_text({"1": {"success": 3}})

    service_window(state_dir, endpoint.url, MODEL, now=100.0, save=False)

    assert not snapshot_path(state_dir, MODEL).exists()


def test_real_triton_metrics_parse_and_an_unknown_model_counts_zero(triton: TritonServer) -> None:  # noqa: F811
    counters = scrape(triton.metrics_url, "nonexistent")

    assert counters == dict.fromkeys(COUNTERS, 0.0)
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with no_proxy.open(triton.metrics_url, timeout=5) as resp:
        families = {family.name for family in text_string_to_metric_families(resp.read().decode())}
    assert "nv_cpu_utilization" in families
