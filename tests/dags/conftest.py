"""DAG tests run against a throwaway AIRFLOW_HOME so they never touch the user's stack."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"


def airflow_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home / "airflow"),
        LLMOPS_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONPATH=os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
    )
    return env


@pytest.fixture(scope="session")
def dagbag(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagbag_home")
    for key, value in airflow_env(home).items():
        os.environ.setdefault(key, value) if key == "PYTHONPATH" else os.environ.__setitem__(key, value)
    sys.path.insert(0, str(REPO / "plugins"))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))
