"""The whole lifecycle under the real scheduler: one trigger of ``llmops_data`` through the
REST API, then the Asset chain (``llmops_train`` → ``llmops_evaluate`` → ``llmops_deploy``)
to a champion served by Triton; a second trigger on the unchanged site that redoes nothing;
and a restart of the stack that starts no run. Tests run in file order on one session
fixture (``lifecycle`` in conftest.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llmops.chain import CHAIN, DATA, DEPLOY, EVALUATE, TRAIN

pytestmark = pytest.mark.slow


def _runs(client) -> dict[str, list]:
    return {dag_id: client.dag_runs(dag_id) for dag_id in CHAIN}


def test_one_trigger_ends_with_a_served_champion_through_the_assets(lifecycle):
    result, client = lifecycle.result, lifecycle.client
    assert result.outcome == "deployed", (result.message, result.log_tail, lifecycle.log.read_text()[-3000:])
    runs = _runs(client)
    assert [r.run_type for r in runs[DATA]] == ["manual"]
    for dag_id in (TRAIN, EVALUATE, DEPLOY):  # exactly one run each, started by an Asset event
        assert [(r.run_type, r.state) for r in runs[dag_id]] == [("asset_triggered", "success")], dag_id
    events = client.asset_events()
    assert {e.uri.rstrip("/") for e in events} >= {"llmops://corpus", "llmops://qa", "llmops://tokens",
                                                   "llmops://model", "llmops://challenger", "llmops://champion"}
    assert all(len(e.created_dagruns) <= 1 for e in events), [(e.uri, e.created_dagruns) for e in events]

    from llmops.registry import tracking
    from llmops.serving.client import generate

    cfg = lifecycle.cfg
    versions = tracking.connect(tracking.tracking_uri(cfg)).search_model_versions("name='llmops'")
    assert [str(v.version) for v in versions] == ["1"]
    assert versions[0].tags["content_sha256"] and versions[0].tags["gate_result"] == "passed"
    answer = generate("What is the for statement?", url=lifecycle.stack.triton.http_address, protocol="http",
                      model=cfg.serving.model_name)
    assert answer.model_version == "1" and answer.completion_tokens > 0


def test_data_outputs_match_the_demo_site_and_hold_no_planted_pii(lifecycle):
    home, client, truth = lifecycle.home, lifecycle.client, lifecycle.ground_truth
    events = {e.uri.rstrip("/"): e.extra for e in client.asset_events(source_dag_id=DATA)}
    for uri, stage in [("llmops://corpus", "redact"), ("llmops://qa", "qa"), ("llmops://tokens", "tokens")]:
        out = Path(events[uri]["path"])
        assert out.parent == home / "artifacts" / stage
        assert events[uri]["hash"] == json.loads((out / "manifest.json").read_text())["key"] == out.name
    [data_run] = client.dag_runs(DATA)
    tis = client.task_instances(DATA, data_run.run_id)
    assert {t.state for t in tis} == {"success"}, [(t.task_id, t.state) for t in tis]
    assert sorted(t.map_index for t in tis if t.task_id == "extract") == [0, 1, 2]  # mapped over 3 shards

    latest = json.loads((home / "reports" / "llmops_data" / "latest.json").read_text())
    summary = json.loads((Path(latest["path"]) / "summary.json").read_text())
    assert (Path(latest["path"]) / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["crawl"]["failed_by_reason"]["timeout"] == 1
    assert summary["extract"]["shards"] == 3
    assert summary["dedup"]["exact_duplicates_removed"] + summary["dedup"]["near_duplicates_removed"] == len(
        truth["duplicates"])
    assert Path(latest["data_card"]["markdown"]).read_text().startswith("# Data card")
    assert events["llmops://tokens"]["data_card"] == latest["data_card"]["markdown"].rsplit("/", 1)[0]
    _no_planted_pii_anywhere(home, events, truth)


def test_training_ran_deepspeed_ranks_and_nested_mlflow_runs(lifecycle):
    client = lifecycle.client
    [train_run] = client.dag_runs(TRAIN)
    tis = client.task_instances(TRAIN, train_run.run_id)
    assert {t.state for t in tis} == {"success"}, [(t.task_id, t.state) for t in tis]
    assert sorted(t.map_index for t in tis if t.task_id == "finetune") == [0, 1]  # both variants, mapped
    [model_event] = [e.extra for e in client.asset_events(uri="llmops://model")]
    assert set(model_event["variants"]) == {"qa", "qa-full"} and model_event["variant"] == "qa-full"
    served = Path(model_event["path"])
    assert (served / "model.safetensors").exists() and (served / "chat_template.jinja").exists()
    info = json.loads((served / "llmops_model.json").read_text())
    assert info["kind"] == "finetune" and info["world_size"] == 2
    summary = json.loads((lifecycle.home / "reports" / "llmops_train" / "latest.json").read_text())
    pretrain = json.loads((Path(summary["path"]) / "summary.json").read_text())["pretrain"]
    assert pretrain["final_val_loss"] < pretrain["first_val_loss"]

    from llmops.registry import tracking

    cfg = lifecycle.cfg
    mlflow = tracking.connect(tracking.tracking_uri(cfg))
    runs = mlflow.search_runs([tracking.ensure_experiment(cfg, mlflow)])
    parent = next(r for r in runs if r.data.tags.get("airflow.dag_id") == TRAIN)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["finetune-qa", "finetune-qa-full", "pretrain-tiny"]
    assert all(r.info.status == "FINISHED" for r in children + [parent])


def test_a_second_trigger_on_the_unchanged_site_redoes_nothing(lifecycle):
    from llmops.chain import run_chain
    from llmops.registry import tracking

    client, home = lifecycle.client, lifecycle.home
    before = {dag_id: [r.run_id for r in runs] for dag_id, runs in _runs(client).items()}
    run_dirs = sorted(p.name for p in (home / "runs").rglob("*") if p.is_dir() and p.parent.parent == home / "runs")
    result = run_chain(client, {}, lifecycle.printer(), start_timeout_s=180)
    assert result.outcome == "no_new_data", (result.message, result.log_tail)
    assert result.message.startswith("no new data since data card"), result.message
    [_, second] = client.dag_runs(DATA)
    tis = {t.task_id: t.state for t in client.task_instances(DATA, second.run_id) if t.map_index < 0}
    assert second.state == "success" and tis["data_card"] == "skipped", tis
    assert not client.asset_events(uri="llmops://tokens", source_run_id=second.run_id)
    time.sleep(20)  # long enough for the scheduler to have started anything an event would start
    after = {dag_id: [r.run_id for r in runs] for dag_id, runs in _runs(client).items()}
    assert {d: after[d] for d in (TRAIN, EVALUATE, DEPLOY)} == {d: before[d] for d in (TRAIN, EVALUATE, DEPLOY)}
    assert sorted(p.name for p in (home / "runs").rglob("*")
                  if p.is_dir() and p.parent.parent == home / "runs") == run_dirs  # no training job
    versions = tracking.connect(tracking.tracking_uri(lifecycle.cfg)).search_model_versions("name='llmops'")
    assert [str(v.version) for v in versions] == ["1"]
    log = "\n".join(client.task_log(t) for t in client.task_instances(DATA, second.run_id)
                    if t.task_id in ("extract", "dedup", "redact", "tokenizer"))
    assert "reused extract" in log and "reused dedup" in log and "reused redact" in log, log[-3000:]


def test_a_stack_restart_starts_no_run(lifecycle):
    stack = lifecycle.stack
    before = {dag_id: [r.run_id for r in runs] for dag_id, runs in _runs(lifecycle.client).items()}
    stack.stop(timeout=30, progress=lifecycle.printer())
    assert stack.processes() == []
    stack.start(progress=lifecycle.printer())
    lifecycle.client = client = stack.client()
    time.sleep(30)  # a scheduler that replays old Asset events does so within seconds
    after = {dag_id: [r.run_id for r in runs] for dag_id, runs in _runs(client).items()}
    assert after == before


def _no_planted_pii_anywhere(home: Path, events: dict, ground_truth: dict) -> None:
    """No planted value in the redacted corpus, the decoded shards, the Q&A set, logs or reports;
    and the check is not vacuous: the values are in the corpus before redaction."""
    from llmops.data import store
    from llmops.tokenizer.encode import decode_document, load_shard
    from llmops.tokenizer.train import load_tokenizer

    values = {p["value"] for p in ground_truth["pii"]}
    norm = " ".join
    unredacted = " ".join(norm(d["text"].split()) for d in store.read_docs(
        next((home / "artifacts" / "dedup").glob("*/corpus.parquet"))))
    body_values = {p["value"] for p in ground_truth["pii"] if p["where"] == "body" and p["page"].startswith("/docs/")}
    assert sum(v in unredacted for v in body_values) >= 0.9 * len(body_values) > 100

    redacted_docs = store.read_docs(Path(events["llmops://corpus"]["path"]) / "corpus.parquet")
    texts = {"redacted corpus": " ".join(d["text"] + " " + (d["title"] or "") + " " + (d["author"] or "")
                                         for d in redacted_docs)}
    qa_dir = Path(events["llmops://qa"]["path"])
    texts["qa"] = (qa_dir / "finetune.jsonl").read_text() + (qa_dir / "heldout.jsonl").read_text()
    tokens_dir = Path(events["llmops://tokens"]["path"])
    tok = load_tokenizer(Path(events["llmops://tokens"]["vocab"]))
    decoded = []
    by_id = {d["id"]: d["text"] for d in redacted_docs}
    for split in ("train", "validation"):
        _, index, _ = load_shard(tokens_dir, split)
        ids = json.loads((tokens_dir / f"{split}_docs.json").read_text())
        split_texts = [decode_document(tokens_dir, split, i, tok) for i in range(len(index) - 1)]
        assert split_texts == [by_id[i] for i in ids]  # encode -> decode gives the redacted text back exactly
        decoded += split_texts
    assert len(decoded) == len(redacted_docs)
    texts["decoded shards"] = " ".join(decoded)
    texts["logs and reports"] = " ".join(p.read_text(errors="replace") for p in [
        *(home / "reports").rglob("*.json"), *(home / "reports").rglob("*.txt"),
        *(home / "artifacts" / "data_card").rglob("*.md"), *(home / "artifacts" / "data_card").rglob("*.json"),
        *(home / "airflow" / "logs").rglob("*.log"), *(home / "stack").glob("*.log")])
    for name, text in texts.items():
        flat = norm(text.split())
        leaked = sorted(v for v in values if v in flat)
        assert leaked == [], f"{len(leaked)} planted PII values in the {name}"
