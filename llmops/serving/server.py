"""The embedded Triton Inference Server: start it detached, find it again, stop it.

``llmops serve start`` must return while Triton keeps serving, and a later ``llmops
serve status`` / ``stop`` (another process, maybe another day) must find that server
again. So the server runs in its own session and is tracked by ``server.pid``, a JSON
record of its pid, create time and ports; everything lives under ``$LLMOPS_HOME/triton/``:

    models/       the model repository (``serving.repository`` overrides it)
    backends/     the backend directory handed to Triton (symlinks into the wheel + stub)
    server.pid    ServerPidFile: pid, create time and ports of the running server; never the admin key
    server.log    Triton's stdout/stderr (the previous run's is kept as server.log.1)
    admin.key     the generated admin key (mode 0600) when none is configured
    server.lock   serialises concurrent ``start`` calls

The binary is the ``tritonserver`` 2.51 shipped in the ``nvidia-pytriton`` wheel (or, in
an NGC image, the one on ``PATH``). Three things make its python backend work with this
interpreter's environment, each learnt the hard way:

* the wheel's ``backends/python`` has no ``triton_python_backend_stub``: the stubs for
  every Python version sit in ``python_backend_stubs/<ver>/``. We do not touch the
  installed wheel; ``backends/`` here is a directory of symlinks plus the stub for
  this interpreter's version.
* the stub links ``libpython3.X.so`` by name. Unless ``LD_LIBRARY_PATH`` points at this
  interpreter's ``LIBDIR`` first, the loader takes the system's copy (Debian 3.11.2), and
  any model importing ``ssl`` (transformers does) dies with
  ``undefined symbol: _PyModule_Add``.
* the stub embeds Python without a program path, so Python looks ``python3`` up on
  ``PATH`` and computes ``sys.prefix`` from what it finds. With the venv's ``bin/`` first
  on ``PATH`` it finds the venv's ``pyvenv.cfg``: ``sys.prefix`` is the venv, its
  ``site-packages`` (``.pth`` files included, so the editable ``llmops`` install too) are
  on ``sys.path`` and models import torch/transformers/numpy from the venv. (PYTHONPATH
  would add the directory but skip its ``.pth`` files.) pytriton does the same.

Security: Triton's model-repository API loads arbitrary ``model.py`` code from the
repository and unloads the served model, so it (and the other admin APIs in
``serving.restricted_apis``) requires the admin key in a header; inference, metadata and
health stay open.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import psutil

from llmops.config import LlmopsConfig
from llmops.errors import PermanentError, TransientError
from llmops.records.base import RecordError
from llmops.records.serving import ModelState, ServerPidFile, ServerStatus

if TYPE_CHECKING:  # tritonclient pulls in gevent/grpc: only imported when a client is asked for
    import tritonclient.grpc
    import tritonclient.http

log = logging.getLogger(__name__)

KEY_ENV = "LLMOPS_SERVING__ADMIN_KEY"
# Triton prefixes the configured header for gRPC: HTTP/2 metadata keys are lowercase and
# Triton namespaces its own (src/grpc/grpc_server.h, kRestrictedProtocolHeaderTemplate).
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
# What --http-restricted-api / --grpc-restricted-protocol accept in 2.51 (`tritonserver --help`).
RESTRICTABLE_APIS = ("health", "metadata", "inference", "shared-memory", "model-config", "model-repository",
                     "statistics", "trace", "logging")
_POLL_S = 0.25
_PROGRESS_EVERY_S = 10.0
_LOG_TAIL_LINES = 25
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerError(PermanentError, RuntimeError):
    """The embedded Triton server could not be started or controlled (permanent: a missing
    binary, a bad setting, a model Triton refuses); ``ServerUnavailable`` is the transient kind."""


class ServerUnavailable(TransientError, ServerError):
    """Triton is not running, not ready or not reachable yet, or still busy: a later try may find it up."""


class ServerAlreadyRunning(ServerError):
    """``start`` while a server of this home is alive; the message names its pid and URLs."""


class PortInUse(ServerError):
    """A configured port is taken by another process; checked before spawning Triton."""


@dataclass(frozen=True)
class _Binary:
    """Where ``tritonserver`` and what it needs live."""

    exe: Path
    backends: Path
    """The distribution's backend directory (each backend a subdirectory)."""
    stub: Path | None
    """``triton_python_backend_stub`` for this Python, when it is not inside ``backends/python``."""
    libs: Path | None
    """Shared libraries the wheel's backends link (``nvidia_pytriton.libs``)."""


def locate_tritonserver() -> _Binary:
    """The ``tritonserver`` of the installed ``nvidia-pytriton`` wheel, else the one on PATH.

    The wheel is what the embedded stack uses; the PATH fallback is an NGC
    ``tritonserver`` image (``/opt/tritonserver``), whose python backend carries its stub.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec and spec.submodule_search_locations:
        pkg = Path(next(iter(spec.submodule_search_locations)))
        root = pkg / "tritonserver"
        exe = root / "bin" / "tritonserver"
        if exe.exists():
            ver = f"{sys.version_info.major}.{sys.version_info.minor}"
            stub = root / "python_backend_stubs" / ver / "triton_python_backend_stub"
            if not stub.exists():
                raise ServerError(f"nvidia-pytriton ships no python backend stub for Python {ver} ({stub})")
            libs = pkg.parent / "nvidia_pytriton.libs"
            return _Binary(exe, root / "backends", stub, libs if libs.is_dir() else None)
    found = shutil.which("tritonserver")
    if found:
        exe = Path(found).resolve()
        return _Binary(exe, exe.parent.parent / "backends", None, None)
    raise ServerError("tritonserver not found: install nvidia-pytriton (pip install --no-deps nvidia-pytriton) "
                      "or put an NGC tritonserver on PATH")


def port_free(port: int, host: str = "0.0.0.0") -> bool:
    """True when nothing listens on ``port`` (what Triton will bind: all interfaces).

    SO_REUSEADDR as servers use it: a port whose last connections linger in TIME_WAIT
    counts as free (Triton can bind it), one with a listener does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def process_alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a zombie has exited and only waits to be reaped)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


class TritonServer:
    """The Triton server of one ``LLMOPS_HOME``: start, stop, status and model control.

    Any number of ``TritonServer`` objects (in any processes) built from the same
    configuration manage the same server: its state is the pid file, not this object.
    Control calls (load/unload/index) send the admin key; ``http_client()`` and
    ``grpc_client()`` give plain tritonclient clients for inference, which needs none.
    """

    def __init__(self, cfg: LlmopsConfig) -> None:
        self.cfg = cfg
        self.serving = cfg.serving
        self.root = cfg.layout.triton
        repo = self.serving.repository
        self.repository = Path(repo).expanduser().resolve() if repo else cfg.layout.triton_models
        self.backend_dir = self.root / "backends"
        self.pid_file = self.root / ServerPidFile.NAME
        self.log_path = self.root / "server.log"
        self.key_file = self.root / "admin.key"
        self._lock_file = self.root / "server.lock"
        self._key: str | None = None

    def __repr__(self) -> str:  # no key here, ever
        return f"TritonServer(home={self.cfg.home}, http={self.http_url})"

    # ---- addresses ---------------------------------------------------------------------

    def _ports(self) -> dict[str, int]:
        """Ports of the running server (from its pid file), else the configured ones.

        A server started before the configuration changed still listens where it did.
        """
        record = self._read_record()
        if record:
            return {"http_port": record.http_port, "grpc_port": record.grpc_port, "metrics_port": record.metrics_port}
        s = self.serving
        return {"http_port": s.http_port, "grpc_port": s.grpc_port, "metrics_port": s.metrics_port}

    @property
    def http_address(self) -> str:
        """``host:port`` of the HTTP endpoint, as ``tritonclient.http`` takes it."""
        return f"{self.serving.host}:{self._ports()['http_port']}"

    @property
    def grpc_address(self) -> str:
        """``host:port`` of the gRPC endpoint, as ``tritonclient.grpc`` takes it."""
        return f"{self.serving.host}:{self._ports()['grpc_port']}"

    @property
    def http_url(self) -> str:
        return f"http://{self.http_address}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.grpc_address}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.serving.host}:{self._ports()['metrics_port']}/metrics"

    # ---- the admin key -----------------------------------------------------------------

    @property
    def admin_key(self) -> str:
        """The key that unlocks the restricted APIs: configured, from the environment, or generated.

        ``serving.admin_key`` already carries ``$LLMOPS_SERVING__ADMIN_KEY`` when the config
        came from ``load_config``; the environment is read again for configs built in code.
        """
        if self._key is None:
            configured = self.serving.admin_key.get_secret_value() if self.serving.admin_key else ""
            key = configured or os.environ.get(KEY_ENV, "") or self._stored_key()
            if any(c.isspace() for c in key) or not key.isprintable():
                # A header value cannot carry them; refuse rather than send a mangled key.
                raise ServerError("serving.admin_key must not contain whitespace or control characters")
            self._key = key
        return self._key

    def _stored_key(self) -> str:
        """``admin.key``, created once with a random key, readable by its owner only."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two processes generating at once must not end up with different keys.
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if self.key_file.stat().st_mode & 0o077:
                log.warning("%s was readable by others; restricting it to its owner", self.key_file)
                self.key_file.chmod(0o600)
            key = self.key_file.read_text().strip()
            if not key:
                raise ServerError(f"{self.key_file} is empty: delete it to generate a new admin key") from None
            return key
        key = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        log.info("generated an admin key in %s", self.key_file)
        return key

    @property
    def admin_key_source(self) -> str:
        """Where the admin key comes from, in words (for people; never the key itself)."""
        if self.serving.admin_key and self.serving.admin_key.get_secret_value():
            return f"serving.admin_key (or ${KEY_ENV})"
        if os.environ.get(KEY_ENV):
            return f"${KEY_ENV}"
        return str(self.key_file)

    def admin_headers(self, protocol: Literal["http", "grpc"] = "http") -> dict[str, str]:
        """Headers (HTTP) or metadata (gRPC) that unlock the restricted APIs.

        Triton checks the configured header as is over HTTP, and as
        ``triton-grpc-protocol-<header>`` over gRPC.
        """
        name = self.serving.admin_header
        return {(GRPC_HEADER_PREFIX + name if protocol == "grpc" else name): self.admin_key}

    def _redact(self, text: str) -> str:
        key = self._key
        return text.replace(key, "***") if key else text

    # ---- the pid file ------------------------------------------------------------------

    def _read_record(self) -> ServerPidFile | None:
        """The pid file; None when there is none or it does not read (a crash mid-write, another format)."""
        if not self.pid_file.is_file():
            return None
        try:
            return ServerPidFile.read(self.pid_file)
        except (OSError, RecordError):
            return None

    def _live_process(self) -> psutil.Process | None:
        """The running server recorded in the pid file; a stale pid file is removed.

        Stale: the process is gone, or the pid now belongs to another process (its create
        time differs from the recorded one: the pid was reused after a reboot or a crash).
        """
        record = self._read_record()
        if record is None:
            if self.pid_file.exists():
                log.warning("removing unreadable pid file %s", self.pid_file)
                self.pid_file.unlink(missing_ok=True)
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
        log.info("removing stale pid file %s (pid %s is not a running Triton)", self.pid_file, record.pid)
        self.pid_file.unlink(missing_ok=True)
        return None

    @property
    def pid(self) -> int | None:
        """Pid of the running server, None when none runs."""
        proc = self._live_process()
        return proc.pid if proc else None

    def is_running(self) -> bool:
        return self._live_process() is not None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Two ``start`` calls at once must not both pass the "not running" check."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self._lock_file, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ---- start -------------------------------------------------------------------------

    def prepare_backends(self, binary: _Binary | None = None) -> Path:
        """``backends/``: the distribution's backends as symlinks, plus the python stub.

        Rebuilt on every start (cheap), so a reinstalled wheel or a new venv is picked up.
        The installed wheel itself is never modified.
        """
        binary = binary or locate_tritonserver()
        if binary.stub is None:  # an NGC image: its backend directory is complete
            return binary.backends
        for src_dir in sorted(p for p in binary.backends.iterdir() if p.is_dir()):
            dst_dir = self.backend_dir / src_dir.name
            dst_dir.mkdir(parents=True, exist_ok=True)
            links = {p.name: p for p in src_dir.iterdir() if p.name != "__pycache__"}
            if src_dir.name == "python":
                links["triton_python_backend_stub"] = binary.stub
            for name, target in links.items():
                dst = dst_dir / name
                if dst.is_symlink() and Path(os.readlink(dst)) == target:
                    continue
                tmp = dst_dir / f".{name}.tmp{os.getpid()}"
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(target)
                os.replace(tmp, dst)  # atomic: a concurrent reader never sees it missing
        return self.backend_dir

    def _startup_models(self) -> list[str]:
        """Model directories already in the repository, loaded at start.

        The staging name is left out: whatever sits there was a candidate under test,
        and loading it again at boot would serve an unvetted model. Hidden directories are
        half-written models (written to a temporary name, then renamed).
        """
        if not self.repository.is_dir():
            return []
        return sorted(p.name for p in self.repository.iterdir()
                      if p.is_dir() and not p.name.startswith((".", "_")) and p.name != self.serving.staging_model_name)

    def _restriction_flags(self) -> list[str]:
        """``--http-restricted-api`` / ``--grpc-restricted-protocol`` for ``serving.restricted_apis``.

        Triton 2.51 parses ``<apis>:<header>=<value>`` (comma-separated apis; the help text
        says ``<apis>,<key>=<value>``, but the parser splits on the first ``:``, then the
        first ``=``, so the value may itself contain ``:`` and ``=``).
        """
        apis = list(dict.fromkeys(self.serving.restricted_apis))
        unknown = [a for a in apis if a not in RESTRICTABLE_APIS]
        if unknown:
            raise ServerError(f"serving.restricted_apis: unknown API(s) {unknown}; Triton knows "
                              f"{', '.join(RESTRICTABLE_APIS)}")
        if not apis:
            log.warning("serving.restricted_apis is empty: anyone who reaches port %s can load and unload models",
                        self.serving.http_port)
            return []
        spec = f"{','.join(apis)}:{self.serving.admin_header}={self.admin_key}"
        return [f"--http-restricted-api={spec}", f"--grpc-restricted-protocol={spec}"]

    def command(self, binary: _Binary | None = None) -> list[str]:
        """The ``tritonserver`` argv. It contains the admin key: never log or print it."""
        binary = binary or locate_tritonserver()
        s = self.serving
        cmd = [str(binary.exe), f"--model-repository={self.repository}",
               f"--backend-directory={self.prepare_backends(binary)}",
               "--model-control-mode=explicit",
               # Server readiness means "up and able to serve", not "every model ever tried is
               # READY": with strict readiness one failed load (a staged version that does not
               # initialise) would mark the server not ready for good and a load balancer would
               # pull the healthy served model out of rotation. Model readiness is
               # /v2/models/<name>/ready.
               "--strict-readiness=false",
               f"--http-port={s.http_port}", f"--grpc-port={s.grpc_port}", f"--metrics-port={s.metrics_port}"]
        cmd += [f"--load-model={name}" for name in self._startup_models()]
        # Known limit: Triton 2.51 reads the restricted-API settings only from argv (no
        # file or environment variable), so the key is visible in /proc/<pid>/cmdline to
        # users of this machine who may read other users' process lists (not with
        # hidepid=2). The key guards against the network, not against local users.
        return cmd + self._restriction_flags()

    def environment(self, binary: _Binary | None = None) -> dict[str, str]:
        """Triton's environment: this interpreter's libpython and venv come first."""
        binary = binary or locate_tritonserver()
        env = {k: v for k, v in os.environ.items() if k != KEY_ENV}  # models need not see the key
        libdir = sysconfig.get_config_var("LIBDIR")
        ldlib = sysconfig.get_config_var("LDLIBRARY") or ""
        if libdir and ldlib.endswith(".so") and not (Path(libdir) / ldlib).exists():
            log.warning("this Python has no shared libpython in %s: the python backend stub will load the "
                        "system's, which breaks models that import ssl", libdir)
        paths = [p for p in (libdir, str(binary.libs) if binary.libs else None) if p]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(paths + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep)
                                                          if p and p not in paths])
        # Not resolved: the venv's bin/python3 is a symlink, and it is the unresolved path
        # next to pyvenv.cfg that makes the stub's interpreter use the venv (see module doc).
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([bindir] + [p for p in env.get("PATH", "").split(os.pathsep) if p != bindir])
        return env

    def _check_ports(self) -> None:
        s = self.serving
        ports = {"serving.http_port": s.http_port, "serving.grpc_port": s.grpc_port,
                 "serving.metrics_port": s.metrics_port}
        if len(set(ports.values())) < 3:
            raise PortInUse(f"HTTP, gRPC and metrics need three different ports, got {ports}")
        for key, port in ports.items():
            if not port_free(port):
                env = "LLMOPS_" + key.upper().replace(".", "__")
                raise PortInUse(f"port {port} ({key}) is already in use on this machine: another server "
                                f"listens there. Stop it, or choose another port ({env}=...)")

    def start(self, wait: bool = True, progress: Callable[[str], None] | None = None) -> ServerStatus:
        """Start Triton detached and (by default) wait until ``/v2/health/ready``.

        Models already in the repository (except the staging name) are loaded at start.
        Raises ``ServerAlreadyRunning``, ``PortInUse``, or ``ServerError`` with the end of
        ``server.log`` when Triton exits or is not ready within ``serving.startup_timeout_s``.
        ``progress`` gets a line every few seconds while waiting (the CLI prints it).
        """
        with self._locked():
            proc = self._live_process()
            if proc is not None:
                raise ServerAlreadyRunning(f"Triton is already running (pid {proc.pid}): {self.http_url}, "
                                           f"{self.grpc_url}, metrics {self.metrics_url}; "
                                           "`llmops serve stop` stops it")
            self._check_ports()
            binary = locate_tritonserver()
            self.repository.mkdir(parents=True, exist_ok=True)
            cmd = self.command(binary)
            env = self.environment(binary)
            if self.log_path.exists():
                os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
            with open(self.log_path, "wb") as logf:
                # A new session: the server outlives this process (the CLI returns) and is
                # not hit by the terminal's Ctrl-C; the stub processes share its group.
                popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         env=env, cwd=self.root, start_new_session=True, close_fds=True)
            try:
                started = psutil.Process(popen.pid).create_time()
            except psutil.Error:  # exited already (bad flag): reported by the wait below
                started = time.time()
            ServerPidFile(pid=popen.pid, started=started, host=self.serving.host, http_port=self.serving.http_port,
                          grpc_port=self.serving.grpc_port, metrics_port=self.serving.metrics_port,
                          repository=str(self.repository), log=str(self.log_path),
                          started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z")).write(self.pid_file)
        log.info("started tritonserver pid %s (%s), log %s", popen.pid, self.http_url, self.log_path)
        if wait:
            self._wait_ready(popen, progress)
        return self.status()

    def _wait_ready(self, popen: subprocess.Popen[bytes], progress: Callable[[str], None] | None) -> None:
        timeout = self.serving.startup_timeout_s
        t0 = time.monotonic()
        next_note = t0 + _PROGRESS_EVERY_S
        while True:
            code = popen.poll()
            if code is not None:
                self.pid_file.unlink(missing_ok=True)
                raise ServerError(f"tritonserver exited during startup (exit code {code}); "
                                  f"end of {self.log_path}:\n{self.log_tail()}")
            if self.ready():
                return
            now = time.monotonic()
            if now - t0 > timeout:
                self.stop(timeout=30)
                raise ServerError(f"Triton was not ready within {timeout:.0f} s (serving.startup_timeout_s) "
                                  f"and was stopped; end of {self.log_path}:\n{self.log_tail()}")
            if now >= next_note:
                note = f"waiting for Triton to be ready ({now - t0:.0f} s of {timeout:.0f} s, log {self.log_path})"
                log.info(note)
                if progress:
                    progress(note)
                next_note = now + _PROGRESS_EVERY_S
            time.sleep(_POLL_S)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of ``server.log``, Triton's errors first (the admin key, should it appear, masked).

        Triton prints its startup tables (backends, models, options) right before it
        fails; they are dropped here so the reason is not buried under them.
        """
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 64_000))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        kept = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("+-", "| "))]
        # E-lines and the final "error: creating server: ..." say why; NVML/DCGM/CUDA ones are noise on CPU.
        errors = [ln for ln in kept if (ln.startswith("E") and ln[1:5].isdigit() or ln.startswith("error:"))
                  and not any(n in ln for n in ("CudaDriverHelper", "NVML", "DCGM"))]
        head = ["errors:", *errors[-5:], "last lines:"] if errors else []
        return self._redact("\n".join(head + kept[-lines:]))

    # ---- stop --------------------------------------------------------------------------

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM, wait ``timeout`` s (Triton drains in-flight requests), then SIGKILL.

        Returns True when a server was stopped, False when none was running (not an
        error). Triton's own drain limit is 30 s (``--exit-timeout-secs``), hence the
        default. SIGKILL goes to the whole process group so no stub is left behind.
        """
        with self._locked():
            proc = self._live_process()
            if proc is None:
                return False
            pid = proc.pid
            group = [proc] + self._children(proc)
            log.info("stopping tritonserver pid %s", pid)
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
            _gone, alive = psutil.wait_procs([proc], timeout=timeout)
            if alive:
                log.warning("tritonserver pid %s did not stop within %.0f s: killing it", pid, timeout)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)  # start_new_session made it the group leader
            # The stubs exit with their server; wait for them so "stopped" means no process left.
            _gone, stragglers = psutil.wait_procs([p for p in group if process_alive(p)], timeout=10)
            for p in stragglers:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(stragglers, timeout=5)
            reap(pid)
            self.pid_file.unlink(missing_ok=True)
            return True

    @staticmethod
    def _children(proc: psutil.Process) -> list[psutil.Process]:
        try:
            return proc.children(recursive=True)
        except psutil.Error:
            return []

    # ---- status and control ------------------------------------------------------------

    def get_json(self, path: str, api: str, timeout: float = 2.0) -> Any:
        """``GET <http_url><path>`` as JSON (``{}`` for an empty answer), or None when Triton
        answers with an error or not at all. ``api`` is the Triton API the path belongs to
        (``health``, ``metadata``, …): the admin key goes along where ``serving.restricted_apis``
        restricts it."""
        headers = self.admin_headers() if api in self.serving.restricted_apis else {}
        req = urllib.request.Request(f"{self.http_url}{path}", headers=headers)
        try:
            # No proxies: an http_proxy in the environment must not swallow a local probe.
            with _NO_PROXY.open(req, timeout=timeout) as resp:
                body = resp.read()
                return json.loads(body) if body else {}
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def ready(self, timeout: float = 2.0) -> bool:
        """``GET /v2/health/ready`` answers 200."""
        return self.get_json("/v2/health/ready", "health", timeout) is not None

    def status(self) -> ServerStatus:
        """Whether the server runs, where, whether it is ready, and the repository's models."""
        proc = self._live_process()
        st = ServerStatus(running=proc is not None, pid=proc.pid if proc else None, http_url=self.http_url,
                          grpc_url=self.grpc_url, metrics_url=self.metrics_url, ready=False,
                          log_path=str(self.log_path), repository=str(self.repository))
        if proc is None:
            return st
        st.ready = self.ready()
        try:
            st.models = self.repository_index()
        except ServerError as exc:  # status reports problems, it does not raise on them
            st.error = self._redact(f"{type(exc).__name__}: {exc}")
        return st

    def http_client(self, network_timeout: float = 60.0) -> tritonclient.http.InferenceServerClient:
        """A ``tritonclient.http`` client of this server (pass ``admin_headers()`` for control calls)."""
        import tritonclient.http

        return tritonclient.http.InferenceServerClient(self.http_address, network_timeout=network_timeout)

    def grpc_client(self) -> tritonclient.grpc.InferenceServerClient:
        """A ``tritonclient.grpc`` client (pass ``admin_headers("grpc")`` for control calls)."""
        import tritonclient.grpc

        return tritonclient.grpc.InferenceServerClient(self.grpc_address)

    def _control(self, what: str, call: Callable[[Any], Any], timeout: float = 60.0) -> Any:
        from tritonclient.utils import InferenceServerException

        client = self.http_client(network_timeout=timeout)
        try:
            return call(client)
        except InferenceServerException as exc:
            raise ServerError(self._redact(f"{what} failed: {exc.message()}")) from None
        except (OSError, ConnectionError) as exc:
            raise ServerUnavailable(f"{what} failed: Triton is not reachable at {self.http_url} ({exc})") from None
        finally:
            client.close()

    def load_model(self, name: str, config: str | None = None) -> None:
        """Load (or reload) ``name`` from the repository; returns once it is ready.

        ``config`` (JSON) overrides the model's ``config.pbtxt`` for this load. Waits up to
        ``serving.startup_timeout_s`` (a large model takes a while); raises ``ServerError``
        with Triton's reason on failure.
        """
        self._control(f"loading model {name!r}",
                      lambda c: c.load_model(name, headers=self.admin_headers(), config=config),
                      timeout=self.serving.startup_timeout_s)

    def unload_model(self, name: str, unload_dependents: bool = False, wait: bool = True,
                     timeout: float = 60.0) -> None:
        """Unload ``name``; in-flight requests finish first.

        Triton answers the unload request at once and unloads in the background; while a
        model is UNLOADING the whole server reports not ready (strict readiness). With
        ``wait`` this returns only once the model has left that state, so the next health
        check, or a load under the same name, sees a settled server.
        """
        self._control(f"unloading model {name!r}",
                      lambda c: c.unload_model(name, headers=self.admin_headers(),
                                               unload_dependents=unload_dependents))
        if wait:
            self.wait_unloaded(name, timeout)

    def wait_unloaded(self, name: str, timeout: float = 60.0) -> None:
        """Return once ``name`` is neither READY nor UNLOADING (for unloads sent by other clients)."""
        deadline = time.monotonic() + timeout
        while {m.state for m in self.repository_index() if m.name == name} & {"UNLOADING", "READY"}:
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"model {name!r} was still loaded or unloading after {timeout:.0f} s")
            time.sleep(0.1)

    def repository_index(self) -> list[ModelState]:
        """Every model directory in the repository with its state, as Triton sees it."""
        rows = self._control("listing the model repository",
                             lambda c: c.get_model_repository_index(headers=self.admin_headers()))
        return [ModelState(name=r.get("name", ""), version=str(r.get("version", "")), state=r.get("state", ""),
                           reason=r.get("reason", "")) for r in rows]
