"""A small client of Airflow's public REST API (``/api/v2``), for the embedded stack and its users.

It talks HTTP only: ``llmops/`` never imports airflow, and this client works against any
Airflow 3 API server (the embedded one of ``llmops stack start`` or a deployment's).
Authentication is SimpleAuthManager's: ``POST /auth/token`` with a user and password
returns a JWT that every later call sends as ``Authorization: Bearer``; the embedded
stack keeps its users' passwords in
``$LLMOPS_HOME/airflow/simple_auth_manager_passwords.json.generated``.

    client = AirflowClient.from_password_file("http://127.0.0.1:8080", password_file)
    run_id = client.trigger("llmops_data", conf={"seed_url": "http://127.0.0.1:8765/"})
    for ti in client.task_instances("llmops_data", run_id):
        print(ti.label, ti.state)

What it returns are typed records (pydantic models that keep only the fields named here;
the API sends more). Errors: ``AirflowUnavailable`` (transient: the server is not
reachable or answered 5xx) and ``AirflowApiError`` (permanent: a 4xx answer; its message
carries the API's ``detail``).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import quote

import requests
from pydantic import BaseModel, ConfigDict, Field

from llmops.errors import PermanentError, TransientError

# The API refuses larger pages ([api] maximum_page_limit defaults to 100).
_PAGE = 100
ASSET_EVENTS_WAIT_S = 180
"""How long ``asset_events`` waits out Airflow's HTTP 500 for a created, not yet started run."""


class AirflowApiError(PermanentError, RuntimeError):
    """The API answered with an error (4xx): the request itself must change."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AirflowUnavailable(TransientError, AirflowApiError):
    """The API server is not reachable, timed out, or answered 5xx: a later try may succeed."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class ComponentHealth(_Record):
    status: str | None = None
    """``healthy`` or ``unhealthy`` (None: the component never reported)."""
    latest_heartbeat: str | None = None
    """ISO time of the component's last heartbeat, where it has one."""


class Health(_Record):
    """``GET /api/v2/monitor/health``: the metadata database and the scheduler, triggerer, dag-processor."""

    metadatabase: ComponentHealth
    scheduler: ComponentHealth
    triggerer: ComponentHealth
    dag_processor: ComponentHealth | None = None

    @property
    def healthy(self) -> bool:
        """Every component reports ``healthy``."""
        return all(c is not None and c.status == "healthy"
                   for c in (self.metadatabase, self.scheduler, self.triggerer, self.dag_processor))

    def unhealthy(self) -> list[str]:
        """Names of the components that are not healthy (empty when all are)."""
        parts = {"metadatabase": self.metadatabase, "scheduler": self.scheduler, "triggerer": self.triggerer,
                 "dag_processor": self.dag_processor}
        return [name for name, c in parts.items() if c is None or c.status != "healthy"]


class Dag(_Record):
    dag_id: str
    is_paused: bool
    is_stale: bool = False
    """The DAG's file no longer defines it (removed or renamed)."""
    has_import_errors: bool = False
    fileloc: str | None = None
    last_parsed_time: dt.datetime | None = None


class DagImportError(_Record):
    """A DAG file the dag-processor could not import."""

    import_error_id: int
    filename: str
    stack_trace: str
    timestamp: dt.datetime | None = None
    bundle_name: str | None = None


class DagRun(_Record):
    dag_id: str
    run_id: str = Field(alias="dag_run_id")
    run_type: str
    """``manual``, ``scheduled``, ``asset_triggered``, ``backfill``, ..."""
    state: str
    """``queued``, ``running``, ``success`` or ``failed``."""
    logical_date: dt.datetime | None = None
    queued_at: dt.datetime | None = None
    start_date: dt.datetime | None = None
    end_date: dt.datetime | None = None
    conf: dict[str, Any] | None = None
    triggered_by: str | None = None
    note: str | None = None


class TaskInstance(_Record):
    dag_id: str
    run_id: str = Field(alias="dag_run_id")
    task_id: str
    map_index: int = -1
    """Index of a mapped task's instance; -1 for an unmapped task."""
    state: str | None = None
    """None (not scheduled yet), ``scheduled``, ``queued``, ``running``, ``success``, ``failed``,
    ``up_for_retry``, ``restarting``, ``skipped``, ``upstream_failed``, ``deferred``, ..."""
    try_number: int = 0
    max_tries: int = 0
    start_date: dt.datetime | None = None
    end_date: dt.datetime | None = None
    duration: float | None = None
    operator: str | None = None
    hostname: str | None = None
    pid: int | None = None
    note: str | None = None

    @property
    def label(self) -> str:
        """``dag / run / task[map]``, for people."""
        index = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id} / {self.run_id} / {self.task_id}{index}"


class DagRunRef(_Record):
    """A DAG run an asset event started."""

    dag_id: str
    run_id: str
    state: str | None = None
    start_date: dt.datetime | None = None
    end_date: dt.datetime | None = None


class AssetEvent(_Record):
    id: int
    asset_id: int
    uri: str | None = None
    name: str | None = None
    extra: dict[str, Any] | None = None
    """What the producing task attached (llmops events carry ``path`` and ``hash``)."""
    source_dag_id: str | None = None
    source_task_id: str | None = None
    source_run_id: str | None = None
    source_map_index: int = -1
    created_dagruns: list[DagRunRef] = []
    """The runs this event started (asset-triggered DAGs), once the scheduler has created them."""
    timestamp: dt.datetime


class Asset(_Record):
    id: int
    uri: str = ""


class _TriggerBody(_Record):
    """``POST /api/v2/dags/{dag_id}/dagRuns`` (its ``logical_date`` is always null: see :meth:`trigger`)."""

    conf: dict[str, Any]
    dag_run_id: str | None = None
    note: str | None = None


class _ClearBody(_Record):
    """``POST /api/v2/dags/{dag_id}/clearTaskInstances``."""

    dag_run_id: str
    task_ids: list[str | tuple[str, int]]
    dry_run: bool = False
    only_failed: bool = False
    only_running: bool = True
    reset_dag_runs: bool = False
    note: str | None = None


QueryParams = dict[str, str | int]
"""Query-string parameters of one API call."""

_Item = TypeVar("_Item", bound=_Record)


def _when(value: dt.datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: the API compares in UTC")
    return value.isoformat()


class AirflowClient:
    """Airflow's REST API with a SimpleAuthManager user: the calls llmops needs, typed.

    One object keeps one HTTP session and one token (fetched on the first call that needs
    it, fetched again when the API answers 401 because it expired).
    """

    def __init__(self, base_url: str, username: str, password: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.timeout = timeout
        self._token: str | None = None
        self._http = requests.Session()
        self._http.trust_env = False  # a proxy from the environment must not swallow a local call

    @classmethod
    def from_password_file(cls, base_url: str, password_file: str | Path, username: str = "admin",
                           *, timeout: float = 30.0) -> AirflowClient:
        """A client logging in as ``username`` with the password SimpleAuthManager generated for it."""
        path = Path(password_file)
        try:
            passwords = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise AirflowApiError(f"cannot read the Airflow passwords from {path}: {exc}") from None
        if username not in passwords:
            raise AirflowApiError(f"{path} holds no password for user {username!r} (users: {sorted(passwords)})")
        return cls(base_url, username, passwords[username], timeout=timeout)

    def __repr__(self) -> str:  # never the password or the token
        return f"AirflowClient({self.base_url!r}, user={self.username!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transport ---------------------------------------------------------------------

    def token(self) -> str:
        """A JWT for this user (``POST /auth/token``), cached until the API rejects it."""
        if self._token is None:
            body = self._send("POST", "/auth/token", json={"username": self.username, "password": self._password},
                              auth=False)
            self._token = body["access_token"]
        return self._token

    def _send(self, method: str, path: str, *, params: QueryParams | None = None, json: Any = None,
              auth: bool = True, accept: str = "application/json", raw: bool = False) -> Any:
        url = self.base_url + path
        for attempt in (1, 2):
            headers = {"Accept": accept}
            if auth:
                headers["Authorization"] = f"Bearer {self.token()}"
            try:
                resp = self._http.request(method, url, params=params, json=json, headers=headers,
                                          timeout=self.timeout)
            except requests.RequestException as exc:
                raise AirflowUnavailable(f"Airflow API at {self.base_url} is not reachable: "
                                         f"{type(exc).__name__}: {exc}") from None
            if resp.status_code == 401 and auth and attempt == 1:
                self._token = None  # expired or signed with an older secret: log in again
                continue
            break
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            what = f"{method} {path}: HTTP {resp.status_code}: {str(detail)[:500]}"
            if path == "/auth/token" and resp.status_code == 401:
                what += f" (wrong password for {self.username!r}?)"
            kind = AirflowUnavailable if resp.status_code >= 500 else AirflowApiError
            raise kind(what, resp.status_code)
        if raw:
            return resp.text
        return resp.json() if resp.content else None

    def _paged(self, path: str, key: str, item: type[_Item], params: QueryParams | None = None) -> Iterator[_Item]:
        """Every item of a list endpoint, page by page (offset/limit), validated as ``item``."""
        offset = 0
        while True:
            page = self._send("GET", path, params={**(params or {}), "limit": _PAGE, "offset": offset})
            items = page.get(key) or []
            yield from (item.model_validate(i) for i in items)
            offset += len(items)
            if not items or offset >= page.get("total_entries", 0):
                return

    # ---- health and DAGs ---------------------------------------------------------------

    def health(self) -> Health:
        """``GET /api/v2/monitor/health`` (needs no login)."""
        body = self._send("GET", "/api/v2/monitor/health", auth=False)
        for part in ("scheduler", "triggerer", "dag_processor"):
            if isinstance(body.get(part), dict):
                hb = {k: v for k, v in body[part].items() if k.startswith("latest_") and k.endswith("_heartbeat")}
                body[part] = {"status": body[part].get("status"), "latest_heartbeat": next(iter(hb.values()), None)}
        return Health.model_validate(body)

    def dags(self, *, include_stale: bool = False) -> list[Dag]:
        """Every DAG the dag-processor has parsed, with ``is_paused``."""
        params: QueryParams = {"exclude_stale": "false" if include_stale else "true"}
        return list(self._paged("/api/v2/dags", "dags", Dag, params))

    def import_errors(self) -> list[DagImportError]:
        """DAG files that failed to import (empty when every file parsed)."""
        return list(self._paged("/api/v2/importErrors", "import_errors", DagImportError))

    def set_paused(self, dag_id: str, paused: bool) -> Dag:
        """Pause or unpause a DAG (``PATCH /api/v2/dags/{dag_id}``)."""
        body = self._send("PATCH", f"/api/v2/dags/{quote(dag_id, safe='')}", json={"is_paused": paused})
        return Dag.model_validate(body)

    def unpause(self, dag_id: str) -> Dag:
        return self.set_paused(dag_id, False)

    # ---- runs and task instances -------------------------------------------------------

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, *, run_id: str | None = None,
                note: str | None = None) -> str:
        """Start a manual run of ``dag_id`` with ``conf`` (its Params); returns the run id.

        The run has no logical date, so any number of runs may be triggered.
        """
        body = _TriggerBody(conf=conf or {}, dag_run_id=run_id or None, note=note or None)
        return DagRun.model_validate(self._send("POST", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns",
                                                json=body.model_dump(exclude_none=True) | {"logical_date": None})
                                     ).run_id

    def dag_run(self, dag_id: str, run_id: str) -> DagRun:
        return DagRun.model_validate(self._send("GET", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/"
                                                       f"{quote(run_id, safe='')}"))

    def dag_runs(self, dag_id: str = "~", *, run_type: str | None = None, state: str | None = None,
                 since: dt.datetime | None = None) -> list[DagRun]:
        """Runs of ``dag_id`` (``~``: of every DAG), oldest first; ``since`` keeps runs queued at or after it.

        ``run_type`` filters e.g. ``asset_triggered`` or ``manual``; ``state`` e.g. ``running``.
        """
        params: QueryParams = {"order_by": "id"}
        if run_type:
            params["run_type"] = run_type
        if state:
            params["state"] = state
        runs = list(self._paged(f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns", "dag_runs", DagRun, params))
        if since is not None:  # no queued_at filter in the API; run_after would miss asset runs' semantics
            runs = [r for r in runs if r.queued_at is None or r.queued_at >= since]
        return runs

    def task_instances(self, dag_id: str = "~", run_id: str = "~", *, state: str | None = None) -> list[TaskInstance]:
        """Task instances of one run (``~``: of every run / DAG), one per map index of a mapped task."""
        params: QueryParams = {"state": state, "order_by": "id"} if state else {"order_by": "id"}
        path = f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        return list(self._paged(path, "task_instances", TaskInstance, params))

    def running_task_instances(self) -> list[TaskInstance]:
        """Every task instance in state ``running``, across DAGs and runs."""
        return self.task_instances(state="running")

    def clear_running(self, ti: TaskInstance, note: str | None = None) -> list[TaskInstance]:
        """Clear a running task instance: Airflow stops it and runs it again (retries are not used up).

        The API moves it to ``restarting``; its supervisor sees that at its next heartbeat
        (every few seconds), terminates the task (SIGTERM, the operator's ``on_kill``, then
        SIGKILL) and a scheduler queues it again. ``note`` is shown on the task in the UI.
        Returns the instances that were cleared (empty when it had already finished).
        """
        body = _ClearBody(dag_run_id=ti.run_id, note=note[:1000] if note else None,
                          task_ids=[(ti.task_id, ti.map_index)] if ti.map_index >= 0 else [ti.task_id])
        out = self._send("POST", f"/api/v2/dags/{quote(ti.dag_id, safe='')}/clearTaskInstances",
                         json=body.model_dump(mode="json", exclude_none=True))
        return [TaskInstance.model_validate(t) for t in out.get("task_instances", [])]

    def task_log(self, ti: TaskInstance, try_number: int | None = None) -> str:
        """The log text of one try (default: its latest) of a task instance, one line per record."""
        number = try_number or max(ti.try_number, 1)
        path = (f"/api/v2/dags/{quote(ti.dag_id, safe='')}/dagRuns/{quote(ti.run_id, safe='')}/taskInstances/"
                f"{quote(ti.task_id, safe='')}/logs/{number}")
        body = self._send("GET", path, params={"full_content": "true", "map_index": ti.map_index})
        return "\n".join(_log_line(item) for item in body.get("content") or [])

    # ---- assets --------------------------------------------------------------------------

    def asset_events(self, *, uri: str | None = None, source_dag_id: str | None = None,
                     source_run_id: str | None = None, since: dt.datetime | str | None = None) -> list[AssetEvent]:
        """Asset events, oldest first; ``uri`` (``llmops://tokens``) narrows them to one asset.

        ``since`` keeps the events at or after that (timezone-aware) time.
        """
        params: QueryParams = {"order_by": "timestamp"}
        if source_dag_id:
            params["source_dag_id"] = source_dag_id
        if source_run_id:
            params["source_run_id"] = source_run_id
        if since is not None:
            params["timestamp_gte"] = str(_when(since))
        if uri is None:
            return self._asset_event_pages(params)
        events: list[AssetEvent] = []
        for asset_id in self._asset_ids(uri):
            events += self._asset_event_pages({**params, "asset_id": asset_id})
        return sorted(events, key=lambda e: (e.timestamp, e.id))

    def _asset_event_pages(self, params: QueryParams) -> list[AssetEvent]:
        """``GET /api/v2/assets/events``, waiting out Airflow 3.3's HTTP 500 for an event whose
        DAG run is created but not started yet.

        The response lists the runs each event created, with a ``start_date`` Airflow declares
        required, so a queued run (start_date null) fails the whole page with a validation error
        (apache/airflow#71360, fixed after 3.3.2). The run starts within seconds unless another
        run of its DAG holds ``max_active_runs``; past ``ASSET_EVENTS_WAIT_S`` the 500 is raised.
        """
        deadline = time.monotonic() + ASSET_EVENTS_WAIT_S
        while True:
            try:
                return list(self._paged("/api/v2/assets/events", "asset_events", AssetEvent, params))
            except AirflowUnavailable as exc:
                if exc.status_code != 500 or time.monotonic() > deadline:
                    raise
            time.sleep(2)

    def create_asset_event(self, uri: str, extra: dict[str, Any]) -> AssetEvent:
        """Emit an event on asset ``uri`` by hand (``POST /api/v2/assets/events``), as a person or
        another system reports something: the DAGs scheduled on it start. Airflow adds
        ``from_rest_api: true`` to the extra."""
        ids = self._asset_ids(uri)
        if not ids:
            raise AirflowApiError(f"no asset {uri}: is a DAG that uses it parsed?")
        return AssetEvent.model_validate(self._send("POST", "/api/v2/assets/events",
                                                    json={"asset_id": ids[0], "extra": extra}))

    def _asset_ids(self, uri: str) -> list[int]:
        # Airflow stores "llmops://tokens" as "llmops://tokens/"; uri_pattern is a substring match.
        want = uri.rstrip("/")
        return [a.id for a in self._paged("/api/v2/assets", "assets", Asset, {"uri_pattern": want})
                if a.uri.rstrip("/") == want]


# Keys every record of a task log repeats (which task, where in Airflow's code): left out of the text.
_LOG_CONTEXT = frozenset({"timestamp", "level", "event", "logger", "sources", "dag_id", "task_id", "run_id", "ti_id",
                          "try_number", "map_index", "filename", "lineno"})


def _log_line(item: Any) -> str:
    """One record of the structured log as a line: ``time LEVEL event key=value ...``."""
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        return str(item)
    parts = [str(item.get("timestamp") or ""), str(item.get("level") or "").upper(), str(item.get("event") or "")]
    extras = {k: v for k, v in item.items() if k not in _LOG_CONTEXT}
    line = " ".join(p for p in parts if p)
    if extras:
        line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
    return line


__all__ = ["AirflowApiError", "AirflowClient", "AirflowUnavailable", "AssetEvent", "ComponentHealth", "Dag",
           "DagImportError", "DagRun", "DagRunRef", "Health", "TaskInstance"]
