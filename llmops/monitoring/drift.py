"""Drift statistics: a window of traffic against the reference, signal by signal.

Decisions use effect sizes with thresholds from the configuration (``monitor.thresholds``),
never p-values alone: with thousands of requests every test rejects, and with twenty none
does (modyn's authors found plain hypothesis tests "oversensitive and not very useful in
practice"). The p-value of the matching test (KS, chi²) is reported beside the distance for
context. Every statistic is scipy's; nothing here is a home-made test.

- data signals: prompt length (normalised Wasserstein, KS for context), the question tokens'
  distribution over the champion corpus's top-K ids plus ``other`` (Jensen–Shannon distance,
  PSI), bytes per token (normalised Wasserstein), language shares (Cramér's V from chi²);
- quality signals: the median bits per byte of the questions (window over reference), the
  rise in empty answers and in answers stopped at ``max_tokens``.

A window *drifted* when at least ``monitor.vote`` of those features crossed their thresholds
(JS and PSI read the same token counts and vote once);
the check reports drift only when ``monitor.persistence`` consecutive windows drifted
(:func:`verdict`). :func:`calibrate` measures the false-alarm rate of the thresholds on
windows resampled from the reference itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

from llmops.config import DriftThresholds, MonitorConfig
from llmops.monitoring.log import ANSWERED
from llmops.records.monitoring import Calibration, Signal, Verdict, WindowResult

_EPS = 1e-4
"""Added to every token bucket's share before PSI's logarithm (an empty bucket would be infinite)."""


@dataclass
class Sample:
    """The measurements of a set of requests, one column per feature (one row per request)."""

    lengths: np.ndarray
    """Prompt tokens of every row."""
    bytes_per_token: np.ndarray
    bits_per_byte: np.ndarray
    tokens: np.ndarray
    """``[rows, K + 1]`` counts over the top-K ids, ``other`` last."""
    languages: list[str]
    generated: np.ndarray
    """The row is an answered request (held-out reference questions are scored, not answered)."""
    empty: np.ndarray
    length_limited: np.ndarray
    times: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def of(cls, records: Sequence[Any], vocabulary: Sequence[int]) -> Sample:
        """Columns from ``InferenceRecord``s; ``vocabulary`` is the top-K ids the model counted."""
        column = {str(t): i for i, t in enumerate(vocabulary)}
        tokens = np.zeros((len(records), len(vocabulary) + 1), dtype=np.float32)
        for row, record in enumerate(records):
            for token, count in record.top_token_counts.items():
                index = column.get(token)
                # An id outside this vocabulary (another version's list) counts as other.
                tokens[row, len(vocabulary) if index is None else index] += count
            tokens[row, -1] += record.other_tokens
        return cls(
            lengths=np.array([r.prompt_tokens for r in records], dtype=np.float64),
            bytes_per_token=np.array([r.bytes_per_token for r in records], dtype=np.float64),
            bits_per_byte=np.array([r.bits_per_byte for r in records], dtype=np.float64),
            tokens=tokens,
            languages=[r.language for r in records],
            generated=np.array([r.finish_reason in ANSWERED for r in records], dtype=bool),
            empty=np.array([r.empty_answer for r in records], dtype=bool),
            length_limited=np.array([r.finish_reason == "length" for r in records], dtype=bool),
            times=np.array([r.time for r in records], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.lengths)

    def take(self, rows: np.ndarray | Sequence[int]) -> Sample:
        rows = np.asarray(rows, dtype=np.int64)
        return Sample(self.lengths[rows], self.bytes_per_token[rows], self.bits_per_byte[rows], self.tokens[rows],
                      [self.languages[i] for i in rows], self.generated[rows], self.empty[rows],
                      self.length_limited[rows], self.times[rows] if len(self.times) else self.times)

    def token_shares(self) -> np.ndarray:
        total = self.tokens.sum(axis=0)
        return total / total.sum() if total.sum() else total


# ---- the signals -----------------------------------------------------------------------------


def _normalised_wasserstein(reference: np.ndarray, window: np.ndarray) -> float:
    # Divided by the reference's spread, as Evidently normalises it, so one threshold fits
    # lengths in tokens and bytes per token alike; a constant reference divides by 1.
    scale = float(np.std(reference)) or 1.0
    return float(stats.wasserstein_distance(reference, window)) / scale


def _distribution(name: str, threshold: float, reference: np.ndarray, window: np.ndarray) -> Signal:
    if len(reference) < 2 or len(window) < 2:
        return Signal(name=name, kind="data", threshold=threshold, reason="fewer than 2 values on a side")
    value = _normalised_wasserstein(reference, window)
    return Signal(name=name, kind="data", value=value, threshold=threshold, drifted=value > threshold,
                  reference=float(np.median(reference)), window=float(np.median(window)),
                  p_value=float(stats.ks_2samp(reference, window).pvalue))


def _tokens(t: DriftThresholds, reference: Sample, window: Sample) -> list[Signal]:
    p, q = reference.token_shares(), window.token_shares()
    if not p.sum() or not q.sum():
        reason = "no question tokens counted on a side"
        return [Signal(name="token_js", kind="data", threshold=t.token_js, reason=reason),
                Signal(name="token_psi", kind="data", threshold=t.token_psi, reason=reason)]
    js = float(jensenshannon(p, q, base=2))
    ps, qs = p + _EPS, q + _EPS
    psi = float(np.sum((qs - ps) * np.log(qs / ps)))
    other = len(p) - 1
    return [Signal(name="token_js", kind="data", value=js, threshold=t.token_js, drifted=js > t.token_js,
                   reference=float(p[other]), window=float(q[other])),
            Signal(name="token_psi", kind="data", value=psi, threshold=t.token_psi, drifted=psi > t.token_psi)]


def _languages(threshold: float, reference: Sample, window: Sample) -> Signal:
    ref, win = Counter(reference.languages), Counter(window.languages)
    names = sorted(set(ref) | set(win))
    top = max(ref, key=lambda k: ref[k]) if ref else ""
    # The shares of the reference's main language, shown beside the effect size.
    ref_share, win_share = ref[top] / max(len(reference), 1), win[top] / max(len(window), 1)
    if len(names) < 2:  # one language on both sides: nothing moved
        return Signal(name="language_cramers_v", kind="data", value=0.0, threshold=threshold, reference=ref_share,
                      window=win_share)
    table = np.array([[ref[n] for n in names], [win[n] for n in names]], dtype=np.float64)
    chi2, p_value, _, _ = stats.chi2_contingency(table)
    value = float(np.sqrt(chi2 / table.sum()))  # Cramér's V of a 2 x L table
    return Signal(name="language_cramers_v", kind="data", value=value, threshold=threshold,
                  drifted=value > threshold, p_value=float(p_value), reference=ref_share, window=win_share)


def _bits_per_byte(threshold: float, reference: Sample, window: Sample) -> Signal:
    ref, win = reference.bits_per_byte[reference.bits_per_byte > 0], window.bits_per_byte[window.bits_per_byte > 0]
    if not len(ref) or not len(win):
        return Signal(name="bits_per_byte_ratio", kind="quality", threshold=threshold,
                      reason="no measured question on a side")
    r, w = float(np.median(ref)), float(np.median(win))
    value = w / r if r else float("inf")
    return Signal(name="bits_per_byte_ratio", kind="quality", value=value, threshold=threshold,
                  drifted=value > threshold, reference=r, window=w,
                  p_value=float(stats.mannwhitneyu(ref, win).pvalue))


def _rate(name: str, threshold: float, reference: Sample, window: Sample, column: str) -> Signal:
    ref_n, win_n = int(reference.generated.sum()), int(window.generated.sum())
    if not ref_n or not win_n:
        return Signal(name=name, kind="quality", threshold=threshold,
                      reason="no answered request in the reference yet" if not ref_n else "no answered request")
    r = float(getattr(reference, column)[reference.generated].mean())
    w = float(getattr(window, column)[window.generated].mean())
    return Signal(name=name, kind="quality", value=w - r, threshold=threshold, drifted=w - r > threshold,
                  reference=r, window=w)


def compare(reference: Sample, window: Sample, thresholds: DriftThresholds) -> list[Signal]:
    """Every data and quality signal of ``window`` against ``reference``."""
    t = thresholds
    return [
        _distribution("length_wasserstein", t.length_wasserstein, reference.lengths, window.lengths),
        *_tokens(t, reference, window),
        _distribution("bytes_per_token_wasserstein", t.bytes_per_token_wasserstein,
                      reference.bytes_per_token[reference.bytes_per_token > 0],
                      window.bytes_per_token[window.bytes_per_token > 0]),
        _languages(t.language_cramers_v, reference, window),
        _bits_per_byte(t.bits_per_byte_ratio, reference, window),
        _rate("empty_answer_rate", t.empty_answer_rate, reference, window, "empty"),
        _rate("length_limit_rate", t.length_limit_rate, reference, window, "length_limited"),
    ]


FEATURE = {"token_js": "tokens", "token_psi": "tokens"}
"""Signals that read the same feature: they vote once, or one noisy feature would be a majority."""


def votes(signals: Sequence[Signal]) -> int:
    """Data and quality features with a signal over its threshold (each feature votes once)."""
    return len({FEATURE.get(s.name, s.name) for s in signals if s.drifted and s.kind != "service"})


def judge(reference: Sample, window: Sample, monitor: MonitorConfig, *, start: float, end: float,
          refused: int = 0, errors: int = 0) -> WindowResult:
    """One window's signals and whether it drifted (``monitor.vote`` features crossed)."""
    enough = len(window) >= monitor.min_requests
    signals = compare(reference, window, monitor.thresholds) if len(window) else []
    count = votes(signals)
    return WindowResult(start=start, end=end, requests=len(window), refused=refused, errors=errors, signals=signals,
                        votes=count, drifted=enough and count >= monitor.vote, enough_data=enough)


def verdict(windows: Sequence[WindowResult], monitor: MonitorConfig) -> Verdict:
    """``not_enough_data`` when the latest window is too small; ``drift`` when the last
    ``monitor.persistence`` windows all drifted; else ``no_drift``."""
    if not windows or not windows[-1].enough_data:
        return "not_enough_data"
    recent = windows[-monitor.persistence:]
    return "drift" if len(recent) == monitor.persistence and all(w.drifted for w in recent) else "no_drift"


# ---- calibration -------------------------------------------------------------------------------


def calibrate(reference: Sample, window_requests: int, monitor: MonitorConfig, *, seed: int = 0) -> Calibration:
    """How often the thresholds call drift on traffic that did not move.

    ``monitor.calibration_windows`` windows of ``window_requests`` rows are drawn from the
    reference; each is compared with the rest of the reference (never with itself, which
    would flatter the thresholds), and the share that reaches the vote is the false-alarm
    rate of one window. (Persistence lowers the rate of a drift verdict further.)
    """
    rng = np.random.default_rng(seed)
    n = len(reference)
    size = min(window_requests, n // 2)
    if size < 2:
        return Calibration(windows=0, window_requests=size, false_alarms=0, false_alarm_rate=0.0)
    crossed: Counter[str] = Counter()
    alarms = 0
    for _ in range(monitor.calibration_windows):
        rows = rng.permutation(n)
        window, rest = reference.take(rows[:size]), reference.take(rows[size:])
        signals = compare(rest, window, monitor.thresholds)
        crossed.update(s.name for s in signals if s.drifted)
        alarms += votes(signals) >= monitor.vote
    k = monitor.calibration_windows
    names = [s.name for s in signals]
    return Calibration(windows=k, window_requests=size, false_alarms=alarms, false_alarm_rate=alarms / k,
                       signal_rates={name: crossed[name] / k for name in names})


def detection_delay(reference: Sample, normal: Sample, shifted: Sample, window_requests: int,
                    monitor: MonitorConfig) -> int | None:
    """Windows of ``shifted`` traffic (after one window of ``normal``) until the verdict is
    drift; None if it never is. The calibration's second number: how fast a shift is caught."""
    windows = [judge(reference, normal.take(range(min(window_requests, len(normal)))), monitor, start=0, end=0)]
    for k, first in enumerate(range(0, len(shifted) - window_requests + 1, window_requests), 1):
        windows.append(judge(reference, shifted.take(range(first, first + window_requests)), monitor,
                             start=0, end=0))
        if verdict(windows, monitor) == "drift":
            return k
    return None

