"""Supervising a multi-process job: output streams live, exit codes come back, and however
the job ends (it exits, it is killed, its caller is killed -9, an exception interrupts the
wait) no process of it is left; a second launch on the same run directory is refused
while the first lives.

The stand-in launcher (JOB_SCRIPT) starts two sleeping "ranks" and a third process that
escapes into its own session (as a daemonising tool would), records their pids, prints a
few lines and then sleeps or exits. The DeepSpeed tests run the real ``deepspeed``
launcher with 2 CPU ranks.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from llmops.training.process import (
    LOCK_NAME,
    JobAlreadyRunning,
    JobLock,
    ProcessGroupJob,
    describe_exit_code,
    run_job,
)

REPO = Path(__file__).resolve().parents[2]
DEEPSPEED = str(Path(sys.executable).parent / "deepspeed")
pytestmark = pytest.mark.timeout(120)

JOB_SCRIPT = '''
import json, os, signal, subprocess, sys, time

pids_file, mode = sys.argv[1], sys.argv[2]
stubborn = mode == "stubborn"  # every process ignores SIGTERM: only SIGKILL stops it
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
rank = [sys.executable, "-c", "import signal, sys, time\\n"
        "if sys.argv[1] == '1': signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
        "time.sleep(600)", "1" if stubborn else "0"]
ranks = [subprocess.Popen(rank) for _ in range(2)]
escaped = subprocess.Popen(rank, start_new_session=True)  # leaves the process group
with open(pids_file + ".tmp", "w") as fh:
    json.dump([os.getpid(), *(r.pid for r in ranks), escaped.pid], fh)
os.replace(pids_file + ".tmp", pids_file)
for i in range(3):
    print(f"line {i}", flush=True)
print(f"echo {os.environ.get('JOB_ECHO', '')}", flush=True)
print("ready", flush=True)
if mode in ("sleep", "stubborn"):
    time.sleep(600)
sys.exit(int(mode))
'''


@pytest.fixture
def job_script(tmp_path: Path) -> Path:
    path = tmp_path / "launcher.py"
    path.write_text(JOB_SCRIPT)
    return path


def job_command(script: Path, pids_file: Path, mode: str) -> list[str]:
    return [sys.executable, str(script), str(pids_file), mode]


def gone(pid: int) -> bool:
    """Exited (a zombie has exited too; it only waits for its parent to reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def read_until(job: ProcessGroupJob, wanted: str) -> list[str]:
    seen = []
    for line in job.lines():
        seen.append(line)
        if line == wanted:
            return seen
    raise AssertionError(f"output ended before {wanted!r}: {seen}")


def test_output_streams_to_on_line_and_the_log_and_the_exit_code_comes_back(job_script, tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "logs" / "job.log"
    lines: list[str] = []
    code = run_job(job_command(job_script, tmp_path / "pids.json", "3"), run_dir=run_dir, log_path=log,
                   env={**os.environ, "JOB_ECHO": "hello"}, cwd=tmp_path, on_line=lines.append)
    assert code == 3
    assert lines[:5] == ["line 0", "line 1", "line 2", "echo hello", "ready"]
    # The launcher exited with its ranks still running: the job leader stopped them.
    assert "the launcher exited but processes" in lines[5]
    assert log.read_text().splitlines() == lines
    assert all(gone(pid) for pid in json.loads((tmp_path / "pids.json").read_text()))
    assert not (run_dir / LOCK_NAME).exists()

    code = run_job(job_command(job_script, tmp_path / "pids.json", "0"), run_dir=run_dir, log_path=log)
    assert code == 0
    assert log.read_text().count("ready") == 2  # appended, not overwritten


def test_kill_stops_the_group_and_the_descendants_that_left_it(job_script, tmp_path):
    pids_file = tmp_path / "pids.json"
    with ProcessGroupJob(tmp_path / "run") as job:
        job.start(job_command(job_script, pids_file, "sleep"), log_path=tmp_path / "job.log")
        read_until(job, "ready")  # streamed while the job still runs
        pids = json.loads(pids_file.read_text())
        escaped = pids[-1]
        assert os.getpgid(escaped) != job.pgid
        assert set(pids) <= set(job.alive_pids())
        assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pgid"] == job.pgid

        code = job.kill()
        assert code == -signal.SIGTERM
        assert [pid for pid in pids + [job.pid] if not gone(pid)] == []
        assert job.alive_pids() == []
        assert not (tmp_path / "run" / LOCK_NAME).exists()
        assert job.kill() == code  # idempotent
    assert "received SIGTERM: stopping the job" in (tmp_path / "job.log").read_text()


def test_processes_that_ignore_sigterm_are_killed_after_the_grace_period(job_script, tmp_path):
    pids_file = tmp_path / "pids.json"
    job = ProcessGroupJob(tmp_path / "run", grace_s=0.5)
    job.start(job_command(job_script, pids_file, "stubborn"))
    read_until(job, "ready")
    started = time.monotonic()
    code = job.kill()
    assert time.monotonic() - started < 60  # grace 0.5 s then SIGKILL; the processes would sleep 600 s
    assert code == -signal.SIGTERM
    assert all(gone(pid) for pid in json.loads(pids_file.read_text()))


class FakeTaskTimeout(Exception):
    """What Airflow's execution_timeout raises from its SIGALRM handler."""


def _raise_timeout(signum, frame):
    raise FakeTaskTimeout("timed out")


@pytest.mark.parametrize("how", ["exception in on_line", "SIGALRM handler", "KeyboardInterrupt"])
def test_an_interrupted_wait_kills_the_job_and_reraises(job_script, tmp_path, how):
    pids_file = tmp_path / "pids.json"

    def on_line(line: str) -> None:
        if line == "ready" and how == "exception in on_line":
            raise ValueError("consumer failed")
        if line == "ready" and how == "KeyboardInterrupt":
            raise KeyboardInterrupt

    expected = {"exception in on_line": ValueError, "SIGALRM handler": FakeTaskTimeout,
                "KeyboardInterrupt": KeyboardInterrupt}[how]
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    try:
        if how == "SIGALRM handler":  # fires while run_job blocks waiting for output
            signal.setitimer(signal.ITIMER_REAL, 1.5)
        with pytest.raises(expected):
            run_job(job_command(job_script, pids_file, "sleep"), run_dir=tmp_path / "run", on_line=on_line)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert all(gone(pid) for pid in json.loads(pids_file.read_text()))
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_a_second_job_on_the_same_run_dir_is_refused_while_the_first_lives(job_script, tmp_path):
    run_dir = tmp_path / "run"
    first = ProcessGroupJob(run_dir)
    first.start(job_command(job_script, tmp_path / "first.json", "sleep"))
    try:
        read_until(first, "ready")
        with pytest.raises(JobAlreadyRunning, match=rf"process group {first.pgid}.*kill -TERM -- -{first.pgid}"):
            run_job(job_command(job_script, tmp_path / "second.json", "0"), run_dir=run_dir)
        assert not (tmp_path / "second.json").exists()  # it never started
        # The refused attempt did not disturb the first job's lock.
        assert json.loads((run_dir / LOCK_NAME).read_text())["pgid"] == first.pgid
    finally:
        first.kill()
    assert run_job(job_command(job_script, tmp_path / "second.json", "0"), run_dir=run_dir) == 0


def _race_for_the_lock(run_dir: str, barrier, results, release) -> None:
    barrier.wait()
    try:
        JobLock(Path(run_dir)).acquire(command=["racer"])
    except JobAlreadyRunning:
        results.put("lost")
        return
    results.put("won")
    release.wait(30)  # hold it (alive) until every racer has tried


def test_racing_launchers_cannot_both_win(tmp_path):
    ctx = multiprocessing.get_context("fork")
    racers = 6
    barrier, results, release = ctx.Barrier(racers), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_race_for_the_lock, args=(str(tmp_path / "run"), barrier, results, release))
             for _ in range(racers)]
    for proc in procs:
        proc.start()
    outcomes = sorted(results.get(timeout=30) for _ in procs)
    release.set()
    for proc in procs:
        proc.join(10)
    assert outcomes == ["lost"] * (racers - 1) + ["won"]


def _dead_pgid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("holder", ["dead process group", "dead owner before the group", "unreadable"])
def test_a_stale_lock_is_taken_over(job_script, tmp_path, caplog, holder):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = {"token": "old", "hostname": socket.gethostname(), "started_at": "2026-01-01T00:00:00+00:00",
              "command": ["old"], "pid": _dead_pgid(), "pid_started": 1.0}
    if holder == "dead process group":
        record.update(pgid=_dead_pgid(), leader_started=1.0)
    (run_dir / LOCK_NAME).write_text("{not json" if holder == "unreadable" else json.dumps(record))
    with caplog.at_level("WARNING", logger="llmops.training.process"):
        assert run_job(job_command(job_script, tmp_path / "pids.json", "0"), run_dir=run_dir) == 0
    assert "stale" in caplog.text
    assert not (run_dir / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_respected(job_script, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text(json.dumps({"token": "x", "hostname": "gpu-node-7", "pid": 42, "pgid": 42,
                                                  "started_at": "2026-01-01T00:00:00+00:00", "command": ["ds"]}))
    with pytest.raises(JobAlreadyRunning, match=r"on host gpu-node-7.*delete .*job\.lock"):
        run_job(job_command(job_script, tmp_path / "pids.json", "0"), run_dir=run_dir)
    assert (run_dir / LOCK_NAME).exists()


CALLER = '''
import sys
from pathlib import Path
from llmops.training.process import run_job
run_job(sys.argv[2:], run_dir=Path(sys.argv[1]), on_line=lambda line: print(line, flush=True))
'''


def test_the_job_dies_with_its_caller(job_script, tmp_path):
    """An Airflow task process killed -9 (or by the OOM killer) must not leave its job behind."""
    caller_py = tmp_path / "caller.py"
    caller_py.write_text(CALLER)
    pids_file = tmp_path / "pids.json"
    caller = subprocess.Popen(
        [sys.executable, str(caller_py), str(tmp_path / "run"), *job_command(job_script, pids_file, "sleep")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert caller.stdout is not None
    for line in caller.stdout:
        if line.strip() == "ready":
            break
    pids = json.loads(pids_file.read_text())
    caller.kill()
    caller.wait()
    assert wait_until(lambda: all(gone(pid) for pid in pids), timeout=10), [p for p in pids if not gone(p)]
    JobLock(tmp_path / "run").acquire()  # the lock went stale with the job


@pytest.mark.parametrize("armed", [True, False])
def test_parent_death_signal_kills_the_child_with_its_parent(tmp_path, armed):
    child_code = (
        "import os, sys, time\n"
        "from llmops.training.process import set_parent_death_signal\n"
        f"armed = set_parent_death_signal() if {armed} else True\n"
        "print(os.getpid() if armed else 'not supported', flush=True)\n"
        "time.sleep(600)\n")
    parent_code = (f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {child_code!r}])\n"
                   "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert parent.stdout is not None
    child = int(parent.stdout.readline())  # printed once the signal is armed
    parent.kill()
    parent.wait()
    try:
        if armed:
            assert wait_until(lambda: gone(child), timeout=5)
        else:  # the control: without it the child lives on as an orphan
            time.sleep(1.0)
            assert not gone(child)
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)


def test_parent_death_signal_fires_at_once_if_the_parent_is_already_gone():
    code = ("import signal\nfrom llmops.training.process import set_parent_death_signal\n"
            "set_parent_death_signal(signal.SIGTERM, expected_parent=1)\nprint('still here')\n")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=30)
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert "still here" not in proc.stdout


def test_exit_codes_are_described_in_words():
    assert describe_exit_code(0) == "exited successfully (exit code 0)"
    assert describe_exit_code(-9) == "was killed by SIGKILL (exit code -9)"
    assert "128 + 15" in describe_exit_code(143) and "SIGTERM" in describe_exit_code(143)
    assert "SIGKILL" in describe_exit_code(247) and "DeepSpeed" in describe_exit_code(247)
    assert describe_exit_code(3) == "exited with code 3"


def test_a_missing_launcher_fails_before_locking(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-launcher"):
        run_job(["no-such-launcher", "--x"], run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / LOCK_NAME).exists()


# --------------------------------------------------------------------------- real DeepSpeed

RANK_MODULE = '''
import os, sys, time
from llmops.training.process import set_parent_death_signal

set_parent_death_signal()  # as llmops.training.worker does: die with deepspeed.launcher.launch
rank = os.environ["RANK"]
sys.stdout.write(f"rank {rank} ready {os.getpid()}\\n")  # one write: the ranks share one pipe
sys.stdout.flush()
if os.environ.get("FAIL_RANK") == rank:
    sys.exit(3)
time.sleep(600)
'''


@pytest.fixture
def deepspeed_job(tmp_path: Path) -> tuple[list[str], dict[str, str], str]:
    module = f"llmops_test_rank_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{module}.py").write_text(RANK_MODULE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    return [DEEPSPEED, "--num_gpus", "2", "--module", module], env, module


def processes_running(module: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if module in " ".join(proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


def wait_for_ranks(job: ProcessGroupJob, ranks: int = 2) -> dict[int, int]:
    ready: dict[int, int] = {}
    for line in job.lines():
        if match := re.search(r"rank (\d+) ready (\d+)", line):
            ready[int(match[1])] = int(match[2])
            if len(ready) == ranks:
                return ready
    raise AssertionError(f"the job ended before all ranks were up: {ready}")


def test_deepspeed_ranks_share_the_launchers_process_group_and_kill_stops_them_all(deepspeed_job, tmp_path):
    command, env, module = deepspeed_job
    job = ProcessGroupJob(tmp_path / "run")
    job.start(command, env=env, cwd=tmp_path, log_path=tmp_path / "train.log")
    try:
        ranks = wait_for_ranks(job)
        # deepspeed -> deepspeed.launcher.launch -> ranks: no new session anywhere, so the
        # whole tree is in our group (the leader's descendants would catch them otherwise).
        assert {os.getpgid(pid) for pid in ranks.values()} == {job.pgid}
        tree = {pid: " ".join(psutil.Process(pid).cmdline()) for pid in job.alive_pids()}
        assert any("deepspeed.launcher.launch" in cmd for cmd in tree.values()), tree
        assert len(tree) == 5  # leader, runner, launch, 2 ranks
    finally:
        code = job.kill()
    assert code == -signal.SIGTERM
    assert processes_running(module) == []
    assert job.alive_pids() == []


def test_deepspeed_ranks_die_with_the_launch_process(deepspeed_job, tmp_path):
    """SIGKILL of ``deepspeed.launcher.launch`` alone: the ranks' parent death signal fires."""
    command, env, module = deepspeed_job
    job = ProcessGroupJob(tmp_path / "run")
    job.start(command, env=env, cwd=tmp_path)
    try:
        ranks = wait_for_ranks(job)
        launch = next(pid for pid in job.alive_pids()
                      if "deepspeed.launcher.launch" in " ".join(psutil.Process(pid).cmdline()))
        os.kill(launch, signal.SIGKILL)
        assert wait_until(lambda: all(gone(pid) for pid in ranks.values()), timeout=5)
        job.wait(timeout=30)
    finally:
        job.kill()
    assert processes_running(module) == []


def test_deepspeed_a_failing_rank_fails_the_job_with_its_exit_code(deepspeed_job, tmp_path):
    command, env, module = deepspeed_job
    lines: list[str] = []
    code = run_job(command, env={**env, "FAIL_RANK": "1"}, cwd=tmp_path, run_dir=tmp_path / "run",
                   log_path=tmp_path / "train.log", on_line=lines.append)
    assert code == 3, "\n".join(lines[-20:])
    assert processes_running(module) == []
