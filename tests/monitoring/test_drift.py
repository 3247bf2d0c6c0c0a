"""Drift statistics on synthetic inference records: each signal moves when its feature moves,
windows vote, persistence keeps one odd window from calling drift, and the calibration
measures the thresholds' false alarms on the reference itself."""

from __future__ import annotations

import numpy as np
import pytest

from llmops.config import MonitorConfig
from llmops.monitoring import drift
from llmops.monitoring.check import DriftCheckError, Window
from llmops.monitoring.log import InferenceRecord

VOCABULARY = list(range(32))


def records(n: int, *, seed: int, shift: bool = False, language: str = "en") -> list:
    """Requests like the demo's: short questions over the common ids. ``shift`` moves the
    topic: longer questions over rarer ids, less predictable (higher bits per byte)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        tokens = int(rng.integers(9, 16) if shift else rng.integers(3, 7))
        ids = rng.integers(16, 40, tokens) if shift else rng.integers(0, 20, tokens)
        counts: dict[str, int] = {}
        for t in ids:
            if t < len(VOCABULARY):
                counts[str(t)] = counts.get(str(t), 0) + 1
        question_bytes = int(tokens * rng.uniform(3.0, 4.0))
        bpb = float(rng.normal(3.0 if shift else 2.0, 0.2))
        out.append(InferenceRecord(
            time=1000.0 + k, model="llmops", version="1", instance="i", finish_reason="stop", compute_ms=50.0,
            batch_size=1, prompt_tokens=tokens + 6, completion_tokens=8, question_bytes=question_bytes,
            question_tokens=tokens, bytes_per_token=question_bytes / tokens, language=language,
            top_token_counts=counts, other_tokens=int(sum(t >= len(VOCABULARY) for t in ids)),
            nll=bpb * question_bytes * np.log(2), bits_per_byte=bpb))
    return out


def sample(rows: list) -> drift.Sample:
    return drift.Sample.of(rows, VOCABULARY)


MONITOR = MonitorConfig()
REFERENCE = sample(records(80, seed=0))


def signals(window: drift.Sample) -> dict[str, object]:
    return {s.name: s for s in drift.compare(REFERENCE, window, MONITOR.thresholds)}


def test_traffic_like_the_reference_crosses_no_threshold() -> None:
    crossed = [name for name, s in signals(sample(records(40, seed=1))).items() if s.drifted]
    assert crossed == []


def test_a_topic_shift_moves_the_data_and_quality_signals() -> None:
    got = signals(sample(records(40, seed=2, shift=True)))
    for name in ("length_wasserstein", "token_js", "token_psi", "bits_per_byte_ratio"):
        assert got[name].drifted, (name, got[name])
    assert got["bits_per_byte_ratio"].value == pytest.approx(1.5, abs=0.1)
    assert got["length_wasserstein"].p_value < 0.01  # the KS test agrees, shown for context


def test_another_language_moves_the_language_signal_alone() -> None:
    got = signals(sample(records(40, seed=3, language="de")))
    assert got["language_cramers_v"].drifted and got["language_cramers_v"].value > 0.9
    assert sum(s.drifted for s in got.values()) == 1  # one signal never reaches the vote of 2


def test_answer_rates_compare_answered_requests_only() -> None:
    rows = records(40, seed=4)
    for r in rows[:20]:
        r.finish_reason = "length"
    got = signals(sample(rows))
    assert got["length_limit_rate"].value == pytest.approx(0.5) and got["length_limit_rate"].drifted
    held_out = records(10, seed=5)
    for r in held_out:  # scored questions, never answered
        r.finish_reason = ""
    (rate,) = [s for s in drift.compare(sample(held_out), sample(rows), MONITOR.thresholds)
               if s.name == "empty_answer_rate"]
    assert rate.value is None and "reference" in (rate.reason or "")


def judge(window: list) -> object:
    return drift.judge(REFERENCE, sample(window), MONITOR, start=0, end=1)


def test_persistence_one_odd_window_is_no_drift_two_in_a_row_are() -> None:
    normal, odd = judge(records(30, seed=6)), judge(records(30, seed=7, shift=True))
    assert odd.drifted and not normal.drifted
    assert drift.verdict([normal, odd], MONITOR) == "no_drift"
    assert drift.verdict([odd, normal], MONITOR) == "no_drift"
    assert drift.verdict([normal, odd, judge(records(30, seed=8, shift=True))], MONITOR) == "drift"


def test_a_small_window_is_not_enough_data_and_never_drifted() -> None:
    tiny = judge(records(MONITOR.min_requests - 1, seed=9, shift=True))
    assert not tiny.enough_data and not tiny.drifted
    assert drift.verdict([judge(records(30, seed=10, shift=True)), tiny], MONITOR) == "not_enough_data"
    assert drift.verdict([], MONITOR) == "not_enough_data"


def test_calibration_counts_false_alarms_on_windows_resampled_from_the_reference() -> None:
    calibration = drift.calibrate(REFERENCE, 30, MONITOR)
    assert calibration.windows == MONITOR.calibration_windows and calibration.window_requests == 30
    assert calibration.false_alarm_rate <= 0.05
    strict = MONITOR.model_copy(update={"thresholds": MONITOR.thresholds.model_copy(
        update={"length_wasserstein": 1e-6, "token_js": 1e-6})})
    assert drift.calibrate(REFERENCE, 30, strict).false_alarm_rate == 1.0  # thresholds at zero: every window alarms


def test_detection_delay_counts_shifted_windows_until_drift() -> None:
    delay = drift.detection_delay(REFERENCE, sample(records(30, seed=11)), sample(records(90, seed=12, shift=True)),
                                  30, MONITOR)
    assert delay == MONITOR.persistence


@pytest.mark.parametrize(("text", "requests", "seconds"), [("200", 200, None), ("90s", None, 90.0),
                                                            ("30m", None, 1800.0), (" 1.5h ", None, 5400.0)])
def test_window_is_requests_or_a_duration(text: str, requests: int | None, seconds: float | None) -> None:
    window = Window.parse(text)
    assert (window.requests, window.seconds) == (requests, seconds)


@pytest.mark.parametrize("text", ["", "1", "1w", "-5", "h"])
def test_a_bad_window_says_how_to_write_one(text: str) -> None:
    with pytest.raises(DriftCheckError, match="number of requests|at least 2"):
        Window.parse(text)


def test_two_signals_of_one_feature_are_one_vote() -> None:
    """JS and PSI read the same token counts: a token shift alone must not reach a vote of 2."""
    from llmops.records.monitoring import Signal

    crossed = [Signal(name="token_js", kind="data", value=0.9, threshold=0.45, drifted=True),
               Signal(name="token_psi", kind="data", value=3.0, threshold=1.6, drifted=True),
               Signal(name="p95_latency_ms", kind="service", value=9e3, threshold=5e3, drifted=True)]
    assert drift.votes(crossed) == 1
    assert drift.votes([*crossed, Signal(name="bits_per_byte_ratio", kind="quality", value=1.5, threshold=1.2,
                                         drifted=True)]) == 2
