from __future__ import annotations

import pytest

from llmops.evaluation.gate import GateConfigError, GateThresholds, load_thresholds, run_gate
from llmops.records.evaluation import EvalMetrics

THRESHOLDS = GateThresholds.model_validate({
    "floors": {"bits_per_byte": {"max": 2.0}, "pii_leak_rate": {"max": 0.0}, "behaviour_pass_rate": {"min": 1.0}},
    "regression": {"bits_per_byte": {"max_regression": 0.05}, "rougeL": {"max_regression": 0.02}},
})
GOOD = EvalMetrics(bits_per_byte=1.7, pii_leak_rate=0.0, behaviour_pass_rate=1.0, rougeL=0.30, eval_data_hash="abc")


def good(**changes) -> EvalMetrics:
    return GOOD.model_copy(update=changes)


def test_the_first_model_meets_only_the_floors():
    result = run_gate(GOOD, None, THRESHOLDS)
    assert result.passed and not result.champion_compared
    assert {c.kind for c in result.checks} == {"floor"}
    assert result.tags()["gate_result"] == "passed"


def test_each_failed_check_is_named_with_its_numbers():
    bad = good(bits_per_byte=2.4, pii_leak_rate=0.1)
    result = run_gate(bad, None, THRESHOLDS)
    assert not result.passed
    assert sorted(c.metric for c in result.failed) == ["bits_per_byte", "pii_leak_rate"]
    message = result.failure_message()
    assert "bits_per_byte 2.4 (floor: <= 2)" in message and "pii_leak_rate 0.1 (floor: <= 0)" in message
    assert result.tags()["gate_result"] == "failed"


def test_regression_against_the_champion_in_the_metrics_direction():
    champion = good(bits_per_byte=1.60, rougeL=0.31)
    slightly_worse = good(bits_per_byte=1.64, rougeL=0.295)
    assert run_gate(slightly_worse, champion, THRESHOLDS).passed
    worse = good(bits_per_byte=1.70, rougeL=0.28)
    result = run_gate(worse, champion, THRESHOLDS)
    assert sorted(c.name for c in result.failed) == ["regression.bits_per_byte", "regression.rougeL"]
    assert "vs champion 1.6 (allowed: +0.05)" in result.failure_message()


def test_champion_numbers_from_other_evaluation_data_are_refused():
    with pytest.raises(ValueError, match="re-evaluate the champion"):
        run_gate(GOOD, good(eval_data_hash="other"), THRESHOLDS)


def test_a_metric_the_gate_needs_but_lacks_fails():
    result = run_gate(good(behaviour_pass_rate=None), None, THRESHOLDS)
    assert [c.metric for c in result.failed] == ["behaviour_pass_rate"]
    assert "missing" in result.failure_message()
    # a metric no model measures (a typo in the gate file) fails too
    typo = GateThresholds.model_validate({"floors": {"rouge_l": {"min": 0.1}}})
    assert [c.metric for c in run_gate(GOOD, None, typo).failed] == ["rouge_l"]


def test_shipped_thresholds_load_and_bad_files_fail(tmp_path):
    shipped = load_thresholds()
    assert shipped.floors["pii_leak_rate"].max == 0.0 and shipped.floors["behaviour_pass_rate"].min == 1.0
    bad = tmp_path / "gate.yaml"
    bad.write_text("floors:\n  bleu: {minimum: 3}\n")
    with pytest.raises(GateConfigError, match="floors.bleu"):
        load_thresholds(bad)
    with pytest.raises(GateConfigError, match="do not exist"):
        load_thresholds(tmp_path / "missing.yaml")


def test_a_floor_the_champion_fails_too_on_the_same_data_is_waived_and_regression_decides():
    """New pages are harder text: both models are past the bits-per-byte floor there. The floor
    does not decide; the regression check on the same data does (and still can fail)."""
    champion = good(bits_per_byte=3.03, rougeL=0.11)
    better = good(bits_per_byte=2.91, rougeL=0.12)
    result = run_gate(better, champion, THRESHOLDS)
    assert result.passed
    (floor,) = [c for c in result.checks if c.name == "floor.bits_per_byte.max"]
    assert floor.waived and floor.champion == 3.03 and "waived: the champion is outside it too" in floor.describe()
    worse = run_gate(good(bits_per_byte=3.10, rougeL=0.12), champion, THRESHOLDS)
    assert [c.name for c in worse.failed] == ["regression.bits_per_byte"]
    # no champion, or a champion within the floor: the floor decides
    assert [c.name for c in run_gate(better, None, THRESHOLDS).failed] == ["floor.bits_per_byte.max"]
    assert "floor.bits_per_byte.max" in [c.name for c in run_gate(better, good(bits_per_byte=1.9),
                                                                   THRESHOLDS).failed]
    # a floor without a regression rule is never waived
    assert [c.name for c in run_gate(good(behaviour_pass_rate=0.75), good(behaviour_pass_rate=0.5),
                                     THRESHOLDS).failed] == ["floor.behaviour_pass_rate.min"]
