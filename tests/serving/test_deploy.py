"""Deployments against a real Triton server and a real MLflow registry: staged, smoke-tested,
swapped with no failed request under load, refused or rolled back without touching what serves."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from llmops.registry import model_registry as registry, tracking
from llmops.serving import repository
from llmops.serving.client import generate
from llmops.serving.deploy import DeployFailed, deploy, ensure_champion_in_repository, rollback
from llmops.serving.server import TritonServer
from tests.serving.conftest import build_random_model, serving_config
from tests.training.fixtures import paths

pytestmark = pytest.mark.slow


def _register(cfg, model_dir: Path, *, gate: str = "passed") -> str:
    """Register ``model_dir`` as a new version of ``llmops`` the way the gate does, with its tags."""
    client = tracking.connect(tracking.tracking_uri(cfg))
    experiment = tracking.ensure_experiment(cfg, client)
    run = client.create_run(experiment, run_name="deploy-test")
    client.set_terminated(run.info.run_id)
    return registry.register_model(cfg, model_dir, run.info.run_id, tags={"gate_result": gate,
                                                                           "data_card_hash": "test"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory, data_home):
    """A Triton server in its own home with three registered versions: two good (1, 2; tiny
    random models with the pipeline's tokenizer, which answer every prompt with some text)
    and one whose weights cannot load (3)."""
    home = tmp_path_factory.mktemp("deploy_home")
    cfg = serving_config(home, max_queue_delay_us=1000)
    tokenizer = paths(data_home)["tokenizer"]
    good = build_random_model(tokenizer, home / "model-a", seed=0)
    other = build_random_model(tokenizer, home / "model-b", seed=1)
    broken = home / "broken-model"
    shutil.copytree(good, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    versions = {"v1": _register(cfg, good), "v2": _register(cfg, other), "broken": _register(cfg, broken)}
    server = TritonServer(cfg)
    server.start()
    try:
        yield {"cfg": cfg, "server": server, "versions": versions, "good": good}
    finally:
        server.stop(timeout=30)


def _traffic(server: TritonServer, stop: threading.Event, results: Counter, versions: list, errors: list) -> None:
    while not stop.is_set():
        sent = time.monotonic()
        try:
            answer = generate("What is the for statement?", url=server.http_address, max_tokens=4, timeout_s=60)
            results["ok"] += 1
            versions.append((sent, answer.model_version))
        except Exception as exc:  # any refusal or error is a failed request
            results["failed"] += 1
            errors.append(repr(exc))


def test_deploy_swaps_versions_under_load_without_a_failed_request(stack):
    cfg, server, v = stack["cfg"], stack["server"], stack["versions"]
    first = deploy(cfg, f"models:/llmops/{v['v1']}", server=server)
    assert first.status == "deployed" and first.previous is None
    assert {r.protocol for r in first.smoke} == {"http", "grpc"}
    assert all(r.model_version == v["v1"] and r.text for r in first.smoke)
    assert registry.version_for(cfg, "llmops", registry.CHAMPION) == v["v1"]
    assert repository.served_versions(cfg, "llmops") == [int(v["v1"])]
    assert not (repository.repository_path(cfg) / cfg.serving.staging_model_name).exists()

    stop, results, seen, errors = threading.Event(), Counter(), [], []
    threads = [threading.Thread(target=_traffic, args=(server, stop, results, seen, errors)) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        second = deploy(cfg, f"models:/llmops/{v['v2']}", server=server)
        swapped = time.monotonic()
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert results["failed"] == 0, errors[:5]
    assert results["ok"] > 20
    assert second.status == "deployed" and second.previous == int(v["v1"])
    after = [ver for sent, ver in seen if sent > swapped]  # requests sent once deploy() returned
    assert after and set(after) == {v["v2"]}, Counter(after)
    assert v["v1"] in {ver for _, ver in seen}  # v1 answered while v2 was staged and loaded
    assert registry.version_for(cfg, "llmops", registry.CHAMPION) == v["v2"]
    assert repository.served_versions(cfg, "llmops") == [int(v["v2"])]  # the old directory is gone


def test_a_version_that_fails_to_initialize_never_serves(stack):
    cfg, server, v = stack["cfg"], stack["server"], stack["versions"]
    champion = registry.version_for(cfg, "llmops", registry.CHAMPION)
    with pytest.raises(DeployFailed, match="failed to load"):
        deploy(cfg, f"models:/llmops/{v['broken']}", server=server)
    assert generate("What is the for statement?", url=server.http_address, max_tokens=4).model_version == champion
    assert generate("What is x?", url=server.grpc_address, protocol="grpc", max_tokens=4).model_version == champion
    assert registry.version_for(cfg, "llmops", registry.CHAMPION) == champion
    assert repository.served_versions(cfg, "llmops") == [int(champion)]
    assert not (repository.repository_path(cfg) / cfg.serving.staging_model_name).exists()


def test_a_version_that_failed_the_gate_is_refused(stack):
    cfg, server = stack["cfg"], stack["server"]
    failed = _register(cfg, stack["good"], gate="failed")
    with pytest.raises(DeployFailed, match="gate_result='failed'"):
        deploy(cfg, f"models:/llmops/{failed}", server=server)
    with pytest.raises(DeployFailed, match="not in the registry"):
        deploy(cfg, "models:/llmops/999", server=server)
    with pytest.raises(DeployFailed, match="not a registered model URI"):
        deploy(cfg, "/some/dir", server=server)


def test_a_swap_that_fails_its_live_check_restores_the_previous_version(stack, monkeypatch):
    """Failure injection past staging: the new version loads but answers as the wrong
    version, so the live check after the swap fails. The previous version must be pinned
    and serving again, the new directory gone, champion unchanged. (The target has the
    lower version number: the swap and its undo both go against "latest".)"""
    import llmops.serving.deploy as deploy_module

    cfg, server, v = stack["cfg"], stack["server"], stack["versions"]
    champion = registry.version_for(cfg, "llmops", registry.CHAMPION)
    target = v["v1"] if champion != v["v1"] else v["v2"]
    real_info = deploy_module.model_info
    monkeypatch.setattr(deploy_module, "_stage", lambda *args, **kwargs: [])
    monkeypatch.setattr(deploy_module, "model_info",
                        lambda uri, mv: real_info(uri, mv).model_copy(update={"version": "999"}))
    with pytest.raises(DeployFailed, match=r"answered as versions \['999'"):
        deploy(cfg, f"models:/llmops/{target}", server=server)
    assert generate("What is x?", url=server.http_address, max_tokens=4).model_version == champion
    assert generate("What is x?", url=server.grpc_address, protocol="grpc", max_tokens=4).model_version == champion
    assert registry.version_for(cfg, "llmops", registry.CHAMPION) == champion
    assert repository.served_versions(cfg, "llmops") == [int(champion)]
    config = text_format.Parse((repository.repository_path(cfg) / "llmops" / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    assert list(config.version_policy.specific.versions) == [int(champion)]  # pinned for the next restart too


def test_a_failed_first_swap_leaves_nothing_served(stack, tmp_path, monkeypatch):
    """The same injected failure on a server that serves nothing yet: the failed version is
    unloaded and its directory removed, so a retry cannot find it "already serving"."""
    import llmops.serving.deploy as deploy_module

    cfg = serving_config(tmp_path / "home")
    version = _register(cfg, stack["good"])
    real_info = deploy_module.model_info
    monkeypatch.setattr(deploy_module, "_stage", lambda *args, **kwargs: [])
    monkeypatch.setattr(deploy_module, "model_info",
                        lambda uri, mv: real_info(uri, mv).model_copy(update={"version": "999"}))
    server = TritonServer(cfg)
    server.start()
    try:
        with pytest.raises(DeployFailed, match="answered as versions"):
            deploy(cfg, f"models:/llmops/{version}", server=server)
        assert deploy_module.served_version(server, "llmops") is None
        assert not (repository.repository_path(cfg) / "llmops").exists()
        assert registry.version_for(cfg, "llmops", registry.CHAMPION) is None
    finally:
        server.stop(timeout=30)


def test_rollback_serves_the_previous_champion_and_restart_serves_the_champion(stack):
    cfg, server, v = stack["cfg"], stack["server"], stack["versions"]
    assert registry.version_for(cfg, "llmops", registry.CHAMPION) == v["v2"]
    result = rollback(cfg, server=server)
    assert result.status == "rolled back" and result.version == int(v["v1"])
    assert generate("What is x?", url=server.http_address, max_tokens=4).model_version == v["v1"]
    assert registry.version_for(cfg, "llmops", registry.CHAMPION) == v["v1"]
    again = deploy(cfg, f"models:/llmops/{v['v1']}", server=server)
    assert again.status == "already serving"

    # A restart serves the champion again, from the repository (or the registry if missing).
    server.stop(timeout=30)
    shutil.rmtree(repository.repository_path(cfg) / "llmops")
    assert ensure_champion_in_repository(cfg) == int(v["v1"])
    server.start()
    assert generate("What is x?", url=server.http_address, max_tokens=4).model_version == v["v1"]


def _dag_env(stack) -> dict[str, str]:
    """The environment of ``airflow dags test`` against this module's server and registry (migrated)."""
    import subprocess
    import sys

    from tests.dags.conftest import airflow_env

    cfg, server = stack["cfg"], stack["server"]
    s = cfg.serving
    env = airflow_env(Path(cfg.home)) | {
        "LLMOPS_SERVING__HTTP_PORT": str(s.http_port), "LLMOPS_SERVING__GRPC_PORT": str(s.grpc_port),
        "LLMOPS_SERVING__METRICS_PORT": str(s.metrics_port), "LLMOPS_SERVING__ADMIN_KEY": server.admin_key}
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env, check=True,
                   capture_output=True, timeout=300)
    return env


def test_llmops_deploy_dag_deploys_through_airflow_and_fails_cleanly(stack, tmp_path):
    """`airflow dags test llmops_deploy`: the sensor finds the server, the deploy task swaps
    the version in and announces llmops://champion; a broken version fails the task with
    the reason while the champion keeps serving."""
    import json
    import sqlite3
    import subprocess
    import sys

    cfg, server, v = stack["cfg"], stack["server"], stack["versions"]
    env = _dag_env(stack)
    airflow = str(Path(sys.executable).parent / "airflow")
    champion = registry.version_for(cfg, "llmops", registry.CHAMPION)
    target = v["v2"] if champion != v["v2"] else v["v1"]
    runs = []
    for version in (target, v["broken"]):
        log = tmp_path / f"deploy-{version}.log"
        with open(log, "w") as fh:
            conf = json.dumps({"model_version": int(version)})
            subprocess.run([airflow, "dags", "test", "llmops_deploy", "-c", conf],
                           env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=600)
        runs.append(log.read_text())
    db = sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db")
    rows = db.execute("select r.run_id, t.task_id, t.state from task_instance t join dag_run r "
                      "on t.run_id = r.run_id and t.dag_id = r.dag_id where t.dag_id = 'llmops_deploy' "
                      "order by r.id").fetchall()
    by_run: dict[str, dict[str, str]] = {}
    for run_id, task, state in rows:
        by_run.setdefault(run_id, {})[task] = state
    good, bad = list(by_run.values())
    assert good == {"wait_for_server": "success", "deploy": "success"}, runs[0][-3000:]
    assert bad == {"wait_for_server": "success", "deploy": "failed"}, runs[1][-3000:]
    assert "failed to load" in runs[1] and "the previous version keeps serving" in runs[1]
    event = json.loads(db.execute("select e.extra from asset_event e join asset a on a.id = e.asset_id "
                                  "where a.uri = 'llmops://champion/'").fetchone()[0])
    assert event["model_uri"] == f"models:/llmops/{target}"
    assert registry.version_for(cfg, "llmops", registry.CHAMPION) == target
    assert generate("What is x?", url=server.http_address, max_tokens=4).model_version == target
    assert server.admin_key not in "".join(runs)

