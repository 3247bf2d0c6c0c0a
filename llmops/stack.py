"""The embedded platform as users run it: ``llmops stack start|stop|status``.

One ``LLMOPS_HOME`` holds one stack:

    api-server     Airflow's UI, REST API and execution API (``airflow.host``:``airflow.api_port``)
    scheduler      Airflow's scheduler with the LocalExecutor (``airflow.parallelism`` workers)
                   and its log server (``airflow.worker_log_server_port``)
    dag-processor  parses ``dags/`` into the metadata database
    triggerer      runs deferred tasks' triggers; log server on ``airflow.trigger_log_server_port``
    triton         the embedded Triton server (``llmops.serving.server``), champion loaded
    mlflow         ``mlflow ui`` on the embedded SQLite store (``mlflow.ui_port``), when the
                   tracking store is that local file
    demo-site      ``llmops demo-site serve``, when ``data.seed_url`` points at ``demo_site.host:port``

Each component runs detached in its own session (it outlives the command that started
it and is not hit by the terminal's Ctrl-C) and is tracked by
``$LLMOPS_HOME/stack/<name>.pid``, a JSON record of its pid and create time, so a pid
recycled after a crash is never taken for it; its output goes to ``<name>.log`` beside
it. Triton keeps its own record under ``$LLMOPS_HOME/triton/``.

Airflow lives in ``$LLMOPS_HOME/airflow`` (``airflow.cfg``, the SQLite ``airflow.db``,
task logs). What its components must agree on:

* ``[api_auth] jwt_secret`` signs the UI/REST tokens and the task-identity tokens the
  scheduler hands to every task, which the API server's execution API verifies; if each
  component generated its own (what Airflow does when none is set), tasks are refused.
* ``[api] secret_key`` signs the API server's requests for a running task's log to the
  scheduler's and triggerer's log servers.
Both are generated once into ``$LLMOPS_HOME/airflow/stack_secrets.json`` (mode 0600)
and handed to the Airflow components as ``AIRFLOW__API_AUTH__JWT_SECRET`` and
``AIRFLOW__API__SECRET_KEY`` (environment variables, as Airflow's docs advise over the
config file). ``[core] fernet_key`` (encrypts connections and variables) stays in the
``airflow.cfg`` that ``airflow db migrate`` writes before any component starts.
Users come from SimpleAuthManager: ``USERS``, ``admin``, ``op`` and ``viewer``, each with
the SimpleAuthManager role of its name (viewer < user < op < admin: a viewer reads, an op
also triggers DAGs and acts). Their passwords are generated here, once, into
``simple_auth_manager_passwords.json.generated`` (mode 0600) before the API server starts,
so the API server only reads them and prints none; a home whose file predates a user gains
that user's password and keeps the others.

How ``stop`` ends running tasks, and why that way: on SIGTERM the scheduler leaves its
loop (no task instance is queued any more) and the LocalExecutor's ``end()`` waits for
its workers to finish the tasks they run (airflow/executors/local_executor.py), while
the API server stays up so their supervisors can heartbeat and report. That is the
graceful wait. When the timeout passes, the tasks still running are *cleared* through
the REST API (``clearTaskInstances`` with ``only_running``): Airflow's own "stop this and
run it again" path. The task instance becomes ``restarting``; its supervisor sees that
at its next heartbeat (every ``[workers] min_heartbeat_interval``, 1 s here), sends the task
SIGTERM (the operator's ``on_kill``: the DeepSpeed job is stopped as a unit), then
SIGKILL 5 s later, and reports nothing more. The next scheduler to start finds the
``restarting`` instance of a scheduler job that is no longer running and resets it
(``adopt_or_reset_orphaned_tasks``), so it runs again at once, as a new try that does not
use up a retry, and a training job resumes from its newest checkpoint. Killing the
tasks with signals instead would mark them failed (a retry spent, or none left for a
``retries=0`` task), and SIGTERM alone does not stop a Python task at all (the task
runner only calls ``on_kill``). Only without a usable REST API are they killed; their
instances stay ``running`` and the next scheduler resets them once the dead scheduler's
heartbeat is older than ``[scheduler] scheduler_health_check_threshold`` (30 s).

Finally every process ever seen in a component's tree or session is gone, or is
SIGKILLed: LocalExecutor workers, task supervisors and task processes (each in a
process group of its own), DeepSpeed job leaders and ranks (a session of their own,
found as descendants while their task lived), Triton's python stubs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import requests

from llmops.airflow_client import AirflowApiError, AirflowClient, AirflowUnavailable, Health, TaskInstance
from llmops.config import REPO_ROOT, LlmopsConfig
from llmops.errors import PermanentError
from llmops.records.base import RecordError
from llmops.records.stack import ComponentPidFile
from llmops.serving.server import process_alive, reap

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

ADMIN_USER = "admin"
USERS: tuple[tuple[str, str], ...] = ((ADMIN_USER, "admin"), ("op", "op"), ("viewer", "viewer"))
"""``(user, SimpleAuthManager role)`` of every user of the stack; the stack's own client is ``admin``.
(In production, FAB's roles Admin, Op and Viewer take their place: see the README.)"""
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
SECRETS_FILE = "stack_secrets.json"
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# Stopped first on `stop`: after them nothing new is scheduled, parsed or triggered.
_SCHEDULING = ("scheduler", "triggerer", "dag-processor")
_POLL_S = 0.5
_PROGRESS_EVERY_S = 10.0
_TERM_GRACE_S = 15.0
# After the running tasks are cleared: a heartbeat (5 s) + SIGTERM, 5 s, SIGKILL + reporting.
_INTERRUPT_GRACE_S = 60.0
_INTERRUPT_NOTE = "interrupted by `llmops stack stop`: runs again when the stack starts"


def _print(line: str) -> None:
    print(line, flush=True)


class StackError(PermanentError, RuntimeError):
    """The stack could not be started or stopped; the message says which component and why."""


class PortInUse(StackError):
    """A configured port is taken; raised before anything is started."""


@dataclass(frozen=True)
class _Spec:
    """How one component is started and checked."""

    name: str
    argv: list[str]
    ports: dict[str, int]
    """Configuration key -> port it binds (checked before starting)."""
    bind: str
    """Address the ports are bound on (``0.0.0.0`` for all interfaces)."""
    url: str | None = None
    airflow: bool = False
    """Gets the Airflow environment (home, executor, shared secrets)."""


@dataclass
class ComponentStatus:
    name: str
    running: bool
    pid: int | None = None
    healthy: bool = False
    """Answers its health check (Airflow components: ``/api/v2/monitor/health``)."""
    url: str | None = None
    log_path: str | None = None
    detail: str = ""
    rss_bytes: int = 0
    """Resident memory of the component's process tree."""


@dataclass
class StackStatus:
    """What ``status()`` reports; ``to_json()`` is ``llmops stack status --json``."""

    home: str
    running: bool
    """Every component's process is alive."""
    healthy: bool
    """Every component answers its health check."""
    components: list[ComponentStatus]
    api_url: str
    user: str
    """The user the stack's own client logs in as (``admin``)."""
    password_file: str
    triton_http_url: str
    triton_grpc_url: str
    mlflow_url: str | None = None
    demo_site_url: str | None = None
    users: list[str] = field(default_factory=list)
    """Every user of the UI and REST API (``USERS``), each with its password in ``password_file``."""
    dags: list[str] = field(default_factory=list)
    paused_dags: list[str] = field(default_factory=list)
    import_errors: list[dict[str, str]] = field(default_factory=list)
    """``{filename, error}`` for each DAG file that failed to import."""
    rss_bytes: int = 0
    """Resident memory of every process of the stack (shared pages counted in each process)."""
    pss_bytes: int | None = None
    """Proportional set size: shared pages split between the processes sharing them (the
    forked LocalExecutor workers share most of the scheduler's memory); None where unreadable."""
    error: str | None = None
    """Why the DAG information could not be read, if it could not."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    def component(self, name: str) -> ComponentStatus | None:
        return next((c for c in self.components if c.name == name), None)


# ---- processes ---------------------------------------------------------------------------


def _session_members(sid: int, not_before: float) -> list[psutil.Process]:
    """Live processes of session ``sid`` created at or after ``not_before``.

    A component is its session's leader, so its whole tree stays in the session unless
    a process calls setsid (DeepSpeed's job leader does; it is found as a descendant).
    Members outlive their leader: a crashed scheduler's task processes are found here.
    """
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.create_time() >= not_before - 1.0 and process_alive(proc):
                found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


class _Seen:
    """Every process of the stack seen so far.

    ``psutil.Process`` objects remember their create time, so a pid recycled later is
    never mistaken for one of ours; ``alive()`` answers for the processes themselves.
    Snapshots are taken while stopping, because a task's DeepSpeed ranks live in their own
    session and are reachable as descendants only while their task process lives.
    """

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}
        self._origin: dict[int, str] = {}

    def add(self, procs: list[psutil.Process], origin: str = "") -> None:
        for proc in procs:
            if self._procs.get(proc.pid) != proc:
                self._procs[proc.pid] = proc
                self._origin[proc.pid] = origin

    def snapshot(self, roots: dict[str, tuple[psutil.Process, float]]) -> None:
        for name, (root, started) in roots.items():
            self.add([root, *_descendants(root), *_session_members(root.pid, started)], name)

    def alive(self) -> list[psutil.Process]:
        return [p for p in self._procs.values() if process_alive(p)]

    def strays(self, name: str, root: psutil.Process) -> list[psutil.Process]:
        """Live processes first seen under component ``name`` that have left its tree and session.

        A task that ends (killed, or cleared) can leave such a process behind, e.g. a child it
        started in a session of its own; if that child holds the task's output, the task's
        supervisor waits for it ([workers] socket_cleanup_timeout, 60 s) before it reports.
        """
        tree = {root, *_descendants(root)} if process_alive(root) else set()
        out = []
        for pid, proc in self._procs.items():
            if self._origin.get(pid) != name or proc in tree or not process_alive(proc):
                continue
            with contextlib.suppress(OSError):
                if os.getsid(pid) == root.pid:
                    continue
            out.append(proc)
        return out


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _signal_all(procs: list[psutil.Process], sig: int) -> None:
    for proc in procs:
        if process_alive(proc):
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)


def _terminate(procs: list[psutil.Process], grace_s: float, *, sigterm: bool = True) -> list[psutil.Process]:
    """SIGTERM ``procs`` (unless they had it already), SIGKILL what is left after ``grace_s``;
    returns the survivors of SIGKILL."""
    if sigterm:
        _signal_all(procs, signal.SIGTERM)
    _gone, alive = psutil.wait_procs([p for p in procs if process_alive(p)], timeout=grace_s)
    if not alive:
        return []
    _signal_all(alive, signal.SIGKILL)
    _gone, alive = psutil.wait_procs(alive, timeout=10)
    return [p for p in alive if process_alive(p)]


def port_free(port: int, host: str) -> bool:
    """Nothing listens on ``host:port`` (a port in TIME_WAIT counts as free, as servers bind it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int) -> str | None:
    """``pid N (name: cmdline)`` of the process listening on ``port``, where psutil can see it.

    Other users' sockets are listed without their pid (unless run as root): then None.
    """
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return None
    for conn in conns:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            try:
                proc = psutil.Process(conn.pid)
                # Airflow renames its processes (setproctitle): the command line is the readable part.
                cmd = " ".join(" ".join(proc.cmdline()).split()) or proc.name()
                return f"pid {conn.pid} ({cmd[:100]})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return None


# Every port a stack listens on, by its configuration key.
PORT_KEYS = ("airflow.api_port", "airflow.worker_log_server_port", "airflow.trigger_log_server_port",
             "serving.http_port", "serving.grpc_port", "serving.metrics_port", "mlflow.ui_port", "demo_site.port")


def _default_ports() -> set[int]:
    defaults = LlmopsConfig()
    return {getattr(getattr(defaults, section), field) for section, field in (k.split(".") for k in PORT_KEYS)}


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports nobody listens on now (kernel-chosen, held open together so none
    repeats), never one of the stack's defaults, which a user's own stack may hold: for a
    second stack or server beside it (tests, benchmarks)."""
    reserved = _default_ports()
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            sock = socket.socket()
            sock.bind(("", 0))
            socks.append(sock)
            if (port := sock.getsockname()[1]) not in reserved:
                ports.append(port)
    finally:
        for sock in socks:
            sock.close()
    return ports


def isolated_env(home: Path) -> dict[str, str]:
    """``LLMOPS_*`` settings for a stack at ``home`` on free ports, crawling the demo site it serves."""
    env = {_env_key(key): str(port) for key, port in zip(PORT_KEYS, free_ports(len(PORT_KEYS)), strict=True)}
    return env | {"LLMOPS_HOME": str(home), "LLMOPS_DATA__SEED_URL": f"http://127.0.0.1:{env['LLMOPS_DEMO_SITE__PORT']}/"}


def _env_key(key: str) -> str:
    """``airflow.api_port`` -> ``LLMOPS_AIRFLOW__API_PORT``."""
    return "LLMOPS_" + key.upper().replace(".", "__")


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with requests.Session() as http:
            http.trust_env = False
            return http.get(url, timeout=timeout).status_code < 500
    except requests.RequestException:
        return False


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 32_000))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _private_json(path: Path, make: Callable[[], dict[str, str]], required: tuple[str, ...]) -> dict[str, str]:
    """A JSON file readable by its owner only, created once with ``make()``, completed when keys are missing.

    O_EXCL: two ``start`` calls at once must not write different secrets.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            log.warning("%s was readable by others; restricting it to its owner", path)
            path.chmod(0o600)
        try:
            data = json.loads(path.read_text() or "{}")
        except ValueError as exc:
            raise StackError(f"{path} is not valid JSON ({exc}): fix or delete it") from None
        missing = {k: v for k, v in make().items() if k in required and not data.get(k)}
        if missing:
            data.update(missing)
            path.write_text(json.dumps(data) + "\n")
        return data
    data = make()
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data) + "\n")
    return data


# ---- the stack ---------------------------------------------------------------------------


class Stack:
    """The embedded stack of one ``LLMOPS_HOME``: start, stop, status, and a REST client.

    ``env`` is extra environment for every child process, on top of this process's
    (tests pass ``LLMOPS_*`` overrides so that tasks see the same configuration as
    ``cfg``). Any number of ``Stack`` objects, in any processes, manage the same stack:
    its state is the pid files, not this object.
    """

    def __init__(self, cfg: LlmopsConfig, env: dict[str, str] | None = None) -> None:
        from llmops.serving.server import TritonServer

        self.cfg = cfg
        self.extra_env = dict(env or {})
        self.home = Path(cfg.home)
        self.stack_dir = cfg.layout.stack
        self.airflow_home = cfg.layout.airflow_home
        self.password_file = self.airflow_home / PASSWORD_FILE
        self.secrets_file = self.airflow_home / SECRETS_FILE
        self.triton = TritonServer(cfg)
        self._bin = Path(sys.executable).parent

    def __repr__(self) -> str:
        return f"Stack(home={self.home}, api={self.api_url})"

    # ---- addresses and configuration -----------------------------------------------------

    @property
    def api_url(self) -> str:
        """The UI and REST API: ``http://127.0.0.1:8080`` by default."""
        host = self.cfg.airflow.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.cfg.airflow.api_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.mlflow.ui_port}"

    @property
    def demo_site_url(self) -> str | None:
        """The demo site's URL when this stack serves it (``data.seed_url`` points at it), else None."""
        seed = urlsplit(self.cfg.data.seed_url)
        site = self.cfg.demo_site
        local = {"localhost", "127.0.0.1"}

        def same_host(a: str | None) -> bool:
            return a == site.host or (a in local and site.host in local)

        port = seed.port or (443 if seed.scheme == "https" else 80)
        if seed.scheme == "http" and same_host(seed.hostname) and port == site.port and site.port:
            return f"http://{site.host}:{site.port}/"
        return None

    def _mlflow_store(self) -> str | None:
        """The SQLite store the MLflow UI shows, or None when tracking goes elsewhere (a server)."""
        from llmops.registry.tracking import tracking_uri

        uri = tracking_uri(self.cfg)
        return uri if uri.startswith("sqlite:///") else None

    def _specs(self) -> list[_Spec]:
        """The components this configuration runs (Triton is handled by ``TritonServer``)."""
        af = self.cfg.airflow
        airflow = str(self._bin / "airflow")
        specs = [
            _Spec("api-server", [airflow, "api-server", "--host", af.host, "--port", str(af.api_port)],
                  {"airflow.api_port": af.api_port}, af.host, self.api_url, airflow=True),
            _Spec("scheduler", [airflow, "scheduler"], {"airflow.worker_log_server_port": af.worker_log_server_port},
                  "0.0.0.0", airflow=True),
            _Spec("dag-processor", [airflow, "dag-processor"], {}, "0.0.0.0", airflow=True),
            _Spec("triggerer", [airflow, "triggerer"], {"airflow.trigger_log_server_port": af.trigger_log_server_port},
                  "0.0.0.0", airflow=True),
        ]
        if store := self._mlflow_store():
            artifacts = self.cfg.mlflow.artifact_location or str(self.cfg.layout.mlflow_artifacts)
            specs.append(_Spec("mlflow", [str(self._bin / "mlflow"), "ui", "--backend-store-uri", store,
                                          "--default-artifact-root", artifacts, "--host", "127.0.0.1",
                                          "--port", str(self.cfg.mlflow.ui_port), "--workers", "1"],
                               {"mlflow.ui_port": self.cfg.mlflow.ui_port}, "127.0.0.1", self.mlflow_url))
        if url := self.demo_site_url:
            site_dir = self.cfg.layout.demo_site
            llmops = self._bin / "llmops"
            cmd = [str(llmops)] if llmops.exists() else [sys.executable, "-m", "llmops.cli"]
            specs.append(_Spec("demo-site", [*cmd, "demo-site", "serve", "--port", str(self.cfg.demo_site.port),
                                             "--access-log", str(site_dir / "access.jsonl"),
                                             "--ground-truth", str(site_dir / "ground_truth.json")],
                               {"demo_site.port": self.cfg.demo_site.port}, self.cfg.demo_site.host, url))
        return specs

    def _triton_ports(self) -> dict[str, int]:
        s = self.cfg.serving
        return {"serving.http_port": s.http_port, "serving.grpc_port": s.grpc_port,
                "serving.metrics_port": s.metrics_port}

    def child_environment(self) -> dict[str, str]:
        """Environment of every child: ours, the venv's ``bin/`` first on PATH, LLMOPS_HOME, ``env``."""
        env = dict(os.environ)
        bindir = str(self._bin)
        env["PATH"] = os.pathsep.join([bindir] + [p for p in env.get("PATH", "").split(os.pathsep) if p != bindir])
        env["LLMOPS_HOME"] = str(self.home)
        env.update(self.extra_env)
        return env

    def airflow_environment(self) -> dict[str, str]:
        """Environment of the Airflow components: ``demo.airflow_env`` plus the stack's settings.

        Home, database, executor and the shared secrets are set, not defaulted: a shell's
        ``AIRFLOW_HOME`` (the Makefile exports the repository's) must not send a test
        stack's components to another home. ``env`` given to the constructor still wins.
        """
        from llmops.demo import airflow_env

        af = self.cfg.airflow
        env = airflow_env(self.cfg)
        env.update(self.child_environment())
        keys = self._secrets()
        env.update({
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW_CONFIG": str(self.airflow_home / "airflow.cfg"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home / 'airflow.db'}",
            # The platform's DAGs and plugins, whatever a shell exported for another Airflow.
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(af.parallelism),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{user}:{role}" for user, role in USERS),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.password_file),
            # Tasks reach the API server here; the default assumes port 8080.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API__HOST": af.host,
            "AIRFLOW__API__PORT": str(af.api_port),
            "AIRFLOW__API__WORKERS": "1",
            # A task's supervisor re-checks a finished task process only every heartbeat interval
            # (default 5 s), holding its LocalExecutor worker meanwhile; with one worker per core
            # that stalled the next task for up to 5 s (bench/scheduler.py measured it).
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(af.worker_log_server_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(af.trigger_log_server_port),
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        })
        env.update(self.extra_env)
        return env

    def _secrets(self) -> dict[str, str]:
        """The secrets the Airflow components share (see the module docstring); created once, mode 0600."""
        def make() -> dict[str, str]:
            return {"jwt_secret": secrets.token_urlsafe(48), "api_secret_key": secrets.token_urlsafe(32)}

        return _private_json(self.secrets_file, make, ("jwt_secret", "api_secret_key"))

    def _ensure_password(self) -> None:
        """Every user's password, generated here once (mode 0600) so none passes through a log.

        Before the API server starts: SimpleAuthManager generates a missing user's password
        itself and prints it to the API server's log. A user missing from an older file is
        added; the passwords already there are kept."""
        users = tuple(user for user, _ in USERS)
        _private_json(self.password_file, lambda: {user: secrets.token_urlsafe(16) for user in users}, users)

    def client(self, timeout: float = 30.0, *, user: str = ADMIN_USER) -> AirflowClient:
        """A REST client of this stack's API server, logged in as ``user`` (one of ``USERS``)."""
        return AirflowClient.from_password_file(self.api_url, self.password_file, user, timeout=timeout)

    # ---- pid files -----------------------------------------------------------------------

    def _pid_file(self, name: str) -> Path:
        return self.stack_dir / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        """Where a component's output goes (Triton: ``$LLMOPS_HOME/triton/server.log``)."""
        return self.triton.log_path if name == "triton" else self.stack_dir / f"{name}.log"

    def _record(self, name: str) -> ComponentPidFile | None:
        try:
            return ComponentPidFile.read(self._pid_file(name))
        except RecordError:  # missing, or not ours to trust: treated as no pid file
            return None

    def _live(self, name: str, progress: Progress | None = None) -> psutil.Process | None:
        """The running process of ``name``; a stale pid file (process gone, or the pid now
        another process's: its create time differs) is removed and reported."""
        path = self._pid_file(name)
        record = self._record(name)
        if record is None:
            if path.exists():
                path.unlink(missing_ok=True)
            return None
        try:
            proc = psutil.Process(record.pid)
            same = abs(proc.create_time() - record.started) < 1.0
        except psutil.Error:
            proc, same = None, False
        if proc is not None and same and process_alive(proc):
            return proc
        if proc is not None and same:
            reap(proc.pid)
        why = "exited" if proc is None or same else "was reused by another process"
        if progress:
            progress(f"    {name}: stale pid file (pid {record.pid} {why}); not running")
        path.unlink(missing_ok=True)
        return None

    def _roots(self) -> dict[str, tuple[psutil.Process, float]]:
        """Live components (Triton included) with their recorded create times."""
        roots = {}
        for spec in self._specs():
            if (proc := self._live(spec.name)) is not None:
                roots[spec.name] = (proc, proc.create_time())
        if (pid := self.triton.pid) is not None:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                roots["triton"] = (proc, proc.create_time())
        return roots

    def processes(self) -> list[psutil.Process]:
        """Every live process of the stack: each component's tree and session (workers, task
        processes, DeepSpeed ranks, Triton's python stubs)."""
        seen = _Seen()
        seen.snapshot(self._roots())
        return seen.alive()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """``start`` and ``stop`` of one home run one at a time."""
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        with open(self.stack_dir / "stack.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ---- start ---------------------------------------------------------------------------

    def check_ports(self, specs: list[_Spec], triton: bool) -> None:
        """Refuse at once, naming each port, its holder and the key to change, before anything starts."""
        wanted = [(key, port, spec.bind) for spec in specs for key, port in spec.ports.items()]
        if triton:
            wanted += [(key, port, "0.0.0.0") for key, port in self._triton_ports().items()]
        everything = {k: p for s in self._specs() for k, p in s.ports.items()} | self._triton_ports()
        by_port: dict[int, list[str]] = {}
        for key, port in everything.items():
            by_port.setdefault(port, []).append(key)
        clashes = [f"{port} ({' and '.join(keys)})" for port, keys in by_port.items() if len(keys) > 1]
        if clashes:
            raise PortInUse(f"two components are configured on the same port: {', '.join(clashes)}; "
                            f"give each its own port")
        problems = []
        for key, port, bind in wanted:
            if not port_free(port, bind):
                holder = port_holder(port)
                who = f"held by {holder}" if holder else "held by a process this user cannot see"
                problems.append(f"port {port} ({key}) is in use, {who}: stop it, or set another port with "
                                f"{_env_key(key)}=<port> ({key} in the configuration file)")
        if problems:
            raise PortInUse("cannot start the stack, nothing was started:\n  " + "\n  ".join(problems))

    def start(self, progress: Progress = _print) -> StackStatus:
        """Start every component that is not running and return once all are healthy.

        Idempotent: running components are reported and left alone, stale pid files are
        recognised. Ports are checked before anything starts (``PortInUse``). On a failure
        the components this call started are stopped again and ``StackError`` carries the
        failing component's log tail.
        """
        t0 = time.monotonic()
        with self._locked():
            specs = self._specs()
            # A crashed scheduler's workers and tasks would run beside the new one, and once its
            # pid file is gone nothing could find them again: end them first.
            for spec in specs:
                if leftovers := self._orphans(spec.name):
                    progress(f"    {spec.name} crashed and left processes {[p.pid for p in leftovers]}: "
                             "stopping them first")
                    _terminate(leftovers, grace_s=15)
            to_start = []
            for spec in specs:
                if (proc := self._live(spec.name, progress)) is not None:
                    progress(f"    {spec.name}: already running (pid {proc.pid})")
                else:
                    to_start.append(spec)
            triton_needed = not self.triton.is_running()
            if not triton_needed:
                progress(f"    triton: already running (pid {self.triton.pid})")
            if not to_start and not triton_needed:
                progress(f"==> the stack is already running: {self.api_url}")
                return self.status()
            self.check_ports(to_start, triton_needed)
            started: dict[str, subprocess.Popen[bytes]] = {}
            try:
                self._launch(to_start, triton_needed, started, progress, t0)
                self._wait_healthy([s.name for s in specs], started, triton_needed, progress, t0)
            except BaseException:
                progress("==> start failed: stopping what this start started")
                self._abort(started, triton_needed)
                raise
        progress(f"==> the stack is up ({time.monotonic() - t0:.0f} s): UI and REST API {self.api_url} "
                 f"({login_hint(self.password_file)})")
        return self.status()

    def _launch(self, to_start: list[_Spec], triton_needed: bool, started: dict[str, subprocess.Popen[bytes]],
                progress: Progress, t0: float) -> None:
        """Migrate, then start the API server (with MLflow, the demo site and Triton), and once it
        answers, the scheduler, triggerer and dag-processor.

        The order matters: a scheduler that finds a queued or reset task instance starts it
        at once, and the task's supervisor must reach the API server within a few retries,
        or the task fails before it ran (measured: a task resumed at boot failed this way).
        """
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        airflow_env = self.airflow_environment()
        self._prepare_stores(to_start, airflow_env, progress)
        child_env = self.child_environment()
        # The UI needs no job runner: MLflow 3's (for GenAI scorer jobs) adds 8 processes, ~1 GB.
        mlflow_env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **child_env}
        first = [s for s in to_start if s.name not in _SCHEDULING]
        for spec in first:
            env = airflow_env if spec.airflow else mlflow_env if spec.name == "mlflow" else child_env
            started[spec.name] = self._spawn(spec, env)
            progress(f"==> starting {spec.name} (pid {started[spec.name].pid}, log {self.log_path(spec.name)})")
        if triton_needed:
            self._start_triton(progress)
        scheduling = [s for s in to_start if s.name in _SCHEDULING]
        if scheduling:
            self._wait_healthy(["api-server"], started, False, progress, t0)
        for spec in scheduling:
            started[spec.name] = self._spawn(spec, airflow_env)
            progress(f"==> starting {spec.name} (pid {started[spec.name].pid}, log {self.log_path(spec.name)})")

    def _prepare_stores(self, to_start: list[_Spec], airflow_env: dict[str, str], progress: Progress) -> None:
        """``airflow db migrate`` (idempotent) and, meanwhile, the MLflow store's schema."""
        migrate = None
        if any(s.airflow for s in to_start):
            self._ensure_password()
            # It also writes airflow.cfg (the fernet key) before any component reads it.
            with open(self.log_path("db-migrate"), "wb") as logf:
                migrate = subprocess.Popen([str(self._bin / "airflow"), "db", "migrate"], env=airflow_env,
                                           stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                           cwd=self.home)
            progress(f"==> airflow db migrate (log {self.log_path('db-migrate')})")
        try:
            if any(s.name == "mlflow" for s in to_start):
                # Created through llmops first: MLflow's own migration breaks when two processes
                # (the UI and a training task) run it on a fresh file at once.
                from llmops.registry.tracking import connect

                mlflow_log = logging.getLogger("mlflow")
                level = mlflow_log.level
                mlflow_log.setLevel(logging.WARNING)  # "Creating initial MLflow database tables..." is noise here
                try:
                    connect(self._mlflow_store() or "")
                finally:
                    mlflow_log.setLevel(level)
            code = migrate.wait(timeout=600) if migrate is not None else 0
        finally:
            if migrate is not None and migrate.poll() is None:
                migrate.kill()
                migrate.wait()
        if code != 0:
            raise StackError(f"airflow db migrate failed (exit code {code}); end of "
                             f"{self.log_path('db-migrate')}:\n{_log_tail(self.log_path('db-migrate'))}")

    def _spawn(self, spec: _Spec, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log_path = self.log_path(spec.name)
        if log_path.exists():
            os.replace(log_path, log_path.with_name(log_path.name + ".1"))
        with open(log_path, "wb") as logf:
            # A new session: the component outlives this command and ignores the terminal's Ctrl-C.
            popen = subprocess.Popen(spec.argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.home, start_new_session=True, close_fds=True)
        try:
            created = psutil.Process(popen.pid).create_time()
        except psutil.Error:  # exited already: reported by the health wait
            created = time.time()
        ComponentPidFile(pid=popen.pid, started=created, argv=spec.argv, log=str(log_path),
                         started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z")).write(self._pid_file(spec.name))
        return popen

    def _start_triton(self, progress: Progress) -> None:
        from llmops.serving.deploy import ensure_champion_in_repository

        try:
            version = ensure_champion_in_repository(self.cfg, progress=lambda line: progress(f"    {line}"))
        except Exception as exc:  # noqa: BLE001 (the registry is optional at boot: Triton serves what it has)
            version = None
            progress(f"    could not put the champion into the model repository ({type(exc).__name__}: {exc}); "
                     f"Triton serves what {self.triton.repository} holds")
        note = f"serving models:/{self.cfg.serving.model_name}/{version}" if version else "no champion yet"
        progress(f"==> starting triton ({note}; log {self.triton.log_path})")
        self.triton.start(wait=False)

    def _health(self, names: list[str], triton: bool) -> dict[str, tuple[bool, str]]:
        """Each component's (healthy, detail) right now."""
        out: dict[str, tuple[bool, str]] = {}
        health: Health | None = None
        api_detail = "not answering"
        if "api-server" in names or any(n in names for n in _SCHEDULING):
            try:
                with AirflowClient(self.api_url, ADMIN_USER, "", timeout=3.0) as anon:
                    health = anon.health()
            except AirflowUnavailable:
                api_detail = "not answering yet"
            except AirflowApiError as exc:
                api_detail = str(exc)[:160]
        parts = {"scheduler": "scheduler", "triggerer": "triggerer", "dag-processor": "dag_processor"}
        for name in names:
            if name == "api-server":
                out[name] = (health is not None and health.metadatabase.status == "healthy",
                             "answering" if health is not None else api_detail)
            elif name in parts:
                comp = getattr(health, parts[name], None) if health is not None else None
                status = comp.status if comp is not None else None
                out[name] = (status == "healthy", f"API reports {status or 'no heartbeat yet'}")
            elif name == "mlflow":
                ok = _http_ok(f"{self.mlflow_url}/health")
                out[name] = (ok, "answering" if ok else "not answering")
            elif name == "demo-site":
                ok = bool(self.demo_site_url) and _http_ok(self.demo_site_url or "")
                out[name] = (ok, "answering" if ok else "not answering")
        if triton:
            ready = self.triton.ready()
            out["triton"] = (ready, "ready" if ready else "not ready")
        return out

    def _wait_healthy(self, names: list[str], started: dict[str, subprocess.Popen[bytes]], triton: bool,
                      progress: Progress, t0: float) -> None:
        """Return once ``names`` (and Triton) are healthy; raise on a component that exits or a timeout."""
        timeout = self.cfg.airflow.startup_timeout_s
        next_note = time.monotonic() + _PROGRESS_EVERY_S
        while True:
            for name, popen in started.items():
                if (code := popen.poll()) is not None:
                    self._pid_file(name).unlink(missing_ok=True)
                    raise StackError(f"{name} exited during startup (exit code {code}); end of "
                                     f"{self.log_path(name)}:\n{_log_tail(self.log_path(name))}")
            if triton and not self.triton.is_running():
                raise StackError(f"triton exited during startup; end of {self.triton.log_path}:\n"
                                 f"{self.triton.log_tail()}")
            health = self._health(names, triton)
            waiting = {n: d for n, (ok, d) in health.items() if not ok}
            if not waiting:
                return
            now = time.monotonic()
            if now - t0 > timeout:
                tails = "\n".join(f"--- {n} ({d}), end of {self.log_path(n)}:\n{_log_tail(self.log_path(n), 12)}"
                                  for n, d in waiting.items())
                raise StackError(f"not healthy within {timeout:.0f} s (airflow.startup_timeout_s): "
                                 f"{', '.join(waiting)}\n{tails}")
            if now >= next_note:
                progress(f"    waiting ({now - t0:.0f} s): " + ", ".join(f"{n} {d}" for n, d in waiting.items()))
                next_note = now + _PROGRESS_EVERY_S
            time.sleep(_POLL_S)

    def _abort(self, started: dict[str, subprocess.Popen[bytes]], triton: bool) -> None:
        """Stop what a failed ``start`` started (no task can have run long: no waiting for them)."""
        seen = _Seen()
        for name, popen in started.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(popen.pid)
                seen.snapshot({name: (proc, proc.create_time())})
        _terminate(seen.alive(), _TERM_GRACE_S)
        for name, popen in started.items():
            popen.poll()
            self._pid_file(name).unlink(missing_ok=True)
        if triton:
            self.triton.stop(timeout=30)

    # ---- stop ----------------------------------------------------------------------------

    def stop(self, timeout: float = 60.0, progress: Progress = _print) -> list[str]:
        """Stop the whole stack; returns what it interrupted (``dag / run / task[map] (try n)``).

        Nothing new starts from the first step on; running tasks get ``timeout`` seconds to
        finish, then are cleared so that the next ``start`` runs them again (the module
        docstring says how and why). Returns once no process of the stack is alive; raises
        ``StackError`` naming any that survive SIGKILL.
        """
        with self._locked():
            seen = _Seen()
            self._sweep_leftovers(seen, progress)  # before _roots(), which drops stale pid files
            roots = self._roots()
            if not roots:
                leftovers = _terminate(seen.alive(), _TERM_GRACE_S)
                progress("==> the stack is not running")
                if leftovers:
                    raise StackError(f"processes {[p.pid for p in leftovers]} of a previous stack survive SIGKILL")
                return []
            seen.snapshot(roots)
            client = None
            if "api-server" in roots:
                try:
                    client = self.client(timeout=10.0)
                except AirflowApiError as exc:  # e.g. the password file was deleted: tasks are killed, not cleared
                    progress(f"    cannot use the REST API ({exc}): running tasks will be killed, not cleared")
            interrupted = self._stop_scheduling(roots, seen, client, timeout, progress)
            serving: dict[str, tuple[psutil.Process, float]] = {
                n: roots[n] for n in ("api-server", "mlflow", "demo-site") if n in roots}
            if serving:
                progress(f"==> stopping {', '.join(serving)}")
                seen.snapshot(serving)
                _terminate([p for p, _ in serving.values()], _TERM_GRACE_S)
            if "triton" in roots:
                progress(f"==> stopping triton (pid {roots['triton'][0].pid})")
                self.triton.stop(timeout=30)
            seen.snapshot(roots)  # what is left in the sessions of components that are gone
            survivors = _terminate(seen.alive(), _TERM_GRACE_S)
            for name in roots:
                reap(roots[name][0].pid)
                if name != "triton":
                    self._pid_file(name).unlink(missing_ok=True)
            if survivors:
                raise StackError(f"processes {[p.pid for p in survivors]} of the stack survive SIGKILL "
                                 "(stuck in the kernel?)")
        progress("==> the stack is stopped; no process of it is left")
        return interrupted

    def _orphans(self, name: str) -> list[psutil.Process]:
        """Processes a crashed component left behind: its pid file is stale, its session lives on.

        Only while that session id can still be ours: after a reboot every pid and session id
        may belong to anyone, and while a process holds the recorded pid (the component
        itself, or a stranger that was given the pid) Linux does not hand that number out as
        another session's id, so no orphan of ours can carry it.
        """
        record = self._record(name)
        if record is None:
            return []
        pid, started = record.pid, record.started
        if psutil.boot_time() > started or psutil.pid_exists(pid):
            return []
        return _session_members(pid, started)

    def _sweep_leftovers(self, seen: _Seen, progress: Progress) -> None:
        """Add the processes crashed components left behind to what ``stop`` ends."""
        for spec in self._specs():
            if members := self._orphans(spec.name):
                progress(f"    {spec.name} is gone but left processes {[p.pid for p in members]}: stopping them")
                seen.add(members)

    def _stop_scheduling(self, roots: dict[str, tuple[psutil.Process, float]], seen: _Seen,
                         client: AirflowClient | None, timeout: float, progress: Progress) -> list[str]:
        """SIGTERM the scheduler, triggerer and dag-processor; wait for running tasks, then clear them."""
        scheduling = {n: roots[n] for n in _SCHEDULING if n in roots}
        if not scheduling:
            return []
        running = self._running(client)
        for proc, _ in scheduling.values():
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
        waiting = f"; waiting up to {timeout:.0f} s for {len(running)} running task(s): " if running else ""
        progress("==> stopping the scheduler, triggerer and dag-processor: no new task starts"
                 + waiting + ", ".join(ti.label for ti in running))
        scheduler = {n: r for n, r in scheduling.items() if n == "scheduler"}
        deadline = time.monotonic() + timeout
        next_note = time.monotonic() + _PROGRESS_EVERY_S
        while self._wait_round(scheduler, seen) and time.monotonic() < deadline:
            if time.monotonic() >= next_note and (still := self._running(client)):
                progress(f"    still running ({deadline - time.monotonic():.0f} s left): "
                         + ", ".join(ti.label for ti in still))
                next_note = time.monotonic() + _PROGRESS_EVERY_S
        interrupted = self._interrupt(scheduler, seen, client, progress) if self._wait_round(scheduler, seen) else []
        seen.snapshot({n: r for n, r in scheduling.items() if process_alive(r[0])})
        # They had SIGTERM long ago; the scheduler had its grace in _interrupt. Their children
        # are in `seen`, swept at the end.
        late = [p for p, _ in scheduling.values() if process_alive(p)]
        _gone, late = psutil.wait_procs(late, timeout=_TERM_GRACE_S)
        if late:
            names = ", ".join(n for n, (p, _) in scheduling.items() if p in late)
            progress(f"    {names} did not stop within {_TERM_GRACE_S:.0f} s of SIGTERM: killing")
            _terminate(late, 5.0, sigterm=False)
        return interrupted

    def _wait_round(self, scheduling: dict[str, tuple[psutil.Process, float]], seen: _Seen) -> bool:
        """One poll: remember new processes; True while any scheduling component lives."""
        seen.snapshot({n: r for n, r in scheduling.items() if process_alive(r[0])})
        for proc, _ in scheduling.values():
            reap(proc.pid)
        if not any(process_alive(p) for p, _ in scheduling.values()):
            return False
        time.sleep(_POLL_S)
        return True

    def _interrupt(self, scheduling: dict[str, tuple[psutil.Process, float]], seen: _Seen,
                   client: AirflowClient | None, progress: Progress) -> list[str]:
        """Clear every running task instance until the scheduler has exited (or a grace passes)."""
        interrupted: list[str] = []
        cleared: set[tuple[str, str, str, int]] = set()
        stopped: set[psutil.Process] = set()
        deadline = time.monotonic() + _INTERRUPT_GRACE_S
        while time.monotonic() < deadline:
            # What interrupted tasks left behind goes now, so that their supervisors can finish.
            for name, (root, _) in scheduling.items():
                strays = [p for p in seen.strays(name, root) if p not in stopped]
                _signal_all(strays, signal.SIGTERM)
                stopped.update(strays)
            for ti in self._running(client):
                key = (ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
                if key in cleared or client is None:  # no client: _running listed nothing
                    continue
                try:
                    client.clear_running(ti, note=_INTERRUPT_NOTE)
                except AirflowApiError as exc:
                    progress(f"    could not clear {ti.label}: {exc}")
                    continue
                cleared.add(key)
                interrupted.append(f"{ti.label} (try {ti.try_number})")
                progress(f"    interrupted {ti.label} (try {ti.try_number}): it runs again at the next start")
            if not self._wait_round(scheduling, seen):
                break
            if client is None:  # no API to clear through: the caller kills the tree
                break
        return interrupted

    @staticmethod
    def _running(client: AirflowClient | None) -> list[TaskInstance]:
        if client is None:
            return []
        try:
            return client.running_task_instances()
        except AirflowApiError as exc:
            log.warning("cannot list running tasks: %s", exc)
            return []

    # ---- status --------------------------------------------------------------------------

    def status(self) -> StackStatus:
        """Each component's process and health, DAGs (paused, import errors), URLs, login and memory."""
        specs = self._specs()
        roots = self._roots()
        names = [s.name for s in specs if s.name in roots]
        health = self._health(names, "triton" in roots)
        comps = []
        for spec in [*specs, _Spec("triton", [], self._triton_ports(), "0.0.0.0", self.triton.http_url)]:
            root = roots.get(spec.name)
            ok, detail = health.get(spec.name, (False, "not running"))
            rss = _tree_memory([root[0], *_descendants(root[0])])[0] if root else 0
            comps.append(ComponentStatus(spec.name, root is not None, root[0].pid if root else None, ok, spec.url,
                                         str(self.log_path(spec.name)), detail, rss))
        rss, pss = _tree_memory(self.processes())
        st = StackStatus(home=str(self.home), running=all(c.running for c in comps),
                         healthy=all(c.healthy for c in comps), components=comps, api_url=self.api_url,
                         user=ADMIN_USER, password_file=str(self.password_file),
                         users=[user for user, _ in USERS],
                         triton_http_url=self.triton.http_url, triton_grpc_url=self.triton.grpc_url,
                         mlflow_url=self.mlflow_url if any(s.name == "mlflow" for s in specs) else None,
                         demo_site_url=self.demo_site_url, rss_bytes=rss, pss_bytes=pss)
        if "api-server" in roots:
            self._dag_status(st)
        return st

    def _dag_status(self, st: StackStatus) -> None:
        try:
            with self.client(timeout=10.0) as client:
                dags = client.dags()
                errors = client.import_errors()
        except AirflowApiError as exc:
            st.error = str(exc)
            return
        st.dags = sorted(d.dag_id for d in dags)
        st.paused_dags = sorted(d.dag_id for d in dags if d.is_paused)
        st.import_errors = [{"filename": e.filename, "error": e.stack_trace} for e in errors]


def _tree_memory(procs: list[psutil.Process]) -> tuple[int, int | None]:
    """(sum of RSS, sum of PSS or None where /proc/<pid>/smaps is unreadable) over ``procs``."""
    rss, pss = 0, 0
    pss_ok = True
    for proc in procs:
        try:
            if pss_ok:
                info = proc.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", 0)
                pss_ok = hasattr(info, "pss")
            else:
                rss += proc.memory_info().rss
        except psutil.AccessDenied:
            pss_ok = False
            with contextlib.suppress(psutil.Error):
                rss += proc.memory_info().rss
        except psutil.Error:
            continue
    return rss, (pss if pss_ok else None)


def login_hint(password_file: str | Path, users: list[str] | None = None) -> str:
    """``users admin, op, viewer; passwords in <file>``: who can log in (default ``USERS``) and
    where their passwords are, never a password."""
    names = users if users is not None else [user for user, _ in USERS]
    return f"users {', '.join(names)}; passwords in {password_file}"


def format_status(st: StackStatus) -> str:
    """``llmops stack status`` for people."""
    state = "healthy" if st.healthy else "running, NOT healthy" if st.running else \
        "partly running" if any(c.running for c in st.components) else "not running"
    lines = [f"stack of {st.home}: {state}"]
    for c in st.components:
        where = f"pid {c.pid}, {c.rss_bytes / 2**20:.0f} MiB: {c.detail}" if c.running else "not running"
        url = f"  {c.url}" if c.url else ""
        lines.append(f"  {c.name:<14} {('ok' if c.healthy else '--'):<3} {where}{url}")
    lines += [f"UI and REST API: {st.api_url}  ({login_hint(st.password_file, st.users)})",
              f"Triton:          {st.triton_http_url} (HTTP), {st.triton_grpc_url} (gRPC)"]
    if st.mlflow_url:
        lines.append(f"MLflow UI:       {st.mlflow_url}")
    if st.demo_site_url:
        lines.append(f"demo site:       {st.demo_site_url}")
    if any(c.running for c in st.components):
        pss = f" (proportional, shared pages split: {st.pss_bytes / 2**20:.0f} MiB)" if st.pss_bytes else ""
        lines.append(f"memory:          {st.rss_bytes / 2**20:.0f} MiB resident{pss}")
    if st.error:
        lines.append(f"DAGs:            unknown ({st.error})")
    elif st.dags:
        lines.append(f"DAGs:            {', '.join(st.dags)}")
        if st.paused_dags:
            lines.append(f"paused DAGs:     {', '.join(st.paused_dags)} (unpause them in the UI to let them run)")
    if st.import_errors:
        lines.append(f"import errors:   {len(st.import_errors)}")
        for err in st.import_errors:
            last = err["error"].strip().splitlines()[-1:] or [""]
            lines.append(f"  {err['filename']}: {last[0]}")
    return "\n".join(lines)


__all__ = ["ComponentStatus", "PortInUse", "Stack", "StackError", "StackStatus", "format_status", "port_free",
           "port_holder"]
