"""llmops_evaluate through Airflow (``dag.test()`` on SQLite, a throwaway home) on a model whose
content is registered already: every task ends skipped, the run succeeds, and nothing is
announced on ``llmops://challenger`` (so no llmops_deploy run would start)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.conftest import DAGS, airflow_env

pytestmark = pytest.mark.timeout(300)

DRIVER = '''
import json, runpy, sys
from airflow.utils.db import initdb

initdb()
dag = runpy.run_path(sys.argv[1])["llmops_evaluate"]()  # the @dag function builds the DAG
run = dag.test(run_conf=json.loads(sys.argv[2]))
print("RESULT " + json.dumps({"state": str(run.state),
                              "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()}}), flush=True)
'''


def test_a_registered_model_is_skipped_and_announces_nothing(tmp_path, monkeypatch):
    from llmops.config import load_config
    from llmops.registry import model_registry as reg, tracking

    home = tmp_path / "home"
    monkeypatch.chdir(tmp_path)  # MLflow must not write ./mlruns into the checkout
    cfg = load_config(environ={}, overrides={"home": str(home)})
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (model / "model.safetensors").write_bytes(b"weights" * 8)
    run_id = tracking.job_run(cfg, "evaluate-first", "evaluate-first", parent_run_id=None)
    assert reg.register_model(cfg, model, run_id, tags={"gate_result": "passed"}) == "1"
    replayed = tmp_path / "replayed"  # the same model from another training run
    shutil.copytree(model, replayed)
    (replayed / "llmops_model.json").write_text(json.dumps({"run_dir": "/runs/second"}))

    env = airflow_env(home)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True)
    (tmp_path / "driver.py").write_text(DRIVER)
    proc = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(DAGS / "llmops_evaluate.py"),
                           json.dumps({"model_path": str(replayed)})], env=env, capture_output=True, text=True,
                          timeout=280, cwd=tmp_path, check=False)
    text = proc.stdout + proc.stderr
    result = next((line for line in text.splitlines() if line.startswith("RESULT ")), None)
    assert result, text[-5000:]
    result = json.loads(result.removeprefix("RESULT "))
    assert result == {"state": "success", "tasks": {"evaluate": "skipped", "gate": "skipped",
                                                    "register": "skipped"}}, text[-3000:]
    assert f"{replayed}: already registered as models:/llmops/1" in text
    db = sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db")
    assert db.execute("select count(*) from asset_event").fetchone() == (0,)
    client = tracking.connect(tracking.tracking_uri(cfg))
    assert len(client.search_model_versions("name = 'llmops'")) == 1
    assert [r.info.run_name for r in client.search_runs([tracking.ensure_experiment(cfg, client)])] == [
        "evaluate-first"]  # no DAG-run or evaluation run recorded
