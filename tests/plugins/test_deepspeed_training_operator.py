"""The real operator under a real Airflow run: a DeepSpeed job that overruns its
``execution_timeout`` is killed whole (launcher and every rank), and the task fails."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.dags.conftest import airflow_env
from tests.training.fixtures import TRAIN_OVERRIDES, paths

AIRFLOW = str(Path(sys.executable).parent / "airflow")
pytestmark = pytest.mark.slow

DAG_TEMPLATE = '''
import datetime as dt
from airflow.sdk import dag
from llmops_airflow.operators.deepspeed_training import DeepSpeedTrainingOperator

@dag(dag_id="timeout_probe", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False)
def timeout_probe():
    DeepSpeedTrainingOperator(task_id="pretrain", kind="pretrain", job_args={{"tokens": {tokens!r}}},
                              execution_timeout=dt.timedelta(seconds={timeout}), retries=0, kill_grace_s=5)

timeout_probe()
'''


def _job_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def test_execution_timeout_kills_the_launcher_and_every_rank(data_home, tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "timeout_probe.py").write_text(DAG_TEMPLATE.format(tokens=str(paths(data_home)["tokens"]),
                                                               timeout=40))
    home = tmp_path / "home"
    env = airflow_env(home) | {"AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    for section, values in TRAIN_OVERRIDES.items():
        for key, value in values.items():
            env[f"LLMOPS_{section.upper()}__{key.upper()}"] = json.dumps(value)
    env["LLMOPS_PRETRAIN__STEPS"] = "100000"  # never finishes: the timeout must stop it
    env["LLMOPS_MLFLOW__SYSTEM_METRICS"] = "false"
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True)
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    started = time.time()
    proc = subprocess.run([AIRFLOW, "dags", "test", "timeout_probe"], env=env, capture_output=True, text=True,
                          timeout=400)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert "AirflowTaskTimeout" in log or "Timeout" in log, log[-3000:]
    assert "[llmops] step" in log  # the ranks were really training when the timeout hit
    assert time.time() - started < 300

    run_dirs = list((home / "runs" / "pretrain").iterdir())
    assert len(run_dirs) == 1
    job_file = str(run_dirs[0] / "job.json")
    deadline = time.time() + 10
    while _job_processes(job_file) and time.time() < deadline:
        time.sleep(0.5)
    assert _job_processes(job_file) == []  # no launcher, no rank survives
    assert not (run_dirs[0] / "job.lock").exists()
    assert not (run_dirs[0] / "result.json").exists()
