import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from llmops.config import REPO_ROOT, load_config
from llmops.registry import tracking
from llmops.registry.tracking import RunLogger, TrackingError


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's Default experiment would create ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return load_config(overrides={"home": str(tmp_path / "home")})


@pytest.fixture
def client(cfg):
    return MlflowClient(tracking.tracking_uri(cfg))


def test_store_locations_config_then_environment_then_embedded(cfg, tmp_path, monkeypatch):
    assert tracking.tracking_uri(cfg) == f"sqlite:////{str(tmp_path / 'home' / 'mlflow.db').lstrip('/')}"
    assert tracking.artifact_location(cfg) == (tmp_path / "home" / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert tracking.tracking_uri(cfg) == "http://mlflow:5000"
    assert tracking.artifact_location(cfg) is None  # a server picks its own artifact root
    configured = load_config(overrides={"home": str(tmp_path), "mlflow": {"tracking_uri": "sqlite:////x/db",
                                                                          "artifact_location": "s3://b/a"}})
    assert tracking.tracking_uri(configured) == "sqlite:////x/db"
    assert tracking.artifact_location(configured) == "s3://b/a"
    assert tracking.redact("postgresql://u:secret@db:5432/mlflow") == "postgresql://u:***@db:5432/mlflow"


def test_experiment_is_created_once_with_the_artifact_root(cfg, client):
    experiment_id = tracking.ensure_experiment(cfg)
    assert tracking.ensure_experiment(cfg) == experiment_id
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == "llmops" and experiment.artifact_location == tracking.artifact_location(cfg)
    client.delete_experiment(experiment_id)
    assert tracking.ensure_experiment(cfg) == experiment_id  # restored, not a name clash
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"


def test_dag_run_parent_and_job_runs_are_found_not_duplicated(cfg, client):
    airflow_run = "manual__2026-01-01T00:00:00+00:00"
    parent = tracking.dag_run_parent(cfg, "llmops_train", airflow_run)
    assert tracking.dag_run_parent(cfg, "llmops_train", airflow_run) == parent
    assert tracking.dag_run_parent(cfg, "llmops_train", "manual__other") != parent
    run = client.get_run(parent)
    assert run.info.run_name == f"llmops_train/{airflow_run}"
    assert run.data.tags["airflow.dag_id"] == "llmops_train" and run.data.tags["airflow.run_id"] == airflow_run

    job = tracking.job_run(cfg, "pretrain/0123abcd", "pretrain-tiny", parent_run_id=parent, tags={"try": 1})
    run = client.get_run(job)
    assert run.info.run_name == "pretrain-tiny" and run.info.status == "RUNNING"
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["llmops.job_key"] == "pretrain/0123abcd"

    RunLogger(job, tracking.tracking_uri(cfg)).end("FAILED")  # attempt 1 dies
    retry = tracking.job_run(cfg, "pretrain/0123abcd", "pretrain-tiny", parent_run_id=parent, tags={"try": 2})
    assert retry == job
    run = client.get_run(job)
    assert run.info.status == "RUNNING" and run.data.tags["try"] == "2"

    # Resumed under a later DAG run: keeps its first parent, records the new one.
    later = tracking.dag_run_parent(cfg, "llmops_train", "manual__later")
    assert tracking.job_run(cfg, "pretrain/0123abcd", "pretrain-tiny", parent_run_id=later) == job
    tags = client.get_run(job).data.tags
    assert tags["mlflow.parentRunId"] == parent and tags["llmops.resumed_under"] == later

    experiment_id = tracking.ensure_experiment(cfg)
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert [r.info.run_id for r in children] == [job]
    assert len(client.search_runs([experiment_id])) == 4  # 3 DAG runs + 1 job


def test_racing_creators_converge_on_the_oldest_run(cfg, client, monkeypatch):
    # Another process created the parent after our search but before our create.
    parent = tracking.dag_run_parent(cfg, "d", "r")
    real_search = MlflowClient.search_runs
    calls = []

    def first_search_misses(self, *args, **kwargs):
        calls.append(1)
        return [] if len(calls) == 1 else real_search(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "search_runs", first_search_misses)
    time.sleep(0.01)  # our duplicate starts later than the winner
    assert tracking.dag_run_parent(cfg, "d", "r") == parent
    monkeypatch.undo()
    active = client.search_runs([tracking.ensure_experiment(cfg)])
    assert [r.info.run_id for r in active] == [parent]  # our duplicate was deleted


PARENT = """
import sys
from llmops.config import load_config
from llmops.registry.tracking import dag_run_parent

print(dag_run_parent(load_config(overrides={"home": sys.argv[1]}), "llmops_train", "manual__1"))
"""


def test_processes_starting_together_on_a_fresh_store_share_one_parent(cfg, tmp_path):
    # Unserialised, MLflow's schema migration breaks when processes race on a new file.
    (tmp_path / "parent.py").write_text(PARENT)
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "parent.py", str(cfg.home)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-800:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1
    assert tracking.dag_run_parent(cfg, "llmops_train", "manual__1") == results[0][0].strip()


def test_params_are_flattened_and_a_changed_value_is_skipped(cfg, client, caplog):
    run_id = tracking.job_run(cfg, "k", "job", parent_run_id=None)
    logger = RunLogger(run_id, tracking.tracking_uri(cfg))
    written = logger.log_params({"loop": {"lr": 0.001, "steps": 300}, "modules": ["q_proj", "v_proj"],
                                 "note": "x" * 7000, "bad key!": 1})
    assert written["loop.lr"] == "0.001" and written["modules"] == "['q_proj', 'v_proj']"
    params = client.get_run(run_id).data.params
    assert params["loop.steps"] == "300" and params["bad key_"] == "1"
    assert len(params["note"]) == 6000 and params["note"].endswith("...")

    # A resumed job in a new process: unchanged params are skipped, a changed one warns.
    resumed = RunLogger(run_id, tracking.tracking_uri(cfg))
    with caplog.at_level(logging.WARNING, logger="llmops.registry.tracking"):
        written = resumed.log_params({"loop": {"lr": 0.002, "steps": 300}, "note": "x" * 7000, "world": 2})
    assert written == {"world": "2"}
    assert "'loop.lr' stays '0.001'" in caplog.text
    assert client.get_run(run_id).data.params["loop.lr"] == "0.001"


def test_metrics_are_buffered_and_logged_with_their_steps(cfg, client, caplog):
    run_id = tracking.job_run(cfg, "k", "job", parent_run_id=None)
    logger = RunLogger(run_id, tracking.tracking_uri(cfg), flush_every=10, flush_interval_s=3600)
    logger.log_metrics({"train_loss": 5.0, "lr": 1e-3}, step=1)
    assert client.get_metric_history(run_id, "train_loss") == []  # still buffered
    with caplog.at_level(logging.WARNING, logger="llmops.registry.tracking"):
        for step in range(2, 8):
            logger.log_metrics({"train_loss": 5.0 - step / 10, "lr": 1e-3, "grad_norm": math.inf}, step=step)
    assert "grad_norm=inf" in caplog.text
    assert len(client.get_metric_history(run_id, "train_loss")) >= 5  # flushed at 10 buffered values
    logger.log_metrics({"val_loss": 4.5, "tokens_per_s": 1234}, step=7)
    logger.end()
    history = client.get_metric_history(run_id, "train_loss")
    assert [m.step for m in history] == list(range(1, 8)) and history[-1].value == pytest.approx(4.3)
    run = client.get_run(run_id)
    assert run.data.metrics["val_loss"] == 4.5 and "grad_norm" not in run.data.metrics
    assert run.info.status == "FINISHED"


def test_a_failing_store_costs_freshness_not_the_job(cfg, client, monkeypatch, caplog):
    run_id = tracking.job_run(cfg, "k", "job", parent_run_id=None)
    logger = RunLogger(run_id, tracking.tracking_uri(cfg), flush_every=1, flush_interval_s=3600)
    real = logger.client.log_batch
    calls = []

    def down(*args, **kwargs):
        calls.append(1)
        raise ConnectionError("server restarting")

    monkeypatch.setattr(logger.client, "log_batch", down)
    with caplog.at_level(logging.WARNING, logger="llmops.registry.tracking"):
        for step in range(1, 6):
            logger.log_metrics({"train_loss": 1.0 * step}, step=step)  # no exception
    assert len(calls) == 1  # one failed attempt, then it waits the interval out
    assert "server restarting" in caplog.text and "keeping 1 values" in caplog.text
    with pytest.raises(TrackingError, match="log metrics .* failed: ConnectionError"):
        logger.flush()
    monkeypatch.setattr(logger.client, "log_batch", real)
    logger.close()
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [1, 2, 3, 4, 5]


def test_dataset_inputs_record_the_hashes_once(cfg, client):
    run_id = tracking.job_run(cfg, "k", "job", parent_run_id=None)
    logger = RunLogger(run_id, tracking.tracking_uri(cfg))
    card_hash, tok_hash = "c" * 64, "t" * 64
    inputs = [{"name": "data_card", "digest": card_hash, "source": str(cfg.home / "artifacts" / "data_card" / "k"),
               "n_tokens": 1234},
              {"name": "tokenizer", "digest": tok_hash, "source": "llmops://tokenizer", "vocab_size": 4096}]
    logger.log_dataset_inputs(inputs)
    logger.log_dataset_inputs(inputs)  # a retry adds nothing
    found = {d.dataset.name: d for d in client.get_run(run_id).inputs.dataset_inputs}
    assert set(found) == {"data_card", "tokenizer"}
    card = found["data_card"]
    assert card.dataset.digest == card_hash[:36] and card.dataset.source_type == "local"
    assert json.loads(card.dataset.source) == {"uri": inputs[0]["source"]}
    assert json.loads(card.dataset.profile) == {"digest": card_hash, "n_tokens": 1234}
    tags = {t.key: t.value for t in card.tags}
    assert tags == {"mlflow.data.context": "training", "llmops.digest": card_hash}
    assert found["tokenizer"].dataset.source_type == "external"
    with pytest.raises(ValueError, match="digest"):
        logger.log_dataset_inputs([{"name": "x", "source": "/x"}])


def test_artifacts_dicts_and_text(cfg, client, tmp_path):
    run_id = tracking.job_run(cfg, "k", "job", parent_run_id=None)
    logger = RunLogger(run_id, tracking.tracking_uri(cfg))
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "loss.png").write_bytes(b"png")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    logger.log_artifact(tmp_path / "metrics.jsonl")
    logger.log_artifact(tmp_path / "plots", artifact_path="plots")
    logger.log_dict({"steps": 3}, "result.json")
    logger.log_text("# card", "cards/model_card.md")
    assert {a.path for a in client.list_artifacts(run_id)} == {"metrics.jsonl", "plots", "result.json", "cards"}
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/loss.png"]
    artifact_root = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    assert artifact_root.is_relative_to(cfg.home / "mlartifacts")
    with pytest.raises(FileNotFoundError):
        logger.log_artifact(tmp_path / "missing.txt")


def test_system_metrics_are_logged_into_the_run(cfg, client):
    run_id = tracking.job_run(cfg, "k", "job", parent_run_id=None)
    handle = tracking.start_system_metrics(run_id, tracking.tracking_uri(cfg), interval_s=1)
    deadline = time.monotonic() + 20
    while "system/cpu_utilization_percentage" not in client.get_run(run_id).data.metrics:
        assert time.monotonic() < deadline, "no system metrics after 20 s"
        time.sleep(0.5)
    handle.stop()
    handle.stop()  # idempotent
    metrics = client.get_run(run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(metrics)
    # A resumed job continues the steps instead of writing over them.
    steps = [m.step for m in client.get_metric_history(run_id, "system/cpu_utilization_percentage")]
    with tracking.start_system_metrics(run_id, tracking.tracking_uri(cfg), interval_s=1):
        time.sleep(1.5)
    later = [m.step for m in client.get_metric_history(run_id, "system/cpu_utilization_percentage")]
    assert min(later[len(steps):], default=max(steps) + 1) > max(steps)


WORKER = """
import json, sys
from llmops.registry.tracking import RunLogger

job = json.load(open(sys.argv[1]))
with RunLogger.from_mapping(job) as logger:
    logger.log_params({"loop": {"steps": 3}, "rank": 0})
    for step in range(1, 4):
        logger.log_metrics({"train_loss": 4.0 - step}, step=step)
    logger.log_dict({"ok": True}, "result.json")
"""


def test_run_logger_works_from_another_process_given_only_the_run_id_and_uri(cfg, client, tmp_path):
    parent = tracking.dag_run_parent(cfg, "llmops_train", "manual__1")
    run_id = tracking.job_run(cfg, "k", "pretrain-tiny", parent_run_id=parent)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"run_id": run_id, "tracking_uri": tracking.tracking_uri(cfg)}))
    (tmp_path / "worker.py").write_text(WORKER)
    done = subprocess.run([sys.executable, "worker.py", str(job_file)], check=False, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"loop.steps": "3", "rank": "0"}
    assert [m.value for m in client.get_metric_history(run_id, "train_loss")] == [3.0, 2.0, 1.0]
    assert [a.path for a in client.list_artifacts(run_id)] == ["result.json"]


def test_unreachable_store_or_unknown_run_is_a_clear_error(cfg, tmp_path):
    (tmp_path / "a_file").write_text("")
    bad = load_config(overrides={"home": str(tmp_path), "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/a_file/x.db"}})
    with pytest.raises(TrackingError, match=r"cannot reach the MLflow tracking store sqlite:///.*a_file/x\.db"):
        tracking.dag_run_parent(bad, "d", "r")
    with pytest.raises(TrackingError, match="run 0123 not found"):
        RunLogger("0123", tracking.tracking_uri(cfg))


def test_unreachable_server_error_hides_the_password(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(TrackingError) as err:
        tracking.connect("http://user:s3cret-pw@127.0.0.1:9/")
    assert "127.0.0.1:9" in str(err.value) and "s3cret-pw" not in str(err.value)


def test_data_card_goes_to_the_configured_experiment_under_the_dag_run(cfg, client, tmp_path):
    from llmops.registry.data_card import log_data_card, write_data_card
    from tests.registry.test_data_card import _card

    parent = tracking.dag_run_parent(cfg, "llmops_data", "manual__1")
    paths = write_data_card(_card(), tmp_path / "card")
    run_id = log_data_card(paths, _card(), "data_card", cfg=cfg, parent_run_id=parent)
    run = client.get_run(run_id)
    assert run.info.experiment_id == tracking.ensure_experiment(cfg) and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.metrics["documents"] == 7
