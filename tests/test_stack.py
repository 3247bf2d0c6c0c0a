"""The embedded stack (``llmops stack start|stop|status``) and the Airflow REST client.

Every stack here has its own ``LLMOPS_HOME`` under pytest's temporary directory and free
ports for everything (``stack_env``); the real one runs Airflow's four components,
Triton, the MLflow UI and the demo site, once: start, status, start again, stop with a
task running.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from llmops.airflow_client import AirflowApiError, AirflowClient, AirflowUnavailable
from llmops.cli import main
from llmops.config import load_config
from llmops.stack import PortInUse, Stack, free_ports, isolated_env

SLEEP_DAG = '''\
import datetime as dt

from airflow.sdk import dag, task


@dag(schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False)
def stack_test_sleep():
    @task(retries=0)
    def short():
        import time
        time.sleep(8)

    @task(retries=0)  # no retry left: an interrupted task must still run again
    def long():
        import subprocess
        # Like DeepSpeed's job leader: a process in a session of its own, outside the task's group.
        subprocess.Popen(["sleep", "601"], start_new_session=True)
        subprocess.run(["sleep", "600"], check=True)

    short()
    long()


stack_test_sleep()
'''


def stack_env(home: Path, **extra: str) -> dict[str, str]:
    """``LLMOPS_*`` settings for a stack at ``home`` with free ports, the demo site as the seed."""
    return isolated_env(home) | {"LLMOPS_AIRFLOW__PARALLELISM": "2"} | extra


def make_stack(home: Path, **extra: str) -> Stack:
    env = stack_env(home, **extra)
    return Stack(load_config(environ={**os.environ, **env}), env=env)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- without a running stack ---------------------------------------------------------------


def test_a_port_in_use_is_refused_naming_port_holder_and_key_before_anything_starts(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "home")
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", stack.cfg.airflow.api_port))
        busy.listen()
        with pytest.raises(PortInUse) as err:
            stack.start(progress=lambda line: None)
    message = str(err.value)
    assert f"port {stack.cfg.airflow.api_port} (airflow.api_port)" in message
    assert "LLMOPS_AIRFLOW__API_PORT" in message
    assert f"pid {os.getpid()}" in message  # the holder, as psutil sees it
    assert "nothing was started" in message
    assert not list((tmp_path / "home" / "stack").glob("*.pid"))
    assert not stack.triton.is_running()
    assert {p.pid for p in psutil.Process().children(recursive=True)} == children_before


def test_two_components_on_one_port_are_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = stack_env(home)
    env["LLMOPS_MLFLOW__UI_PORT"] = env["LLMOPS_AIRFLOW__API_PORT"]
    stack = Stack(load_config(environ={**os.environ, **env}), env=env)
    with pytest.raises(PortInUse, match=r"same port: \d+ \(airflow.api_port and mlflow.ui_port\)"):
        stack.start(progress=lambda line: None)


def test_a_stale_pid_file_is_not_taken_for_a_running_component(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "home")
    stack.stack_dir.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    me = psutil.Process()
    # The scheduler's pid no longer exists; the triggerer's pid was reused by another process
    # (this one: alive, but created at another time than recorded).
    (stack.stack_dir / "scheduler.pid").write_text(json.dumps({"pid": gone.pid, "started": time.time() - 60}))
    (stack.stack_dir / "triggerer.pid").write_text(json.dumps({"pid": me.pid, "started": me.create_time() - 3600}))
    notes: list[str] = []
    assert stack._live("scheduler", notes.append) is None
    assert stack._live("triggerer", notes.append) is None
    assert f"stale pid file (pid {gone.pid} exited)" in notes[0]
    assert "was reused by another process" in notes[1]
    assert not (stack.stack_dir / "scheduler.pid").exists() and not (stack.stack_dir / "triggerer.pid").exists()
    st = stack.status()
    assert not st.running and not any(c.running for c in st.components)


def test_leftovers_of_a_crashed_component_are_found_and_a_strangers_session_never(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "home")
    stack.stack_dir.mkdir(parents=True)
    # A "component" (a session leader) that crashed and left a child in its session.
    leader = subprocess.Popen(["setsid", "sh", "-c", "sleep 300 & exit 0"])
    leader.wait()
    sid = leader.pid
    orphan = _wait("the orphan", lambda: next((p for p in psutil.process_iter(["cmdline"])
                                                if p.info["cmdline"] == ["sleep", "300"] and os.getsid(p.pid) == sid),
                                               None), timeout=10, every=0.1)
    record = stack.stack_dir / "scheduler.pid"
    try:
        record.write_text(json.dumps({"pid": sid, "started": time.time() - 5}))
        assert [p.pid for p in stack._orphans("scheduler")] == [orphan.pid]
        # Recorded before the machine booted: that session id may be anyone's now.
        record.write_text(json.dumps({"pid": sid, "started": psutil.boot_time() - 60}))
        assert stack._orphans("scheduler") == []
        # The recorded pid is alive (a stranger was given it): no session of that id is ours.
        record.write_text(json.dumps({"pid": os.getpid(), "started": time.time() - 5}))
        assert stack._orphans("scheduler") == []
    finally:
        orphan.kill()


def test_shared_airflow_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "home")
    first = stack.airflow_environment()
    assert _mode(stack.secrets_file) == 0o600
    stack.secrets_file.chmod(0o644)
    again = make_stack(tmp_path / "home").airflow_environment()
    assert _mode(stack.secrets_file) == 0o600  # a loosened file is restricted again
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        assert first[key] == again[key] and len(first[key]) >= 32
    assert first["AIRFLOW_HOME"] == str(tmp_path / "home" / "airflow")
    assert first["AIRFLOW__CORE__PARALLELISM"] == "2"
    assert first["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"{stack.api_url}/execution/"


def test_three_users_get_private_generated_passwords_and_an_older_home_keeps_admins(tmp_path: Path) -> None:
    stack = make_stack(tmp_path / "home")
    env = stack.airflow_environment()
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,op:op,viewer:viewer"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(stack.password_file)
    stack._ensure_password()
    assert _mode(stack.password_file) == 0o600
    first = json.loads(stack.password_file.read_text())
    assert set(first) == {"admin", "op", "viewer"}
    assert len(set(first.values())) == 3 and all(len(pw) >= 16 for pw in first.values())
    make_stack(tmp_path / "home")._ensure_password()
    assert json.loads(stack.password_file.read_text()) == first  # generated once

    # A home from before op and viewer: admin keeps its password, the file is restricted again.
    older = make_stack(tmp_path / "older")
    older.password_file.parent.mkdir(parents=True)
    older.password_file.write_text(json.dumps({"admin": "admins-old-password"}) + "\n")
    older.password_file.chmod(0o644)
    older._ensure_password()
    grown = json.loads(older.password_file.read_text())
    assert grown["admin"] == "admins-old-password" and set(grown) == {"admin", "op", "viewer"}
    assert _mode(older.password_file) == 0o600

    for user in ("admin", "op", "viewer"):
        client = older.client(user=user)
        assert client.username == user and grown[user] not in repr(client)
    with pytest.raises(AirflowApiError, match="no password for user 'nobody'"):
        older.client(user="nobody")


def test_airflow_reads_the_three_users_prints_no_password_and_refuses_the_viewer_a_dag_run(tmp_path: Path) -> None:
    """Airflow's own SimpleAuthManager, configured as the stack configures the API server: it
    finds every password in the file (so it generates and prints none), and its roles let admin
    and op trigger a DAG run while viewer only reads."""
    stack = make_stack(tmp_path / "home")
    env = stack.airflow_environment()
    stack._ensure_password()
    before = stack.password_file.read_bytes()
    probe = (
        "import json\n"
        "from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails\n"
        "from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager\n"
        "manager = SimpleAuthManager()\n"
        "manager.init()\n"
        "dag = DagDetails(id='llmops_rollback')\n"
        "print(json.dumps({u.username: [u.role, sorted(manager.get_passwords()),\n"
        "    manager.is_authorized_dag(method='POST', access_entity=DagAccessEntity.RUN, details=dag, user=u),\n"
        "    manager.is_authorized_dag(method='GET', access_entity=DagAccessEntity.RUN, details=dag, user=u)]\n"
        "    for u in manager.get_users()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=180,
                         check=True)
    users = json.loads(out.stdout.strip().splitlines()[-1])
    every = ["admin", "op", "viewer"]
    assert users == {"admin": ["admin", every, True, True], "op": ["op", every, True, True],
                     "viewer": ["viewer", every, False, True]}
    assert stack.password_file.read_bytes() == before  # Airflow generated nothing
    for password in json.loads(before).values():
        assert password not in out.stdout + out.stderr
    assert "Password for user" not in out.stdout + out.stderr


def test_stack_status_cli_on_a_stopped_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in stack_env(tmp_path / "home").items():
        monkeypatch.setenv(key, value)
    assert main(["stack", "status", "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert doc["running"] is False and doc["user"] == "admin" and doc["users"] == ["admin", "op", "viewer"]
    assert {c["name"] for c in doc["components"]} == {"api-server", "scheduler", "dag-processor", "triggerer",
                                                      "mlflow", "demo-site", "triton"}
    assert main(["stack", "status"]) == 3
    password_file = tmp_path / "home" / "airflow" / "simple_auth_manager_passwords.json.generated"
    assert f"(users admin, op, viewer; passwords in {password_file})" in capsys.readouterr().out
    assert main(["stack", "stop"]) == 0
    assert "the stack is not running" in capsys.readouterr().out


# ---- one real start/stop cycle -------------------------------------------------------------


def _dags_folder(tmp_path: Path) -> Path:
    """The project's DAGs (symlinked) plus a DAG whose tasks sleep."""
    folder = tmp_path / "dags"
    folder.mkdir()
    for dag_file in (Path(__file__).resolve().parent.parent / "dags").glob("*.py"):
        (folder / dag_file.name).symlink_to(dag_file)
    (folder / "stack_test_sleep.py").write_text(SLEEP_DAG)
    return folder


def _wait(what: str, check: Callable[[], Any], timeout: float = 120.0, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if result := check():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:  # gone meanwhile
        return ""


def _ti_states(home: Path, dag_id: str) -> dict[str, str]:
    """Task states read from the stopped stack's SQLite database (no API is up any more)."""
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        rows = db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (dag_id,)).fetchall()
    return dict(rows)


@pytest.mark.slow
def test_stack_starts_healthy_once_and_stop_interrupts_running_tasks_leaving_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    stack = make_stack(home, AIRFLOW__CORE__DAGS_FOLDER=str(_dags_folder(tmp_path)))
    # A scheduler that crashed long ago left its pid file behind.
    stack.stack_dir.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    (stack.stack_dir / "scheduler.pid").write_text(json.dumps({"pid": gone.pid, "started": time.time() - 600}))
    lines: list[str] = []
    try:
        t0 = time.monotonic()
        st = stack.start(progress=lines.append)
        started_in = time.monotonic() - t0
        assert any("scheduler: stale pid file" in line for line in lines)
        assert st.healthy, st.to_json()
        assert {c.name for c in st.components if c.healthy} == {"api-server", "scheduler", "dag-processor",
                                                                 "triggerer", "triton", "mlflow", "demo-site"}
        assert stack.triton.ready()
        assert st.user == "admin"
        assert Path(st.password_file) == home / "airflow" / "simple_auth_manager_passwords.json.generated"
        assert _mode(stack.password_file) == 0o600 and _mode(stack.secrets_file) == 0o600
        client = stack.client()
        assert client.health().healthy
        with pytest.raises(AirflowApiError, match="wrong password for 'admin'"):
            AirflowClient(stack.api_url, "admin", "not-the-password").dags()

        wanted = {"llmops_data", "llmops_train", "llmops_evaluate", "llmops_deploy", "stack_test_sleep"}
        t1 = time.monotonic()
        _wait("the DAGs to be parsed", lambda: wanted <= {d.dag_id for d in client.dags()})
        parsed_in = time.monotonic() - t1
        st = stack.status()
        assert st.import_errors == [] and st.paused_dags == [] and wanted <= set(st.dags)
        print(f"\nstack start: {started_in:.1f} s (DAGs parsed {parsed_in:.1f} s later); idle memory (parallelism 2): "
              f"RSS {st.rss_bytes / 2**20:.0f} MiB, PSS {(st.pss_bytes or 0) / 2**20:.0f} MiB")

        # Started again: reported, nothing new.
        pids = {c.name: c.pid for c in st.components}
        lines.clear()
        again = stack.start(progress=lines.append)
        assert {c.name: c.pid for c in again.components} == pids
        assert any("the stack is already running" in line for line in lines)

        t1 = time.monotonic()
        run_id = client.trigger("stack_test_sleep")
        _wait("the long task to run", lambda: any(
            ti.task_id == "long" and ti.state == "running" for ti in client.task_instances("stack_test_sleep", run_id)))

        def with_both_sleeps() -> list[psutil.Process] | None:
            procs = stack.processes()  # the task's children are part of the stack, both of them
            return procs if sum(_name(p) == "sleep" for p in procs) == 2 else None

        processes = _wait("the task's children", with_both_sleeps)
        t2 = time.monotonic()
        lines.clear()
        interrupted = stack.stop(timeout=12, progress=lines.append)
        print(f"trigger to running: {t2 - t1:.1f} s; stop (12 s for tasks to finish): {time.monotonic() - t2:.1f} s")
    except BaseException:
        print("\n".join(lines))
        stack.stop(timeout=0, progress=print)
        raise

    # It waited for both, then interrupted the one still running.
    assert f"2 running task(s): stack_test_sleep / {run_id} / " in lines[0], lines
    assert interrupted == [f"stack_test_sleep / {run_id} / long (try 1)"]
    assert not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not stack.processes() and not list(stack.stack_dir.glob("*.pid")) and not stack.triton.is_running()
    # The short task finished in the grace period; the long one is left to run again at the next start.
    assert _ti_states(home, "stack_test_sleep") == {"short": "success", "long": "restarting"}


def test_client_says_when_the_api_is_not_reachable_and_that_it_is_transient() -> None:
    client = AirflowClient(f"http://127.0.0.1:{free_ports(1)[0]}", "admin", "x", timeout=2)
    with pytest.raises(AirflowUnavailable, match="is not reachable") as err:
        client.dags()
    assert err.value.transient
