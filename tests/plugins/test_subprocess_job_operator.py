"""ProcessGroupOperator under a real Airflow 3 task runner (``dag.test()`` on SQLite, in a
throwaway AIRFLOW_HOME): each way a task can end leaves no process of its job behind.

One DAG run, five tasks, each running the stand-in launcher of the process tests (two
"ranks" plus one process that escapes into its own session):

* ``times_out``: ``execution_timeout=5s``; the task SDK raises AirflowTaskTimeout from
  its SIGALRM handler inside ``execute`` and the whole job is killed.
* ``exits_3``: the job fails; the task fails with the exit code and the last lines.
* ``exits_0``: on_success's value (which reads the templated ``extra_env``) is the XCom.
* ``busy``: a live job already owns the run directory; the task refuses to start another.
* ``terminated``: the task process gets SIGTERM (what the supervisor sends when a task is
  marked failed or its heartbeat is lost): ``on_kill`` stops the job.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llmops.training.process import LOCK_NAME, ProcessGroupJob
from tests.dags.conftest import airflow_env
from tests.training.test_process import JOB_SCRIPT, gone, read_until, wait_until

pytestmark = pytest.mark.timeout(300)

DAG_FILE = '''
import datetime as dt
import os
import sys
from pathlib import Path

from airflow.sdk import DAG
from llmops_airflow.operators import ProcessGroupOperator

from llmops.training.process import JobSpec

WORK = Path(os.environ["TEST_WORK"])


class StandInJob(ProcessGroupOperator):
    """Runs the stand-in launcher; ``mode`` is "sleep" or an exit code."""

    def __init__(self, *, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def build_job(self, context):
        run_dir = WORK / self.task_id
        command = [sys.executable, str(WORK / "launcher.py"), str(run_dir / "pids.json"), self.mode]
        return JobSpec(command=command, env=dict(os.environ), cwd=WORK, run_dir=run_dir,
                       log_path=run_dir / "job.log")

    def on_success(self, context, spec):
        echoed = [line for line in spec.log_path.read_text().splitlines() if line.startswith("echo ")]
        return {"echo": echoed[-1], "run_id": context["run_id"]}


with DAG("process_group_probe", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
         catchup=False, default_args={"retries": 0}) as dag:
    StandInJob(task_id="times_out", mode="sleep", execution_timeout=dt.timedelta(seconds=5))
    StandInJob(task_id="exits_3", mode="3")
    StandInJob(task_id="exits_0", mode="0", extra_env={"JOB_ECHO": "{{ run_id }}"})
    StandInJob(task_id="busy", mode="0")
    StandInJob(task_id="terminated", mode="sleep", execution_timeout=dt.timedelta(seconds=120))
'''

DRIVER = '''
import json, runpy, sys
from airflow.utils.db import initdb

initdb()
dag = runpy.run_path(sys.argv[1])["dag"]
run = dag.test()
print("RESULT " + json.dumps({ti.task_id: str(ti.state) for ti in run.get_task_instances()}), flush=True)
'''


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("operator")
    work, dags = root / "work", root / "dags"
    work.mkdir()
    dags.mkdir()
    (work / "launcher.py").write_text(JOB_SCRIPT)
    (dags / "process_group_probe.py").write_text(DAG_FILE)
    (root / "driver.py").write_text(DRIVER)
    env = airflow_env(root / "home") | {"AIRFLOW__CORE__DAGS_FOLDER": str(dags), "TEST_WORK": str(work)}
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True)

    # Another job already owns the "busy" task's run directory.
    holder = ProcessGroupJob(work / "busy")
    holder.start([sys.executable, str(work / "launcher.py"), str(root / "holder.json"), "sleep"])
    read_until(holder, "ready")
    output = root / "driver.log"
    try:
        with open(output, "w") as out:
            driver = subprocess.Popen([sys.executable, str(root / "driver.py"), str(dags / "process_group_probe.py")],
                                      env=env, stdout=out, stderr=subprocess.STDOUT)
            terminated_log = work / "terminated" / "job.log"
            assert wait_until(lambda: terminated_log.exists() and "ready" in terminated_log.read_text()
                              or driver.poll() is not None, timeout=200)
            assert driver.poll() is None, output.read_text()[-3000:]
            driver.send_signal(signal.SIGTERM)  # lands while the "terminated" task runs its job
            driver.wait(timeout=200)
    finally:
        holder.kill()
    text = output.read_text()
    result = next((line for line in text.splitlines() if line.startswith("RESULT ")), None)
    assert result, text[-5000:]
    db = sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db")
    xcoms = {task: json.loads(value) for task, value in db.execute("select task_id, value from xcom")}
    durations = dict(db.execute("select task_id, duration from task_instance"))
    return {"states": json.loads(result.removeprefix("RESULT ")), "log": text, "xcoms": xcoms,
            "durations": durations, "work": work, "holder_pid": holder.pid}


def job_pids(work: Path, task: str) -> list[int]:
    return json.loads((work / task / "pids.json").read_text())


def test_execution_timeout_kills_the_whole_job(dag_run):
    assert dag_run["states"]["times_out"] == "failed"
    assert "Stopping job (process group" in dag_run["log"] and "because of AirflowTaskTimeout" in dag_run["log"]
    # 5 s timeout plus the kill; the stand-in job would run for 600 s (loose bound: shared, noisy machines)
    assert dag_run["durations"]["times_out"] < 60
    assert all(gone(pid) for pid in job_pids(dag_run["work"], "times_out"))
    assert not (dag_run["work"] / "times_out" / LOCK_NAME).exists()


def test_a_failing_job_fails_the_task_with_its_exit_code_and_last_lines(dag_run):
    assert dag_run["states"]["exits_3"] == "failed"
    log = dag_run["log"]
    assert "AirflowException: job exited with code 3:" in log
    assert "last 6 lines of output" in log and "\nready\n" in log
    assert all(gone(pid) for pid in job_pids(dag_run["work"], "exits_3"))


def test_a_successful_job_returns_on_success_as_the_xcom(dag_run):
    assert dag_run["states"]["exits_0"] == "success"
    xcom = dag_run["xcoms"]["exits_0"]
    assert xcom["echo"] == f"echo {xcom['run_id']}"  # extra_env is templated and reaches the job
    assert "line 1" in dag_run["log"]  # the job's output is in the task log
    assert all(gone(pid) for pid in job_pids(dag_run["work"], "exits_0"))


def test_a_run_dir_owned_by_a_live_job_is_refused(dag_run):
    assert dag_run["states"]["busy"] == "failed"
    assert "a job is already running in" in dag_run["log"]
    assert f"process group {dag_run['holder_pid']}" in dag_run["log"]
    assert not (dag_run["work"] / "busy" / "pids.json").exists()  # the second job never started


def test_sigterm_to_the_task_process_kills_the_job_through_on_kill(dag_run):
    assert dag_run["states"]["terminated"] == "failed"
    assert "Killing the job (process group" in dag_run["log"]
    assert "job was killed by SIGTERM (exit code -15)" in dag_run["log"]
    assert all(gone(pid) for pid in job_pids(dag_run["work"], "terminated"))
    assert not (dag_run["work"] / "terminated" / LOCK_NAME).exists()


def test_no_job_process_survives_the_run(dag_run):
    pids = [pid for task in ("times_out", "exits_3", "exits_0", "terminated")
            for pid in job_pids(dag_run["work"], task)]
    assert len(pids) == 16
    assert [pid for pid in pids if not gone(pid)] == []
    assert not [p for p in os.listdir(dag_run["work"] / "busy") if p == LOCK_NAME]
