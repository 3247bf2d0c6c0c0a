"""The REST client against a local HTTP server that answers like Airflow 3.3.2's API (failure injection)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmops import airflow_client
from llmops.airflow_client import AirflowClient, AirflowUnavailable

EVENT = {"id": 1, "asset_id": 7, "uri": "llmops://drift/", "extra": {"verdict": "drift"}, "source_map_index": -1,
         "created_dagruns": [], "timestamp": "2026-12-05T10:00:00Z"}


class _Api(BaseHTTPRequestHandler):
    failures_left = 0
    """How many more event listings answer 500, as Airflow does while an event's run is queued."""

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._json(201, {"access_token": "t"})

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/api/v2/assets/events"):
            if _Api.failures_left:
                _Api.failures_left -= 1
                self._json(500, {"detail": "Internal Server Error"})
            else:
                self._json(200, {"asset_events": [EVENT], "total_entries": 1})
        else:
            self._json(200, {"assets": [{"id": 7, "uri": "llmops://drift/", "name": "drift"}], "total_entries": 1})


@pytest.fixture
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_asset_events_wait_out_the_500_of_an_event_whose_run_has_not_started(api: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(airflow_client.time, "sleep", lambda s: None)
    _Api.failures_left = 2
    (event,) = AirflowClient(api, "admin", "x").asset_events(uri="llmops://drift")
    assert event.extra == {"verdict": "drift"} and _Api.failures_left == 0


def test_asset_events_raise_the_500_once_the_wait_is_over(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(airflow_client.time, "sleep", lambda s: None)
    monkeypatch.setattr(airflow_client, "ASSET_EVENTS_WAIT_S", -1)
    _Api.failures_left = 1
    with pytest.raises(AirflowUnavailable, match="HTTP 500"):
        AirflowClient(api, "admin", "x").asset_events()
