"""The closed loop under the real scheduler, on the session's champion v1 (``lifecycle``),
ordered so that one retraining serves every case:

    drift, site unchanged                        -> no new data, nothing trains
    site publishes a section; drift, strict gate -> retrain → train → evaluate fails; nothing registered
    the same drift again                         -> already failed the gate, nothing trains
    cleared by hand (Param), normal gate         -> the same training (reused) → v2 deployed; its
                                                    tags name v1 and the drift report
      a drift event during that retraining       -> retrain in progress, nothing starts
    llmops_data on the unchanged site            -> publishes nothing (champion v2 knows it all)

Drift events are posted through the REST API (as a person or another system reports drift);
``test_monitor`` shows the monitor emitting one itself.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmops.chain import DEPLOY, EVALUATE, TRAIN

pytestmark = pytest.mark.slow

RETRAIN = "llmops_retrain"
STRICT_GATE = "floors:\n  bits_per_byte: {max: 0.01}\n"  # no model of this size gets near it
STATE: dict[str, object] = {}


def runs(lifecycle, dag_id: str) -> dict[str, object]:
    return {r.run_id: r for r in lifecycle.client.dag_runs(dag_id)}


def wait_new_run(lifecycle, dag_id: str, known: set[str], timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while not (new := [r for r in lifecycle.client.dag_runs(dag_id) if r.run_id not in known]):
        assert time.monotonic() < deadline, f"no new {dag_id} run within {timeout_s:.0f} s"
        time.sleep(2)
    return new[-1]


def finish(lifecycle, dag_id: str, run_id: str, timeout_s: float = 600):
    """Wait for the run to end; its final state and its tasks' states."""
    client = lifecycle.client
    deadline = time.monotonic() + timeout_s
    while (state := client.dag_run(dag_id, run_id).state) not in ("success", "failed"):
        assert time.monotonic() < deadline, f"{dag_id} run {run_id} still {state} after {timeout_s:.0f} s"
        time.sleep(3)
    return state, {t.task_id: t.state for t in client.task_instances(dag_id, run_id) if t.map_index < 0}


def wait_idle(lifecycle, dag_ids=(RETRAIN, TRAIN, EVALUATE, DEPLOY), timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while busy := [r.run_id for d in dag_ids for r in lifecycle.client.dag_runs(d) if r.state in ("queued", "running")]:
        assert time.monotonic() < deadline, f"still active: {busy}"
        time.sleep(3)


def decision(lifecycle, run_id: str):
    from llmops.retrain.guards import decisions

    found = [d for d in decisions(lifecycle.cfg) if d.run_id == run_id]
    assert found, f"no decision recorded for {run_id}"
    return found[-1]


def send_drift(lifecycle) -> str:
    """Post an ``llmops://drift`` event naming a real drift report; returns the report's path."""
    from llmops.records.monitoring import DriftEvent

    reports = sorted((lifecycle.home / "reports" / "llmops_monitor").glob("*/drift.json"))
    report = str(reports[-1]) if reports else str(lifecycle.home / "reports" / "llmops_monitor" / "x" / "drift.json")
    lifecycle.client.create_asset_event("llmops://drift", DriftEvent(
        report=report, verdict="drift", signals={"token_js": 0.9}, model="llmops", version="1").dump())
    return report


def drift_retrain(lifecycle) -> tuple[str, str, dict[str, str | None]]:
    known = set(runs(lifecycle, RETRAIN))
    report = send_drift(lifecycle)
    run = wait_new_run(lifecycle, RETRAIN, known)
    assert run.run_type == "asset_triggered"
    state, tis = finish(lifecycle, RETRAIN, run.run_id)
    assert state == "success", tis
    return run.run_id, report, tis


def versions(lifecycle) -> list[str]:
    from llmops.registry import tracking

    client = tracking.connect(tracking.tracking_uri(lifecycle.cfg))
    return sorted(str(v.version) for v in client.search_model_versions("name='llmops'"))


def test_no_retraining_ran_but_on_drift_events(lifecycle):
    """Starting the stack (a weekly timetable that does not run at once) and the monitor's
    no-drift checks started no retraining: every run so far answered a drift event."""
    retrains = lifecycle.client.dag_runs(RETRAIN)
    assert all(r.run_type == "asset_triggered" for r in retrains), retrains
    assert len(retrains) == len(lifecycle.client.asset_events(uri="llmops://drift"))


def test_drift_with_no_new_data_retrains_nothing(lifecycle):
    wait_idle(lifecycle)
    trains = set(runs(lifecycle, TRAIN))
    run_id, _, tis = drift_retrain(lifecycle)
    assert tis["guards"] == "success" and tis["incremental_data"] == "skipped" and tis["publish"] == "skipped", tis
    reason = decision(lifecycle, run_id).reason
    assert reason.startswith("no new data since data card") and reason.endswith("(champion v1)"), reason
    time.sleep(10)
    assert set(runs(lifecycle, TRAIN)) == trains


def test_a_drift_retraining_that_fails_the_gate_registers_nothing(lifecycle):
    env = {**lifecycle.env}
    published = subprocess.run([sys.executable, "-m", "llmops.cli", "demo-site", "publish", "library"], env=env,
                               capture_output=True, text=True, timeout=120)
    assert published.returncode == 0, published.stderr
    gate = Path(lifecycle.env["LLMOPS_EVALUATION__GATE_FILE"])
    STATE["lenient_gate"] = gate.read_text()
    gate.write_text(STRICT_GATE)
    trains, evaluations = set(runs(lifecycle, TRAIN)), set(runs(lifecycle, EVALUATE))

    run_id, report, tis = drift_retrain(lifecycle)
    assert tis == {"guards": "success", "scrape": "success", "incremental_data": "success", "publish": "success"}
    STATE.update(first_retrain=run_id, drift_report=report)
    first = decision(lifecycle, run_id)
    assert first.outcome == "started" and first.champion_version == "1" and first.drift_report == report
    train = wait_new_run(lifecycle, TRAIN, trains)
    assert train.run_type == "asset_triggered"
    assert finish(lifecycle, TRAIN, train.run_id, timeout_s=900)[0] == "success"
    evaluate = wait_new_run(lifecycle, EVALUATE, evaluations)
    state, tis = finish(lifecycle, EVALUATE, evaluate.run_id)
    assert state == "failed" and tis["gate"] == "failed" and tis["register"] == "upstream_failed", tis
    assert versions(lifecycle) == ["1"]
    STATE["trained"] = train.run_id


def test_the_same_drift_again_does_nothing(lifecycle):
    assert "first_retrain" in STATE, "needs the failed retraining"
    wait_idle(lifecycle)
    trains = set(runs(lifecycle, TRAIN))
    run_id, _, tis = drift_retrain(lifecycle)
    assert tis["incremental_data"] == "success" and tis["publish"] == "skipped", tis
    reason = decision(lifecycle, run_id).reason
    assert reason.startswith(f"already failed the gate (run {STATE['first_retrain']}"), reason
    time.sleep(10)
    assert set(runs(lifecycle, TRAIN)) == trains and versions(lifecycle) == ["1"]


def test_cleared_by_hand_it_becomes_v2_and_a_drift_meanwhile_starts_nothing(lifecycle):
    from llmops.registry.model_registry import BASE_VERSION_TAG, DRIFT_REPORT_TAG, version_for, version_tags

    assert "first_retrain" in STATE, "needs the failed retraining"
    Path(lifecycle.env["LLMOPS_EVALUATION__GATE_FILE"]).write_text(str(STATE["lenient_gate"]))
    client = lifecycle.client
    before = {d: set(runs(lifecycle, d)) for d in (RETRAIN, TRAIN, EVALUATE, DEPLOY)}
    run_id = client.trigger(RETRAIN, {"clear_failed_gate": True})
    state, tis = finish(lifecycle, RETRAIN, run_id)
    assert state == "success" and tis["publish"] == "success", tis
    assert "cleared by hand" in decision(lifecycle, run_id).reason

    train = wait_new_run(lifecycle, TRAIN, before[TRAIN])
    # A drift event while the retraining's training runs: recorded, nothing starts. (Its jobs are
    # reused, so the chain is quick; should the guard land in the seconds between two DAG runs,
    # the failed attempt's record still stops it.)
    during, _, during_tis = drift_retrain(lifecycle)
    reason = decision(lifecycle, during).reason
    assert during_tis["publish"] == "skipped" and decision(lifecycle, during).outcome == "skipped", during_tis
    assert reason.startswith(("retrain in progress (llmops_", "already failed the gate")), reason

    assert finish(lifecycle, TRAIN, train.run_id, timeout_s=900)[0] == "success"
    log = "\n".join(client.task_log(t) for t in client.task_instances(TRAIN, train.run_id)
                    if t.task_id in ("pretrain", "finetune"))
    assert log.count("already finished in") >= 2, log[-3000:]  # the failed attempt's training, reused
    evaluate = wait_new_run(lifecycle, EVALUATE, before[EVALUATE])
    assert finish(lifecycle, EVALUATE, evaluate.run_id)[0] == "success"
    deploy = wait_new_run(lifecycle, DEPLOY, before[DEPLOY])
    assert finish(lifecycle, DEPLOY, deploy.run_id)[0] == "success"
    assert {r.run_type for d in (TRAIN, EVALUATE, DEPLOY) for r in client.dag_runs(d)
            if r.run_id not in before[d]} == {"asset_triggered"}

    assert versions(lifecycle) == ["1", "2"] and version_for(lifecycle.cfg, "llmops", "champion") == "2"
    tags = version_tags(lifecycle.cfg, "2")
    assert tags[BASE_VERSION_TAG] == "1" and tags[DRIFT_REPORT_TAG] == STATE["drift_report"], tags
    card = lifecycle.cfg.layout.stage_output("data_card", tags["data_card_hash"])
    from llmops.records.data import DataCard

    increment = DataCard.read(card).increment
    assert increment is not None and increment.new_documents == 24 and increment.new_qa_pairs > 0
    assert all("/library/" in url for url in increment.new_pages)
    assert len(set(runs(lifecycle, RETRAIN)) - before[RETRAIN]) == 2  # the cleared run and the refused one
    assert len(set(runs(lifecycle, TRAIN)) - before[TRAIN]) == 1  # the refused one started no training


def test_a_data_run_on_the_unchanged_site_afterwards_publishes_nothing(lifecycle):
    from llmops.chain import run_chain

    wait_idle(lifecycle)
    # Triggered as `op` (the operators' role may trigger DAGs; the UI tests show viewer may not).
    result = run_chain(lifecycle.stack.client(user="op"), {}, lifecycle.printer(), start_timeout_s=180)
    assert result.outcome == "no_new_data", (result.message, result.log_tail)
    assert result.message.startswith("no new data since data card") and "(champion v2)" in result.message
