"""The guards of ``llmops_retrain`` on a real MLflow SQLite store: no champion, another
retraining in flight, the cooldown after a deployment, a retraining on the same data that
already failed the gate; and the ``retrain/decisions.jsonl`` record they are kept in."""

from __future__ import annotations

import datetime as dt

import pytest

from llmops.config import with_overrides
from llmops.records.retrain import RetrainDecision, RetrainPlan
from llmops.records.serving import DeployResult
from llmops.registry import tracking
from llmops.retrain import guards
from tests.retrain.test_lineage import (  # noqa: F401 (cfg_fixture, model_dir_fixture: fixtures)
    card_dir,
    cfg_fixture,
    model_dir_fixture,
    register,
)

CARD = "c0ffee0123456789"
NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def champion(cfg, model_dir) -> str:
    """Version 1 serves; its data card is a directory (all a plan reads of it)."""
    card_dir(cfg, CARD).mkdir(parents=True)
    return register(cfg, model_dir, CARD, champion=True)


def _plan(cfg, trigger="drift", *, now=NOW, active_runs=None, drift_report=None) -> RetrainPlan | str:
    return guards.plan(cfg, trigger=trigger, run_id=f"{trigger}__1", now=now, active_runs=active_runs or {},
                       drift_report=drift_report)


def _decision(n: int, **fields) -> RetrainDecision:
    base = {"time": NOW + dt.timedelta(minutes=n), "run_id": f"drift__{n}", "trigger": "drift",
            "outcome": "skipped", "reason": f"reason {n}"}
    return RetrainDecision.model_validate(base | fields)


# ---- plan ------------------------------------------------------------------------------


def test_no_champion_starts_nothing(cfg):
    assert _plan(cfg) == "no champion yet: trigger llmops_data"


def test_another_retraining_in_flight_starts_nothing(cfg, champion):
    reason = _plan(cfg, active_runs={"llmops_train": 1, "llmops_deploy": 0})
    assert isinstance(reason, str) and reason.startswith("retrain in progress (llmops_train: 1 active")
    assert "llmops_deploy" not in reason and reason.endswith("this drift event starts nothing")
    assert isinstance(_plan(cfg, active_runs={"llmops_train": 0, "llmops_retrain": 0}), RetrainPlan)


def _deployed(cfg, version: int, status: str = "deployed") -> dt.datetime:
    """Write the deploy report of ``version`` as llmops_deploy does; returns when (its manifest's time)."""
    from llmops.serving.deploy import write_deploy_report

    result = DeployResult(name="llmops", version=version, model_uri=f"models:/llmops/{version}", previous=None,
                          status=status)
    report = write_deploy_report(cfg, result)
    return dt.datetime.fromisoformat(report.manifest.created_at)


@pytest.mark.parametrize("trigger", ["drift", "schedule"])
def test_a_fresh_champion_is_in_cooldown_for_drift_and_schedule(cfg, champion, trigger):
    deployed = _deployed(cfg, 1)
    cfg = with_overrides(cfg, {"retrain": {"cooldown": "6h"}})
    assert _plan(cfg, trigger, now=deployed + dt.timedelta(seconds=60)) == (
        f"cooldown: champion v1 was deployed at {deployed:%Y-%m-%d %H:%M:%S} UTC; retrain.cooldown 6h leaves 359 min")
    assert isinstance(_plan(cfg, trigger, now=deployed + dt.timedelta(hours=6, seconds=1)), RetrainPlan)


def test_a_person_or_a_zero_cooldown_is_not_held_by_it(cfg, champion):
    soon = _deployed(cfg, 1) + dt.timedelta(seconds=60)
    manual = _plan(cfg, "manual", now=soon)
    assert isinstance(manual, RetrainPlan)
    assert (manual.champion.version, manual.champion.model_uri, manual.champion.data_card) == (
        "1", "models:/llmops/1", str(card_dir(cfg, CARD)))
    assert (manual.champion.trigger, manual.champion.run_id) == ("manual", "manual__1")
    assert isinstance(_plan(with_overrides(cfg, {"retrain": {"cooldown": "0"}}), now=soon), RetrainPlan)


def test_a_deployment_of_another_version_is_no_cooldown(cfg, champion):
    soon = _deployed(cfg, 2) + dt.timedelta(seconds=60)  # v2 deployed, then rolled back by hand in the registry
    assert isinstance(_plan(cfg, now=soon), RetrainPlan)


def test_a_deploy_that_found_the_champion_already_serving_restarts_no_cooldown(cfg, champion):
    soon = _deployed(cfg, 1, status="already serving") + dt.timedelta(seconds=60)
    assert isinstance(_plan(cfg, now=soon), RetrainPlan)


def test_a_manual_plan_names_the_newest_drift_reported_on_its_champion(cfg, champion):
    guards.record(cfg, _decision(1, champion_version="1", drift_report="/reports/drift/a/drift.json"))
    guards.record(cfg, _decision(2, champion_version="1", drift_report="/reports/drift/b/drift.json"))
    guards.record(cfg, _decision(3, champion_version="1"))  # a scheduled run: no report
    guards.record(cfg, _decision(4, champion_version="0", drift_report="/reports/drift/c/drift.json"))
    manual = _plan(cfg, "manual")
    assert isinstance(manual, RetrainPlan) and manual.champion.drift_report == "/reports/drift/b/drift.json"
    drift = _plan(cfg, "drift", drift_report="/reports/drift/d/drift.json")
    assert isinstance(drift, RetrainPlan) and drift.champion.drift_report == "/reports/drift/d/drift.json"
    scheduled = _plan(cfg, "schedule")
    assert isinstance(scheduled, RetrainPlan) and scheduled.champion.drift_report is None


# ---- the record ------------------------------------------------------------------------


def test_decisions_read_back_what_was_recorded(cfg):
    assert guards.decisions(cfg) == []
    recorded = [guards.record(cfg, _decision(n, outcome="started" if n else "skipped", champion_version="1",
                                             content={"shards": f"s{n}"})) for n in range(3)]
    assert guards.decisions(cfg) == recorded
    assert cfg.layout.retrain_decisions.read_text().count("\n") == 3


def test_a_line_cut_short_is_skipped_and_the_others_read(cfg):
    recorded = [guards.record(cfg, _decision(n)) for n in range(2)]
    with open(cfg.layout.retrain_decisions, "a") as fh:
        fh.write(_decision(2).model_dump_json()[:40])  # a crash in the middle of a write
    assert guards.decisions(cfg) == recorded


def test_a_decision_recorded_after_a_line_cut_short_is_read(cfg):
    recorded = [guards.record(cfg, _decision(n)) for n in range(2)]
    with open(cfg.layout.retrain_decisions, "a") as fh:
        fh.write(_decision(2).model_dump_json()[:40])
    after = guards.record(cfg, _decision(3))
    assert guards.decisions(cfg) == [*recorded, after]


# ---- a failed attempt on the same data -------------------------------------------------


CONTENT = {"shards": "s1", "vocab": "v1", "qa": "q1"}
KEY = "abcdef0123456789"


def _started(cfg, n: int, key: str = KEY, content: dict[str, str] = CONTENT) -> RetrainDecision:
    return guards.record(cfg, _decision(n, outcome="started", reason="published", champion_version="1",
                                        data_card=str(card_dir(cfg, key)), content=content))


def _evaluation(cfg, key: str, gate: str, minute: int) -> str:
    """An evaluation run of a model trained on data card ``key`` that ``gate``-ed; returns its id."""
    client = tracking.connect(tracking.tracking_uri(cfg))
    start = int((NOW + dt.timedelta(minutes=minute)).timestamp() * 1000)
    run = client.create_run(tracking.ensure_experiment(cfg, client), start_time=start,
                            tags={"data_card_hash": key, "gate_result": gate})
    return run.info.run_id


def test_no_decision_is_no_failed_attempt(cfg):
    assert guards.failed_attempt(cfg, CONTENT) is None


def test_a_retraining_on_the_same_data_that_failed_the_gate_is_found(cfg):
    decision = _started(cfg, 1)
    assert guards.failed_attempt(cfg, CONTENT) is None  # its model was not evaluated yet
    _evaluation(cfg, "fedcba9876543210", "failed", minute=2)  # another card's model
    assert guards.failed_attempt(cfg, CONTENT) is None
    run_id = _evaluation(cfg, KEY, "failed", minute=3)
    client = tracking.connect(tracking.tracking_uri(cfg))  # a later run of the same card that is no evaluation
    client.create_run(tracking.ensure_experiment(cfg, client), start_time=int(NOW.timestamp() * 1000) + 600_000,
                      tags={"data_card_hash": KEY})
    found = guards.failed_attempt(cfg, CONTENT)
    assert found is not None and (found.decision, found.evaluation_run) == (decision, run_id)
    assert found.reason.startswith(f"already failed the gate (run {decision.run_id}, evaluation {run_id}; "
                                   f"data card {card_dir(cfg, KEY)})")
    assert guards.failed_attempt(cfg, CONTENT | {"shards": "s2"}) is None  # new data


def test_a_newer_evaluation_that_passed_clears_the_failure(cfg):
    _started(cfg, 1)
    _evaluation(cfg, KEY, "failed", minute=2)
    _evaluation(cfg, KEY, "passed", minute=3)
    assert guards.failed_attempt(cfg, CONTENT) is None


def test_every_retraining_on_the_same_data_counts_and_the_newest_evaluation_decides(cfg):
    _started(cfg, 1, key=KEY)
    _evaluation(cfg, KEY, "failed", minute=2)
    guards.record(cfg, _decision(3, champion_version="1", content=CONTENT, data_card="/elsewhere"))  # skipped
    assert guards.failed_attempt(cfg, CONTENT) is not None
    # Cleared by hand: the same data published again under a new card; its training is reused,
    # so the model it evaluates names the first card. Until then the failure stands.
    cleared = _started(cfg, 4, key="0123456789abcdef")
    found = guards.failed_attempt(cfg, CONTENT)
    assert found is not None and found.decision == cleared
    _evaluation(cfg, KEY, "failed", minute=5)  # the reused model failed again
    assert guards.failed_attempt(cfg, CONTENT) is not None
    _evaluation(cfg, KEY, "passed", minute=6)
    assert guards.failed_attempt(cfg, CONTENT) is None
