"""The ``llmops`` plugin in a real Airflow 3.3: ``airflow plugins`` lists it in a bare home, loading
it (as every task process does) imports nothing heavy, and inside Airflow's own API app (SQLite,
SimpleAuthManager, the real ``llmops_retrain`` / ``llmops_rollback`` DAGs) every route wants a
user, a viewer reads but may not act, an operator's actions create real DAG runs recorded under
their name, and a cookie-authenticated action from another origin is refused.

Each scenario runs in its own interpreter with its own AIRFLOW_HOME (Airflow's configuration is
read once per process) and prints one JSON line the tests read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmops.stack import free_ports
from tests.dags.conftest import REPO, airflow_env

pytestmark = pytest.mark.timeout(300)


def _run(code: str, env: dict[str, str], cwd: Path, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; its ``RESULT {json}`` line."""
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=280, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, (proc.stdout + proc.stderr)[-8000:]
    return json.loads(line.removeprefix("RESULT "))


def _env(home: Path) -> dict[str, str]:
    env = airflow_env(home)
    http, grpc, metrics = free_ports(3)  # nothing answers there: the view says Triton is down
    env.update(LLMOPS_SERVING__HTTP_PORT=str(http), LLMOPS_SERVING__GRPC_PORT=str(grpc),
               LLMOPS_SERVING__METRICS_PORT=str(metrics))
    env.pop("MLFLOW_TRACKING_URI", None)  # the embedded store under the test's LLMOPS_HOME
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return env


# ---- the plugin as Airflow loads it -------------------------------------------------------------


def test_airflow_plugins_lists_llmops_once_in_a_bare_home(tmp_path: Path) -> None:
    env = _env(tmp_path / "home")
    proc = subprocess.run([str(Path(sys.executable).parent / "airflow"), "plugins", "--output", "json"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plugins = json.loads(proc.stdout[proc.stdout.index("["):])
    ours = [p for p in plugins if p["name"] == "llmops"]
    assert len(ours) == 1, plugins  # one module defines the plugin: registered once
    (plugin,) = ours
    assert plugin["source"] == "$PLUGINS_FOLDER/llmops_airflow/ui/plugin.py"
    (app,) = plugin["fastapi_apps"]
    assert (app["url_prefix"], app["app"]) == ("/llmops", "fastapi.applications.FastAPI")
    (view,) = plugin["external_views"]
    assert (view["href"], view["url_route"], view["destination"]) == ("/llmops/", "llmops", "nav")
    assert "already registered" not in proc.stderr and "Failed to import plugin" not in proc.stderr


LOAD_AS_A_TASK = '''
import json, sys
from airflow.sdk.plugins_manager import integrate_macros_plugins
integrate_macros_plugins()  # what a task's template context does: every file under plugins/ is imported
from airflow import plugins_manager
plugins, errors = plugins_manager._get_plugins()
heavy = ["torch", "mlflow", "matplotlib", "pandas", "transformers", "deepspeed", "fastapi.applications",
         "llmops.ui.summary", "llmops.registry.tracking"]
print("RESULT " + json.dumps({"plugins": [p.name for p in plugins], "errors": {k: v for k, v in errors.items()},
                              "heavy": [m for m in heavy if m in sys.modules]}))
'''


def test_loading_the_plugin_imports_nothing_heavy_and_builds_no_app(tmp_path: Path) -> None:
    result = _run(LOAD_AS_A_TASK, _env(tmp_path / "home"), tmp_path)
    assert result["plugins"].count("llmops") == 1 and not result["errors"], result
    assert result["heavy"] == [], result


# ---- the routes inside Airflow's API app ----------------------------------------------------------

API_SERVER = '''
import json, shutil, sys
from pathlib import Path

from airflow.utils.db import initdb
initdb()
from airflow.dag_processing.bundles.manager import DagBundlesManager
from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
manager = DagBundlesManager()
manager.sync_bundles_to_db()
for bundle in manager.get_all_dag_bundles():
    bundle.initialize()
    bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, bundle.name, bundle.version)

from sqlalchemy import select, update
from airflow.models.dag import DagModel
from airflow.models.dagrun import DagRun
from airflow.models.log import Log
from airflow.utils.session import create_session
with create_session() as session:
    session.execute(update(DagModel).values(is_paused=False))

from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app, get_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
app = create_app()
here = "http://127.0.0.1:8080"
token = {role: get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=role, role=role))
         for role in ("viewer", "op")}
anonymous = TestClient(app, base_url=here)
bearer = {role: TestClient(app, base_url=here, headers={"Authorization": "Bearer " + t}) for role, t in token.items()}
cookie = TestClient(app, base_url=here, cookies={"_token": token["op"]})
out = {}

def answer(resp):
    try:
        body = resp.json()
    except ValueError:
        body = resp.text[:200]
    return [resp.status_code, body]

routes = [("get", "/llmops/"), ("get", "/llmops/api/summary"), ("get", "/llmops/reports/llmops_data/x/funnel.png"),
          ("post", "/llmops/api/actions/retrain"), ("post", "/llmops/api/actions/rollback")]
out["anonymous"] = {path: getattr(anonymous, method)(path).status_code for method, path in routes}
out["viewer_page"] = bearer["viewer"].get("/llmops/").status_code
out["viewer_page_has_disabled_buttons"] = bearer["viewer"].get("/llmops/").text.count("disabled title=")
out["viewer_summary"] = sorted(bearer["viewer"].get("/llmops/api/summary").json())
out["viewer_actions"] = [bearer["viewer"].post("/llmops/api/actions/" + a, json={}).status_code
                         for a in ("retrain", "rollback")]
out["op_retrain_no_champion"] = answer(bearer["op"].post("/llmops/api/actions/retrain", json={}))

# A registry with a champion: v1, then v2 (both passed the gate).
sys.path.insert(0, sys.argv[1])
from tests.ui.conftest import _register
from llmops.config import load_config
from llmops.records.evaluation import GateResult, ModelLineage
from llmops.registry import model_registry as reg
cfg = load_config()
lineage = ModelLineage(base_model="from scratch", eval_data_hash="e", champion_compared="none")
for marker in ("v1", "v2"):
    reg.promote_champion(cfg, _register(cfg, Path(sys.argv[2]), marker, GateResult(passed=True), lineage))

out["cookie_no_origin"] = answer(cookie.post("/llmops/api/actions/rollback", json={}))
out["cookie_cross_origin"] = answer(cookie.post("/llmops/api/actions/rollback", json={},
                                                headers={"Origin": "https://evil.example"}))
out["cookie_same_origin"] = answer(cookie.post("/llmops/api/actions/rollback", json={}, headers={"Origin": here}))
out["bearer_to_champion"] = answer(bearer["op"].post("/llmops/api/actions/rollback", json={"to_version": "2"}))
out["bearer_bad_version"] = bearer["op"].post("/llmops/api/actions/rollback", json={"to_version": "x"}).status_code
out["bearer_retrain"] = answer(bearer["op"].post("/llmops/api/actions/retrain",
                                                 json={"clear_failed_gate": True, "cooldown": "24h"}))
out["bearer_retrain_no_body"] = bearer["op"].post("/llmops/api/actions/retrain").status_code
with create_session() as session:
    session.execute(update(DagModel).where(DagModel.dag_id == "llmops_rollback").values(is_paused=True))
out["paused"] = answer(bearer["op"].post("/llmops/api/actions/rollback", json={"to_version": "1"}))
with create_session() as session:
    out["runs"] = [[r.dag_id, r.conf, r.triggering_user_name, str(r.run_type), str(r.triggered_by), r.note]
                   for r in session.scalars(select(DagRun).order_by(DagRun.id))]
    out["audit"] = [[e.event, e.owner, e.dag_id, bool(e.run_id)]
                    for e in session.scalars(select(Log).where(Log.event.like("llmops_view.%")).order_by(Log.id))]
report = cfg.layout.report("llmops_monitor", "20270115T080000.000000Z-v1")
report.mkdir(parents=True)
(report / "drift.html").write_text("<html><script>alert(1)</script></html>")
served = cookie.get("/llmops/reports/llmops_monitor/20270115T080000.000000Z-v1/drift.html")
out["report"] = [served.status_code, served.headers.get("content-security-policy"),
                 served.headers.get("x-content-type-options"), served.headers.get("content-type")]
out["op_page_disabled_buttons"] = cookie.get("/llmops/").text.count("disabled title=")
out["traversal"] = [bearer["viewer"].get(p).status_code for p in (
    "/llmops/reports/..%2F..%2Fmlflow.db", "/llmops/reports/llmops_data/../../mlflow.db",
    "/llmops/reports/%2e%2e/airflow/airflow.db")]
summary = bearer["viewer"].get("/llmops/api/summary").json()
out["summary_champion"] = summary["registry"]["champion"]
out["summary_deployment_note"] = summary["deployment"]["note"]
print("RESULT " + json.dumps(out, default=str))
'''


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ui_api")
    dags = root / "dags"
    dags.mkdir()
    for dag_id in ("llmops_retrain", "llmops_rollback"):  # the real DAG files the actions trigger
        shutil.copy(REPO / "dags" / f"{dag_id}.py", dags)
    env = _env(root / "home") | {
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,op:op,viewer:viewer",
        "AIRFLOW__API_AUTH__JWT_SECRET": "a-test-secret-of-at-least-32-bytes-long",
        "AIRFLOW__API__SECRET_KEY": "another-test-secret",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    return _run(API_SERVER, env, root, str(REPO), str(root))


def test_every_route_wants_a_user(api: dict) -> None:
    assert set(api["anonymous"].values()) == {401}, api["anonymous"]


def test_a_viewer_reads_the_page_and_the_summary_but_may_not_act(api: dict) -> None:
    assert api["viewer_page"] == 200 and api["viewer_page_has_disabled_buttons"] == 2
    assert api["viewer_summary"] == ["data", "deployment", "drift", "home", "registry", "schema_version", "time",
                                     "training"]
    assert api["viewer_actions"] == [403, 403]
    assert api["op_page_disabled_buttons"] == 0


def test_an_action_that_cannot_work_is_refused_with_the_reason(api: dict) -> None:
    status, body = api["op_retrain_no_champion"]
    assert status == 409 and "has no champion yet" in body["detail"]
    status, body = api["bearer_to_champion"]
    assert status == 409 and "is already the champion" in body["detail"]
    assert api["bearer_bad_version"] == 422
    status, body = api["paused"]
    assert status == 409 and "llmops_rollback is paused" in body["detail"]


def test_a_cookie_authenticated_action_must_come_from_this_origin(api: dict) -> None:
    status, body = api["cookie_no_origin"]
    assert status == 403 and "no Origin header" in body["detail"]
    status, body = api["cookie_cross_origin"]
    assert status == 403 and "cross-origin" in body["detail"] and "https://evil.example" in body["detail"]
    status, body = api["cookie_same_origin"]
    assert status == 200, body
    assert body["dag_id"] == "llmops_rollback" and body["conf"] == {} and body["triggered_by"] == "op"
    assert body["url"].startswith("/dags/llmops_rollback/runs/manual__")


def test_the_actions_create_dag_runs_recorded_under_the_user(api: dict) -> None:
    status, body = api["bearer_retrain"]
    assert status == 200 and body["dag_id"] == "llmops_retrain"
    assert body["conf"] == {"clear_failed_gate": True, "cooldown": "24h"}
    assert api["bearer_retrain_no_body"] == 200
    rollback, retrain, retrain_again = api["runs"]
    assert rollback[:3] == ["llmops_rollback", {}, "op"] and "manual" in rollback[3].lower()
    assert retrain[:3] == ["llmops_retrain", {"clear_failed_gate": True, "cooldown": "24h"}, "op"]
    assert retrain_again[:3] == ["llmops_retrain", {}, "op"]
    assert "from the LLMOps view by op" in (rollback[5] or "")
    assert api["audit"] == [["llmops_view.rollback", "op", "llmops_rollback", True],
                            ["llmops_view.retrain", "op", "llmops_retrain", True],
                            ["llmops_view.retrain", "op", "llmops_retrain", True]]


def test_report_files_are_served_as_documents_and_nothing_outside_the_reports(api: dict) -> None:
    status, csp, nosniff, content_type = api["report"]
    assert (status, csp, nosniff) == (200, "sandbox allow-same-origin", "nosniff")  # no script runs on this origin
    assert content_type.startswith("text/html")
    assert api["traversal"] == [404, 404, 404]


def test_the_summary_reads_the_registry_through_the_api_server(api: dict) -> None:
    assert api["summary_champion"] == "2"
    assert "Triton is not answering" in api["summary_deployment_note"]
