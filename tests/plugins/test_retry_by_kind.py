"""``RetryByKind`` under a real Airflow 3 task runner (``dag.test()`` on SQLite, in a throwaway
AIRFLOW_HOME): a transient error is retried, a permanent one fails the task at once, an
error of unknown kind gets Airflow's default, and the operators apply the policy by themselves.

One DAG run, four tasks, each with three retries one second apart:

* ``transient``: raises ``TransientError`` on its first try (Triton still starting) → success on try 2.
* ``permanent``: raises ``ConfigError`` → failed on try 1, the retries unused.
* ``unknown``: raises ``OSError`` on its first try → retried like before: success on try 2.
* ``operator_permanent``: a ``ProcessGroupOperator`` whose ``build_job`` raises ``PermanentError``,
  in a DAG whose ``default_args`` name no policy → failed on try 1.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.conftest import airflow_env

pytestmark = pytest.mark.timeout(300)

DAG_FILE = '''
import datetime as dt

from airflow.sdk import DAG, task
from llmops_airflow.errors import RETRY_BY_KIND
from llmops_airflow.operators import ProcessGroupOperator

from llmops.config import ConfigError
from llmops.errors import PermanentError, TransientError

# No retry_policy here: the @task tasks name it, the operator brings its own.
FAST = {"retries": 3, "retry_delay": dt.timedelta(0), "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(seconds=1)}


class BadInput(ProcessGroupOperator):
    def build_job(self, context):
        raise PermanentError("the data card names no token shards")


with DAG("retry_by_kind_probe", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
         catchup=False, default_args=FAST) as dag:

    @task(retry_policy=RETRY_BY_KIND)
    def transient(*, ti=None):
        if ti.try_number == 1:
            raise TransientError("Triton is not ready yet")
        return ti.try_number

    @task(retry_policy=RETRY_BY_KIND)
    def permanent():
        raise ConfigError("scrape.max_pages: Input should be greater than or equal to 1")

    @task(retry_policy=RETRY_BY_KIND)
    def unknown(*, ti=None):
        if ti.try_number == 1:
            raise OSError("a disk hiccup")
        return ti.try_number

    transient()
    permanent()
    unknown()
    BadInput(task_id="operator_permanent")
'''

DRIVER = '''
import json, runpy, sys
from airflow.utils.db import initdb

initdb()
dag = runpy.run_path(sys.argv[1])["dag"]
run = dag.test()
print("RESULT " + json.dumps({ti.task_id: [str(ti.state), ti.try_number] for ti in run.get_task_instances()}),
      flush=True)
'''


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("retry_by_kind")
    dags = root / "dags"
    dags.mkdir()
    (dags / "retry_by_kind_probe.py").write_text(DAG_FILE)
    (root / "driver.py").write_text(DRIVER)
    env = airflow_env(root / "home") | {"AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True)
    proc = subprocess.run([sys.executable, str(root / "driver.py"), str(dags / "retry_by_kind_probe.py")], env=env,
                          capture_output=True, text=True, timeout=280, check=False)
    text = proc.stdout + proc.stderr
    result = next((line for line in text.splitlines() if line.startswith("RESULT ")), None)
    assert result, text[-5000:]
    db = sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db")
    history = {}
    for task_id, try_number, state in db.execute("select task_id, try_number, state from task_instance_history"):
        history.setdefault(task_id, []).append((try_number, state))
    return {"final": {k: tuple(v) for k, v in json.loads(result.removeprefix("RESULT ")).items()},
            "history": history, "log": text}


def test_a_transient_error_is_retried(probe):
    assert probe["final"]["transient"] == ("success", 2)
    assert probe["history"]["transient"] == [(1, "failed")]  # the first try, recorded when it was retried


def test_a_permanent_error_fails_at_once_with_its_message(probe):
    assert probe["final"]["permanent"] == ("failed", 1)
    assert "permanent" not in probe["history"]  # no earlier try
    assert "scrape.max_pages: Input should be greater than or equal to 1" in probe["log"]
    assert "ConfigError is permanent" in probe["log"]


def test_an_error_of_unknown_kind_keeps_airflows_retries(probe):
    assert probe["final"]["unknown"] == ("success", 2)


def test_the_operators_apply_the_policy_in_any_dag(probe):
    assert probe["final"]["operator_permanent"] == ("failed", 1)
