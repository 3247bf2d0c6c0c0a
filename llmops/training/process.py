"""Run a multi-process training job (the DeepSpeed launcher and its ranks) as one unit.

A DeepSpeed job is a tree: ``deepspeed`` (runner) -> ``deepspeed.launcher.launch`` ->
one Python process per rank. Killing only the process we started leaves that tree
behind: SIGKILL the runner and ``launch`` plus every rank keep running, holding CPU,
memory, the rendezvous port and the checkpoint directory. A retry then starts a second
job on the same run directory. This module makes both impossible:

* The job runs in a new session (its own process group), under a tiny *job leader*
  (this file run as a script). The leader is a child subreaper, so even processes that
  leave the group (``setsid``) or lose their parent stay its descendants; it asks the
  kernel for SIGTERM when *its* parent dies (the Airflow task process, killed -9 or
  OOM-killed), and it never exits before every descendant is gone. When the launcher
  exits, leftover processes are stopped too.
* ``ProcessGroupJob.kill()`` stops the whole tree: SIGTERM, a grace period, SIGKILL
  for the group and every descendant seen, then waits until none is left.
* ``JobLock`` (``<run_dir>/job.lock``) records the job's process group. A second
  launcher on the same run directory while that group lives gets ``JobAlreadyRunning``;
  a lock whose group is gone (the host rebooted, the leader was killed with its
  tree) is taken over.

Ranks call ``set_parent_death_signal()`` at start so they die with ``launch``.

Linux only in full: elsewhere the job runs without the leader (no subreaper, no parent
death signal); ``kill()`` still stops the group and the descendants it sees.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import logging
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, TextIO

import psutil

from llmops.errors import TransientError
from llmops.records.base import RecordError
from llmops.records.training import JobLockRecord

log = logging.getLogger(__name__)

LOCK_NAME = JobLockRecord.NAME
DEFAULT_GRACE_S = 10.0
# After SIGKILL only a process stuck in the kernel (D state, e.g. dead NFS) survives;
# waiting longer than this cannot help, so kill() reports it instead of hanging.
SIGKILL_WAIT_S = 30.0
_POLL_S = 0.05

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_LINUX = sys.platform.startswith("linux")
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_LEADER_FLAG = "--job-leader"


# --------------------------------------------------------------------------- kernel help


def _prctl(option: int, arg: int) -> bool:
    if not _LINUX:
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, arg, 0, 0, 0) == 0


def set_parent_death_signal(sig: int = signal.SIGKILL, *, expected_parent: int | None = None) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux).

    A rank calls this first thing: if the launcher that started it is killed, the rank
    dies with it instead of training on as an orphan. Returns False where it is not
    supported (not Linux), True once armed.

    The parent may die before the call arms the signal; then the signal never comes. So
    the parent pid is read first (or given as ``expected_parent``) and compared after
    arming: if it changed, the parent is already gone and ``sig`` is raised here, exactly
    as if the kernel had sent it. Note the kernel's "parent" is the *thread* that forked
    this process: start children from a thread that lives as long as they should.
    """
    parent = expected_parent if expected_parent is not None else os.getppid()
    if not _prctl(_PR_SET_PDEATHSIG, int(sig)):
        return False
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)
        # A handled or ignored signal returns here: the caller still must not go on.
        raise SystemExit(f"parent process {parent} died before the death signal was armed")
    return True


def describe_exit_code(code: int) -> str:
    """What an exit code means, in words: signals and DeepSpeed's conventions spelled out.

    DeepSpeed's ``launch`` passes a rank's return code to ``sys.exit``, so a rank killed
    by SIGKILL (the OOM killer) surfaces as 256 - 9 = 247; a shell reports 128 + 9 = 137.
    """
    if code == 0:
        return "exited successfully (exit code 0)"
    if code < 0:
        return f"was killed by {_signal_name(-code)} (exit code {code})"
    text = f"exited with code {code}"
    if 128 < code < 128 + signal.NSIG:
        text += f" (128 + {code - 128}: a process killed by {_signal_name(code - 128)}, as a shell reports it)"
    elif 256 - signal.NSIG < code < 256:
        text += (f" (256 - {256 - code}: a rank killed by {_signal_name(256 - code)}, as DeepSpeed's"
                 " launcher reports it; SIGKILL is often the out-of-memory killer)")
    return text


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie: a zombie has exited and only waits to be reaped."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # ZombieProcess is a NoSuchProcess too
        return False
    except psutil.AccessDenied:
        return True


def _group_members(pgid: int) -> list[psutil.Process]:
    """Every live process whose process group is ``pgid``."""
    members = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid:
                members.append(psutil.Process(pid))
        except (OSError, psutil.NoSuchProcess):
            continue
    return [p for p in members if _alive(p)]


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


# --------------------------------------------------------------------------- the lock


class JobAlreadyRunning(TransientError, RuntimeError):
    """A live job already owns the run directory; starting another would corrupt it."""


@dataclass
class JobSpec:
    """Everything needed to start one job; what an operator's ``build_job`` returns."""

    command: list[str]
    """argv of the launcher, e.g. ``["deepspeed", "--num_gpus", "2", "--module", "llmops.training.worker", ...]``."""
    env: dict[str, str]
    """The complete environment of the job (not merged with the caller's)."""
    cwd: Path
    """Working directory of the launcher."""
    run_dir: Path
    """The run's directory: one job at a time may use it (``job.lock`` lives here)."""
    log_path: Path
    """Every output line of the job is appended here, as it comes."""
    leftovers: list[str] = field(default_factory=list)
    """Glob patterns of files the job's processes leave behind when they exit (DeepSpeed's
    shared-memory all-reduce buffers), removed once none of the job is left."""


class JobLock:
    """``<run_dir>/job.lock``: at most one live job per run directory, on this host.

    The file holds a ``JobLockRecord`` (``token``, the owner's ``pid``, the job's ``pgid``,
    their create times, ``hostname``, ``started_at``, ``command``). The owner writes it
    *before* starting the job (``pgid`` unknown yet, so the owner's own pid vouches for it)
    and records the job's process group once it exists. A holder is live while its process
    group (or, before that, its owner) exists; create times guard against a recycled pid.
    A lock written on another host cannot be checked from here and counts as live: remove
    it by hand if that job is gone.

    Read-check-write runs under ``flock`` on the run directory, so two launchers racing
    for a free (or stale) lock cannot both win; the file itself is replaced atomically,
    so a reader never sees half of it.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._token: str | None = None

    # -- public

    @property
    def held(self) -> bool:
        return self._token is not None

    def holder(self) -> JobLockRecord | None:
        """The current lock record, or None when there is none (or it is unreadable: stale)."""
        if not self.path.exists():
            return None
        try:
            return JobLockRecord.read(self.path)
        except (OSError, RecordError) as exc:  # hand-edited or truncated by a full disk
            log.warning("Unreadable job lock %s (%s): treating it as stale", self.path, exc)
            return None

    def acquire(self, pgid: int | None = None, *, command: Sequence[str] = ()) -> None:
        """Take the lock, or raise ``JobAlreadyRunning`` naming the live holder."""
        if self.held:
            raise RuntimeError(f"{self.path} is already held by this JobLock")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self._mutex():
            current = self.holder()
            if current is not None:
                if self._is_live(current):
                    raise JobAlreadyRunning(self.busy_message(current))
                log.warning("Taking over a stale job lock %s: %s", self.path, self._describe(current))
            token = uuid.uuid4().hex
            JobLockRecord(token=token, pid=os.getpid(), pid_started=_started(os.getpid()), pgid=pgid,
                          leader_started=_started(pgid) if pgid else None, hostname=socket.gethostname(),
                          started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                          command=list(command)).write(self.path)
            self._token = token

    def set_pgid(self, pgid: int) -> None:
        """Record the job's process group: from now on the lock lives as long as the group."""
        with self._mutex():
            current = self.holder()
            if current is None or current.token != self._token:
                raise RuntimeError(f"lost the job lock {self.path}: {self._describe(current)}")
            current.model_copy(update={"pgid": pgid, "leader_started": _started(pgid)}).write(self.path)

    def release(self) -> None:
        """Remove the lock if it is still ours (a takeover after we went stale is not)."""
        if not self.held:
            return
        with self._mutex():
            current = self.holder()
            if current is not None and current.token == self._token:
                self.path.unlink(missing_ok=True)
            self._token = None

    def busy_message(self, holder: JobLockRecord) -> str:
        pgid, pid, since = holder.pgid, holder.pid, holder.started_at
        cmd = shlex.join(holder.command) or "?"
        if holder.hostname != socket.gethostname():
            return (f"a job is already running in {self.run_dir} on host {holder.hostname} "
                    f"(pid {pid}, process group {pgid}, since {since}): {cmd}. "
                    f"Its liveness cannot be checked from {socket.gethostname()}; if it is gone, delete {self.path}.")
        how = (f"stop it with `kill -TERM -- -{pgid}` (then `kill -KILL -- -{pgid}` if it ignores SIGTERM)"
               if pgid else f"it is being started by pid {pid}")
        return (f"a job is already running in {self.run_dir}: process group {pgid}, started by pid "
                f"{pid} since {since}: {cmd}. Wait for it to finish, or {how}.")

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- internals

    @contextlib.contextmanager
    def _mutex(self) -> Iterator[None]:
        import fcntl

        fd = os.open(self.run_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # drops the flock

    @staticmethod
    def _is_live(holder: JobLockRecord) -> bool:
        if holder.hostname != socket.gethostname():
            return True
        pgid = holder.pgid
        if pgid:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            if not _group_members(pgid):
                return False  # only zombies left, waiting to be reaped
            # The group exists. If its leader is alive but younger than the record, the
            # number was recycled for somebody else's group.
            started, recorded = _started(pgid), holder.leader_started
            return started is None or recorded is None or abs(started - recorded) < 1.0
        pid = holder.pid
        started = _started(pid) if pid else None
        return started is not None and abs(started - (holder.pid_started or started)) < 1.0

    @staticmethod
    def _describe(holder: JobLockRecord | None) -> str:
        if holder is None:
            return "no readable record"
        return (f"pid {holder.pid}, process group {holder.pgid} on {holder.hostname}, "
                f"since {holder.started_at}, is gone")


# --------------------------------------------------------------------------- the job


class ProcessGroupJob:
    """One running job: the launcher in a new session, all its output, and a sure kill.

    ``start()`` takes the run directory's lock first (so nothing runs twice), then starts
    the job and records its process group in the lock. A reader thread pumps the job's
    combined stdout/stderr into ``log_path`` and a queue from the start, so the log is
    complete and the job never blocks on a full pipe, even if nobody calls ``lines()``.
    ``wait()`` and ``kill()`` release the lock once nothing of the job is left.

    Call ``start()`` from a thread that outlives the job: the leader's parent death
    signal fires when the *starting thread* exits.
    """

    def __init__(self, run_dir: Path, *, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.run_dir = Path(run_dir)
        self.grace_s = grace_s
        self.lock = JobLock(self.run_dir)
        self.command: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._leader: psutil.Process | None = None
        self._known: dict[int, psutil.Process] = {}
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._log_file: TextIO | None = None
        self._killing = False
        self._finished = False
        self._eof = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def pgid(self) -> int | None:
        # start_new_session=True makes the child a session and group leader: pgid == pid.
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def start(self, command: Sequence[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None, log_path: Path | None = None) -> None:
        """Lock the run directory, start ``command`` in a new session, record its group."""
        if self._proc is not None:
            raise RuntimeError("this ProcessGroupJob was already started")
        self.command = [str(c) for c in command]
        if not self.command:
            raise ValueError("empty command")
        path = (env or os.environ).get("PATH")
        if shutil.which(self.command[0], path=path) is None and not Path(cwd or ".", self.command[0]).is_file():
            raise FileNotFoundError(f"cannot start the job: {self.command[0]!r} not found (PATH={path})")
        self.lock.acquire(command=self.command)
        try:
            if log_path is not None:
                Path(log_path).parent.mkdir(parents=True, exist_ok=True)
                self._log_file = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (open for the job's life)
            argv = self.command
            if _LINUX:
                argv = [sys.executable, "-I", str(Path(__file__).resolve()), _LEADER_FLAG,
                        str(os.getpid()), str(self.grace_s), "--", *self.command]
            self._proc = subprocess.Popen(
                argv, env=env, cwd=cwd, start_new_session=True, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, errors="replace")
            self._leader = psutil.Process(self._proc.pid)
            self._known[self._proc.pid] = self._leader
            self.lock.set_pgid(self._proc.pid)
            self._reader = threading.Thread(target=self._pump, name=f"job-output-{self._proc.pid}", daemon=True)
            self._reader.start()
        except BaseException:
            if self._proc is not None:
                self.kill()
            else:
                self._close()
            raise
        log.info("Started job (process group %d): %s", self._proc.pid, shlex.join(self.command))

    def lines(self) -> Iterator[str]:
        """The job's output lines (without the newline), as they come, until it closes its output."""
        proc = self._require_started()
        if self._eof:
            return
        give_up_at: float | None = None
        while True:
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                if proc.poll() is None or self._killing:
                    continue
                # The launcher is gone but something still holds the pipe open (only
                # without the leader, or if the leader was SIGKILLed): stop what we can
                # find, and if the pipe still does not close, a process we cannot see
                # (it left the group and lost its parent) has it: stop waiting for it.
                if give_up_at is None:
                    if leftovers := self.alive_pids():
                        log.warning("The launcher exited but processes %s of the job still run: stopping them",
                                    leftovers)
                        self._stop(self.grace_s)
                    give_up_at = time.monotonic() + 2.0
                elif time.monotonic() > give_up_at:
                    log.error("The job's output is still held open by a process outside its group; "
                              "not waiting for it")
                    self._eof = True
                    return
                continue
            if line is None:
                self._eof = True
                return
            yield line

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the job to end; returns the launcher's exit code (negative: killed by that signal)."""
        proc = self._require_started()
        code = proc.wait(timeout)
        if leftovers := self.alive_pids():
            # Only without the leader (not Linux), or if the leader itself was SIGKILLed.
            log.warning("Job exited but processes %s of it are still running: stopping them", leftovers)
            self._stop(self.grace_s)
        self._close()
        return code

    def kill(self, grace_s: float | None = None) -> int | None:
        """Stop the whole job: SIGTERM, up to ``grace_s`` to exit, then SIGKILL; returns once none is left.

        Every process of the group and every descendant of the leader (also those that
        moved to another group) is captured before signalling and waited for. Called
        again while a kill is in progress (e.g. from a SIGTERM handler), it escalates
        to SIGKILL at once. Returns the exit code, or None if the job never started.
        """
        if self._proc is None:
            return None
        if self._killing:
            self._snapshot()
            self._send(signal.SIGKILL)
            return None
        if self._finished:
            return self._proc.returncode
        self._killing = True
        try:
            self._stop(self.grace_s if grace_s is None else grace_s)
            return self._proc.wait()
        finally:
            self._killing = False
            self._close()

    def alive_pids(self) -> list[int]:
        """Pids of the job still alive: its process group plus every descendant seen so far."""
        if self._proc is None:
            return []
        self._proc.poll()  # reap the leader, else it lingers as a zombie of ours
        self._snapshot()
        return sorted(pid for pid, p in self._known.items() if _alive(p))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and not self._finished:
            self.kill()
        self._close()

    # -- internals

    def _require_started(self) -> subprocess.Popen[str]:
        if self._proc is None:
            raise RuntimeError("the job was not started")
        return self._proc

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            for raw in self._proc.stdout:
                if self._log_file is not None:
                    self._log_file.write(raw if raw.endswith("\n") else raw + "\n")
                    self._log_file.flush()
                self._lines.put(raw.rstrip("\n"))
        except (OSError, ValueError) as exc:  # the pipe or the log closed under us
            log.debug("Job output reader stopped: %s", exc)
        finally:
            self._lines.put(None)

    def _snapshot(self) -> None:
        """Remember every process of the job that exists now.

        psutil.Process objects carry the create time, so a pid recycled later is not
        mistaken for ours.
        """
        assert self._proc is not None
        found = _group_members(self._proc.pid)
        if self._leader is not None and _alive(self._leader):
            with contextlib.suppress(psutil.Error):
                found += self._leader.children(recursive=True)
        for proc in found:
            if self._known.get(proc.pid) != proc:  # new, or its pid was recycled
                self._known[proc.pid] = proc

    def _send(self, sig: int, *, leader_only: bool = False) -> None:
        assert self._proc is not None
        if leader_only:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
        for proc in self._known.values():
            if _alive(proc):
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)

    def _stop(self, grace_s: float) -> None:
        self._snapshot()
        # The leader fans SIGTERM out to every descendant exactly once and waits for them;
        # without it, signal the group and what we saw ourselves.
        self._send(signal.SIGTERM, leader_only=_LINUX and self._require_started().poll() is None)
        # A little slack over the leader's own grace, so it escalates first when it can.
        if self._wait_gone(grace_s + (1.0 if _LINUX else 0.0)):
            return
        log.warning("Job processes %s did not stop within %.0f s of SIGTERM: sending SIGKILL",
                    self.alive_pids(), grace_s)
        self._send(signal.SIGKILL)
        if not self._wait_gone(SIGKILL_WAIT_S, resend=signal.SIGKILL):
            log.error("Job processes %s survive SIGKILL (stuck in the kernel?)", self.alive_pids())

    def _wait_gone(self, timeout: float, *, resend: int | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            alive = self.alive_pids()
            if not alive:
                return True
            if time.monotonic() >= deadline:
                return False
            if resend is not None:  # new descendants forked after the last signal
                self._send(resend)
            time.sleep(_POLL_S)

    def _close(self) -> None:
        """Release everything once nothing of the job is left (idempotent)."""
        if self._finished:
            return
        if self._proc is not None and self._proc.poll() is None:
            return  # still running: the lock stays
        self._finished = True
        reader_done = True
        if self._reader is not None:
            self._reader.join(timeout=5.0)  # EOF arrives once the last writer is gone
            reader_done = not self._reader.is_alive()
        # Closing a pipe another thread is reading from blocks on the reader's buffer lock;
        # a reader still blocked (a lost process holds the pipe) keeps both, as a daemon.
        if reader_done:
            if self._proc is not None and self._proc.stdout is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdout.close()
            if self._log_file is not None:
                self._log_file.close()
        self.lock.release()


def run_job(command: Sequence[str], *, run_dir: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None, log_path: Path | None = None,
            on_line: Callable[[str], None] = lambda line: None,
            on_start: Callable[[ProcessGroupJob], None] | None = None,
            grace_s: float = DEFAULT_GRACE_S, leftovers: Sequence[str] = ()) -> int:
    """Run one job to the end, streaming every output line to ``on_line``; returns its exit code.

    Whatever interrupts the wait (KeyboardInterrupt, SystemExit, Airflow's
    AirflowTaskTimeout raised from its SIGALRM handler, an exception from ``on_line``)
    kills the whole job, waits until none of it is left, and is re-raised. ``on_start``
    receives the running job (e.g. so an operator's ``on_kill`` can stop it).
    Raises ``JobAlreadyRunning`` if a live job owns ``run_dir``. Files matching
    ``leftovers`` are removed once none of the job is left, however it ended.
    """
    job = ProcessGroupJob(run_dir, grace_s=grace_s)
    job.start(command, env=env, cwd=cwd, log_path=log_path)
    try:
        if on_start is not None:
            on_start(job)
        for line in job.lines():
            on_line(line)
        code = job.wait()
    except BaseException as exc:
        log.warning("Stopping job (process group %s) because of %s", job.pgid, type(exc).__name__)
        job.kill()
        raise
    finally:
        remove_leftovers(leftovers)
    (log.info if code == 0 else log.warning)("Job %s", describe_exit_code(code))
    return code


def remove_leftovers(patterns: Sequence[str]) -> None:
    """Delete the files a finished job left behind (``JobSpec.leftovers``)."""
    for pattern in patterns:
        for path in glob.glob(pattern):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


# --------------------------------------------------------------------------- the job leader


def _leader_say(message: str) -> None:
    with contextlib.suppress(OSError):  # the reader may be gone (our parent died)
        print(f"[llmops job leader {os.getpid()}] {message}", flush=True)


def _reap(child: int) -> int | None:
    """Reap every exited child (adopted orphans too); the wait status of ``child`` if it exited."""
    status = None
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == child:
            status = st


def _stop_descendants(grace_s: float) -> None:
    """SIGTERM every descendant once, SIGKILL what is left after ``grace_s``; return when none is left.

    "None" includes zombies: a process that dies after its parent becomes our child
    (we are the subreaper) and we reap it, rather than leave it to init.
    """
    me = psutil.Process()
    sent: dict[int, set[psutil.Process]] = {signal.SIGTERM: set(), signal.SIGKILL: set()}
    deadline = time.monotonic() + grace_s
    while True:
        _reap(-1)
        try:
            procs = me.children(recursive=True)
        except psutil.Error:
            procs = []
        if not procs:
            return
        sig = signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL
        for proc in filter(_alive, procs):
            if proc not in sent[sig]:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)
                sent[sig].add(proc)
        signal.sigtimedwait({signal.SIGCHLD}, _POLL_S)


def _exit_with(code: int) -> int:
    """Leave with the launcher's exit code; a signal death is re-raised so the parent sees it as one."""
    if code >= 0:
        return code
    sig = -code
    for stop in _STOP_SIGNALS:  # a pending SIGTERM must not pre-empt the launcher's own signal
        signal.signal(stop, signal.SIG_IGN)
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    return 128 + sig  # only reached for a signal whose default action is not to terminate


def _leader_main(argv: list[str]) -> int:
    """``process.py --job-leader <parent pid> <grace s> -- <command...>``: run the command, outlive nothing.

    Signals are blocked and taken synchronously (sigtimedwait), so no signal can land
    between "launcher exited" and "stop the rest" and be lost.
    """
    parent, grace_s, sep, *command = argv
    assert sep == "--" and command, argv
    grace = float(grace_s)
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS | {signal.SIGCHLD})
    if set_parent_death_signal(signal.SIGTERM, expected_parent=int(parent)) is False and _LINUX:
        _leader_say("could not arm the parent death signal; the job will not die with its caller")
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphans of the job become our children, not init's
    try:
        child = os.posix_spawnp(command[0], command, os.environ, setsigmask=(),
                                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as exc:
        _leader_say(f"cannot start {command[0]!r}: {exc}")
        return 127
    status = None
    while status is None:
        status = _reap(child)
        if status is not None:
            break
        info = signal.sigtimedwait(_STOP_SIGNALS | {signal.SIGCHLD}, 1.0)
        if info is not None and info.si_signo in _STOP_SIGNALS:
            _leader_say(f"received {_signal_name(info.si_signo)}: stopping the job")
            _stop_descendants(grace)
            return _exit_with(-info.si_signo)
    if leftovers := [p.pid for p in psutil.Process().children(recursive=True) if _alive(p)]:
        _leader_say(f"the launcher exited but processes {leftovers} still run: stopping them")
    _stop_descendants(grace)  # also reaps the zombies of those that just exited
    return _exit_with(os.waitstatus_to_exitcode(status))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == _LEADER_FLAG:
    sys.exit(_leader_main(sys.argv[2:]))
