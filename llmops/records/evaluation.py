"""Records of the evaluation and the registry: the PII canaries probed, the metrics the gate
decides on, its verdict, the report's ``metrics.json`` and manifest summary, the evaluate
task's result (the XCom ``gate`` and ``register`` read) and the registered version.

The evaluation also reads ``llmops_model.json`` (``records.training.ModelInfo``), the data
card (``records.data.DataCard``) and the demo site's ground truth (``records.crawl.GroundTruth``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from llmops.records.base import Record
from llmops.records.common import Ref

LOWER_IS_BETTER = frozenset({"perplexity", "bits_per_byte", "pii_leak_rate", "latency_s_p50", "latency_s_p95"})
"""Metrics where a smaller value is better; every other gated metric is higher-is-better."""


# ---- what the evaluation probes ------------------------------------------------------------


class PiiCanary(Ref):
    """A planted PII value the leak check probes for: an item of a ``--canaries`` file, or a
    value of the demo site's ground truth (``llmops.records.crawl.PlantedPii``, which also
    says on which page and where it was planted)."""

    type: str
    value: str
    page: str | None = None
    where: str | None = None


# ---- metrics and the gate ------------------------------------------------------------------


class EvalMetrics(Ref):
    """Every number the gate decides on, for one model on one evaluation set. A value is
    None (left out of the JSON) where it could not be measured (no bytes to divide by, a
    non-finite result): a gate check on it fails."""

    perplexity: float | None = None
    bits_per_byte: float | None = None
    bleu: float | None = None
    rouge1: float | None = None
    rouge2: float | None = None
    rougeL: float | None = None  # noqa: N815 - the metric's name, as MLflow and the gate file spell it
    exact_match: float | None = None
    distinct_1: float | None = None
    distinct_2: float | None = None
    latency_s_p50: float | None = None
    latency_s_p95: float | None = None
    tokens_per_s: float | None = None
    pii_leak_rate: float | None = None
    behaviour_pass_rate: float | None = None
    eval_data_hash: str
    """What the numbers were measured on: numbers of two models compare only when it is equal."""

    def number(self, metric: str) -> float | None:
        """The value of ``metric`` (any name: one the gate file names but no model measures is None)."""
        value = getattr(self, metric, None) if metric in type(self).model_fields else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def numbers(self) -> dict[str, float]:
        """The measured values by name, in field order: what MLflow logs as metrics."""
        return {name: value for name in type(self).model_fields if (value := self.number(name)) is not None}


class GateCheck(Ref):
    """One gate check and the numbers it was decided on."""

    name: str
    metric: str
    kind: Literal["floor", "regression"]
    passed: bool
    value: float | None = None
    """None: the metric was not measured (the check fails)."""
    threshold: float
    champion: float | None = None
    waived: str | None = None
    """A floor the champion, re-evaluated on the same data, is outside of too: why it does not
    decide (the metric's regression check does)."""

    def describe(self) -> str:
        value = "missing" if self.value is None else f"{self.value:.4g}"
        if self.kind == "floor":
            op = "<=" if self.metric in LOWER_IS_BETTER else ">="
            return f"{self.metric} {value} (floor: {op} {self.threshold:.4g}" + (
                f"; waived: {self.waived})" if self.waived else ")")
        direction = "+" if self.metric in LOWER_IS_BETTER else "-"
        return (f"{self.metric} {value} vs champion {self.champion:.4g} "
                f"(allowed: {direction}{self.threshold:.4g})")


class GateResult(Ref):
    """The gate's verdict: passed only if every check passed."""

    passed: bool
    champion_compared: bool = False
    checks: list[GateCheck] = []

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def failure_message(self) -> str:
        if self.passed:
            return "gate passed"
        return "gate failed: " + "; ".join(c.describe() for c in self.failed)

    def tags(self) -> dict[str, str]:
        """Model-version tags: the result and one per check."""
        tags = {"gate_result": "passed" if self.passed else "failed"}
        for c in self.checks:
            tags[f"gate.{c.name}"] = f"{'passed' if c.passed else 'failed'}: {c.describe()}"
        return tags


# ---- the report ----------------------------------------------------------------------------


class EvaluatedOn(Ref):
    """What one evaluation read: the summary in its report's manifest."""

    tokens: str
    """The token shards (their validation split) scored for perplexity and bits per byte."""
    heldout: str
    """The held-out question/answer pairs the answers were scored on."""
    cases: str
    """The behaviour case file."""
    canaries: str
    """Where the planted PII values came from (a file, or the demo site's ground truth)."""
    n_canaries: int
    questions: int


class EvaluationReport(Record):
    """``metrics.json`` in an evaluation report: the numbers and the verdict the report shows."""

    NAME: ClassVar[str] = "metrics.json"

    model: str
    """What was evaluated: a directory or a ``models:/`` URI, as given."""
    metrics: EvalMetrics
    champion: EvalMetrics | None = None
    """The champion's numbers on the same evaluation data, when one was compared."""
    gate: GateResult | None = None


# ---- the evaluate task's result and the registered version ---------------------------------


class ModelLineage(Ref):
    """Where a model came from: tags on its evaluation run and its registered version
    (values are written as text; a missing one reads ``None``)."""

    data_card_hash: str | None = None
    tokenizer_hash: str | None = None
    base_model: str
    training_run: str | None = None
    code_version: str | None = None
    eval_data_hash: str
    champion_compared: str
    base_version: str | None = None
    """A retrained model: the champion version it continued from (tag ``llmops.base_version``)."""
    drift_report: str | None = None
    """A retrained model: the ``drift.json`` that triggered it (tag ``llmops.drift_report``)."""

    TAG_NAMES: ClassVar[dict[str, str]] = {"base_version": "llmops.base_version",
                                           "drift_report": "llmops.drift_report"}
    """Fields tagged under another name; unset ones are not tagged."""

    def tags(self) -> dict[str, str]:
        return {self.TAG_NAMES.get(name, name): str(getattr(self, name)) for name in type(self).model_fields
                if name not in self.TAG_NAMES or getattr(self, name) is not None}


class CandidateEvaluation(Record):
    """A model evaluated, compared with the champion and recorded in MLflow: the XCom the
    ``evaluate`` task returns, which ``gate`` and ``register`` read."""

    name: str
    """The registered model it would become a version of (``llmops``, ``llmops-<variant>``)."""
    model_dir: str
    run_id: str
    """The MLflow run holding its metrics, report and ``gate_result``."""
    metrics: EvalMetrics
    gate: GateResult
    gate_passed: bool
    gate_message: str
    gate_tags: dict[str, str]
    lineage: ModelLineage
    report: str
    """``report.md`` of the evaluation report."""
    model_card: str


class AlreadyRegistered(Record):
    """A model whose content is registered already: nothing was evaluated or recorded."""

    name: str
    model_dir: str
    already_registered: str
    """``models:/<name>/<N>`` of the version with this content."""
    message: str


def load_evaluation(data: Mapping[str, Any] | BaseModel, *,
                    source: str = "") -> CandidateEvaluation | AlreadyRegistered:
    """The evaluate task's result, either kind (an XCom, a stored file)."""
    if isinstance(data, (CandidateEvaluation, AlreadyRegistered)):
        return data
    if isinstance(data, Mapping) and "already_registered" in data:
        return AlreadyRegistered.load(data, source=source)
    return CandidateEvaluation.load(data, source=source)


class RegisteredVersion(Record):
    """A model version registered as ``challenger``: the ``register`` task's XCom."""

    name: str
    version: str
    model_uri: str
    """``models:/<name>/<version>``."""
    report: str
    run_id: str
