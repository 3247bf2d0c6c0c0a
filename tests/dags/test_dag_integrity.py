"""Every DAG imports cleanly, is acyclic, owned, tagged, bounded in time, retried on I/O,
and imports no heavy module at parse time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.dags.conftest import DAGS, airflow_env

HEAVY_MODULES = ["torch", "transformers", "presidio_analyzer", "presidio_anonymizer", "deepspeed",
                 "spacy", "mlflow", "tritonclient", "trafilatura", "datasketch", "pyarrow", "peft"]
# Tasks that must not retry at all. None: a failed gate, a bad setting or a broken model is a
# permanent error, which RetryByKind fails at once whatever the task's retries.
NO_RETRY_TASKS: set[tuple[str, str]] = set()
DAG_FILES = sorted(p.name for p in DAGS.glob("*.py"))


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert len(dagbag.dags) >= 1


def test_every_dag_file_defines_a_dag(dagbag):
    files = {dag.fileloc.rsplit("/", 1)[-1] for dag in dagbag.dags.values()}
    assert files == set(DAG_FILES)


def test_no_cycles_tags_owner(dagbag):
    for dag_id, dag in dagbag.dags.items():
        dag.check_cycle()  # raises on a cycle
        assert dag.tags, f"{dag_id} has no tags"
        for t in dag.tasks:
            assert t.owner and t.owner != "airflow", f"{dag_id}.{t.task_id} has no owner"


def test_every_task_has_timeout_and_io_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        for t in dag.tasks:
            assert t.execution_timeout is not None, f"{dag_id}.{t.task_id} has no execution_timeout"
            if (dag_id, t.task_id) not in NO_RETRY_TASKS:
                assert t.retries >= 1, f"{dag_id}.{t.task_id} does not retry"


def test_every_task_retries_by_error_kind_with_backoff(dagbag):
    """Permanent errors fail at once and transient ones back off, in every task: mapped
    tasks, operators and the sensor included (llmops_airflow.errors)."""
    from llmops_airflow.errors import RetryByKind

    for dag_id, dag in dagbag.dags.items():
        for t in dag.tasks:
            assert isinstance(t.retry_policy, RetryByKind), f"{dag_id}.{t.task_id} has no RetryByKind policy"
            assert t.retries >= 1 and t.retry_exponential_backoff >= 2, f"{dag_id}.{t.task_id} does not back off"


def test_network_task_retries_with_backoff(dagbag):
    scrape = dagbag.dags["llmops_data"].get_task("scrape")
    assert scrape.retries >= 3 and scrape.retry_exponential_backoff


def test_data_dag_shape(dagbag):
    dag = dagbag.dags["llmops_data"]
    assert "clean" in dag.get_task("extract").downstream_task_ids
    assert dag.get_task("dedup").upstream_task_ids == {"clean"}
    # only the redacted corpus is published: personal data never reaches a consumer
    assert not dag.get_task("dedup").outlets
    assert not dag.get_task("redact").outlets
    assert {o.uri for o in dag.get_task("publish_corpus").outlets} == {"llmops://corpus/"}
    assert dag.get_task("publish_corpus").upstream_task_ids == {"redact"}
    # the shards are announced with their data card, so a consumer finds both in the event
    assert not dag.get_task("encode").outlets
    assert {o.uri for o in dag.get_task("data_card").outlets} == {"llmops://tokens/"}
    assert not dag.get_task("qa").outlets
    assert {o.uri for o in dag.get_task("publish_qa").outlets} == {"llmops://qa/"}
    # each publisher compares with the last event of its own Asset (inlet_events); data_card
    # also with the last model, to publish again data whose training never succeeded
    for task_id, uris in (("publish_corpus", {"llmops://corpus/"}), ("publish_qa", {"llmops://qa/"}),
                          ("data_card", {"llmops://tokens/", "llmops://model/"})):
        assert {i.uri for i in dag.get_task(task_id).inlets} == uris
    assert dag.get_task("encode").upstream_task_ids == {"redact", "tokenizer"}
    assert "seed_url" in dag.params and "max_pages" in dag.params


def test_train_dag_shape(dagbag):
    dag = dagbag.dags["llmops_train"]
    # data-aware: a new token-shard event (published with the data card) starts training
    assert "llmops://tokens/" in repr(dag.timetable.asset_condition)
    assert dag.get_task("pretrain").upstream_task_ids == {"resolve_inputs"}
    assert dag.get_task("export_pretrained").upstream_task_ids == {"resolve_inputs", "pretrain"}
    assert dag.get_task("export_pretrained").trigger_rule == "none_failed"  # runs when pretraining is skipped
    assert dag.get_task("finetune").upstream_task_ids == {"plan_finetunes"}
    assert {o.uri for o in dag.get_task("publish").outlets} == {"llmops://model/"}
    for task_id in ("pretrain", "finetune"):
        task = dag.get_task(task_id)
        assert task.retries >= 1  # a retry resumes from the newest checkpoint
        assert task.execution_timeout is not None
    assert {"preset", "steps", "ranks", "zero_stage", "finetune_method", "lr", "base_model"} <= set(dag.params)


@pytest.mark.parametrize("dag_file", DAG_FILES)
def test_no_heavy_imports_at_parse_time(tmp_path, dag_file):
    """Parse the DAG file in a fresh interpreter and list the heavy modules it pulled in."""
    probe = (
        "import json, sys, runpy\n"
        f"runpy.run_path({str(DAGS / dag_file)!r})\n"
        f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=airflow_env(tmp_path), capture_output=True,
                         text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_evaluate_dag_shape(dagbag):
    dag = dagbag.dags["llmops_evaluate"]
    assert "llmops://model/" in repr(dag.timetable.asset_condition)  # scheduled on the fine-tuned models
    assert dag.get_task("gate").upstream_task_ids == {"evaluate"}
    assert dag.get_task("register").upstream_task_ids == {"gate"}
    assert {o.uri for o in dag.get_task("register").outlets} == {"llmops://challenger/"}


def test_deploy_dag_shape(dagbag):
    dag = dagbag.dags["llmops_deploy"]
    assert "llmops://challenger/" in repr(dag.timetable.asset_condition)  # scheduled on the registered challenger
    assert dag.get_task("deploy").upstream_task_ids == {"wait_for_server"}
    assert dag.get_task("wait_for_server").task_type.endswith("SensorOperator") or \
        "sensor" in dag.get_task("wait_for_server").task_type.lower()
    assert dag.get_task("wait_for_server").mode == "reschedule"  # no worker slot held while Triton starts
    assert {o.uri for o in dag.get_task("deploy").outlets} == {"llmops://champion/"}
    assert {"model_version", "server_wait_s"} <= set(dag.params)


def test_retrain_dag_shape(dagbag):
    """On llmops://drift or the weekly cron, whichever comes first; the cron does not run when
    the DAG appears (no start_date, run_immediately off), so a fresh stack starts no retraining."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    dag = dagbag.dags["llmops_retrain"]
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert "llmops://drift/" in repr(dag.timetable.asset_condition)
    cron = dag.timetable.timetable
    assert isinstance(cron, CronTriggerTimetable) and cron.run_immediately is False
    assert cron.expression == "0 3 * * 1" and dag.start_date is None and dag.max_active_runs == 1
    assert dag.get_task("scrape").upstream_task_ids == {"guards"}
    assert dag.get_task("incremental_data").upstream_task_ids == {"guards", "scrape"}
    assert dag.get_task("publish").upstream_task_ids == {"guards", "incremental_data"}
    assert {o.uri for o in dag.get_task("publish").outlets} == {"llmops://tokens/"}
    assert {"clear_failed_gate", "replay_fraction", "cooldown"} == set(dag.params)
