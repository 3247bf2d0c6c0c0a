"""The evaluation gate: a challenger reaches users only if every check passes.

Two kinds of check, both read from ``include/eval/gate.yaml``:

* **floors**: absolute bounds every model must meet (``min`` for higher-is-better
  metrics, ``max`` for lower-is-better ones). The first model ever has no champion, so
  floors are all that apply to it.
* **regression**: how much worse than the champion the challenger may be, per metric,
  in the metric's own units. The champion's numbers must come from re-evaluating it on
  the challenger's evaluation data (the caller's job; ``run_gate`` refuses champion
  metrics whose ``eval_data_hash`` differs), because numbers from different evaluation
  sets do not compare.

The result lists every check with its numbers, so a failure message can say exactly
which checks failed and by how much.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmops.config import REPO_ROOT
from llmops.errors import PermanentError

DEFAULT_GATE_FILE = REPO_ROOT / "include" / "eval" / "gate.yaml"
# Metrics where a smaller value is better; every other gated metric is higher-is-better.
LOWER_IS_BETTER = {"perplexity", "bits_per_byte", "pii_leak_rate", "latency_s_p50", "latency_s_p95"}


class GateConfigError(PermanentError, ValueError):
    """The gate file is missing or malformed; the message names the metric."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


class Floor(_Strict):
    min: float | None = None
    """The metric must be at least this (for higher-is-better metrics)."""
    max: float | None = None
    """The metric must be at most this (for lower-is-better metrics)."""

    @model_validator(mode="after")
    def _one_bound(self) -> Floor:
        if self.min is None and self.max is None:
            raise ValueError("a floor needs min or max")
        return self


class Regression(_Strict):
    max_regression: float = Field(ge=0)
    """How much worse than the champion the challenger may be, in the metric's units."""


class GateThresholds(_Strict):
    floors: dict[str, Floor] = {}
    """Absolute bounds per metric, applied to every model."""
    regression: dict[str, Regression] = {}
    """Allowed regression against the champion per metric (only when there is a champion)."""


def load_thresholds(path: str | Path | None = None) -> GateThresholds:
    path = Path(path or DEFAULT_GATE_FILE)
    if not path.exists():
        raise GateConfigError(f"gate thresholds {path} do not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return GateThresholds.model_validate(raw)
    except yaml.YAMLError as exc:
        raise GateConfigError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise GateConfigError(f"{path}: {problems}") from None


@dataclass
class Check:
    """One gate check and the numbers it was decided on."""

    name: str
    metric: str
    kind: str  # "floor" or "regression"
    passed: bool
    value: float | None
    threshold: float
    champion: float | None = None

    def describe(self) -> str:
        value = "missing" if self.value is None else f"{self.value:.4g}"
        if self.kind == "floor":
            op = "<=" if self.metric in LOWER_IS_BETTER else ">="
            return f"{self.metric} {value} (floor: {op} {self.threshold:.4g})"
        direction = "+" if self.metric in LOWER_IS_BETTER else "-"
        return (f"{self.metric} {value} vs champion {self.champion:.4g} "
                f"(allowed: {direction}{self.threshold:.4g})")


@dataclass
class GateResult:
    passed: bool
    checks: list[Check] = field(default_factory=list)
    champion_compared: bool = False

    @property
    def failed(self) -> list[Check]:
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

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "champion_compared": self.champion_compared,
                "checks": [asdict(c) for c in self.checks]}


def _number(metrics: dict[str, Any], metric: str) -> float | None:
    value = metrics.get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_gate(challenger: dict[str, Any], champion: dict[str, Any] | None, thresholds: GateThresholds) -> GateResult:
    """Decide ``challenger`` (a metrics dict) against the floors and, if given, the champion.

    A metric a threshold names but the metrics lack fails its check: a gate that cannot
    measure something must not wave it through.
    """
    checks: list[Check] = []
    for metric, floor in sorted(thresholds.floors.items()):
        value = _number(challenger, metric)
        if floor.min is not None:
            checks.append(Check(f"floor.{metric}.min", metric, "floor", value is not None and value >= floor.min,
                                value, floor.min))
        if floor.max is not None:
            checks.append(Check(f"floor.{metric}.max", metric, "floor", value is not None and value <= floor.max,
                                value, floor.max))
    compared = False
    if champion is not None:
        if challenger.get("eval_data_hash") != champion.get("eval_data_hash"):
            raise ValueError(f"the champion was evaluated on different data ({champion.get('eval_data_hash')}) than "
                             f"the challenger ({challenger.get('eval_data_hash')}): re-evaluate the champion on the "
                             f"challenger's evaluation data")
        compared = True
        for metric, rule in sorted(thresholds.regression.items()):
            value, base = _number(challenger, metric), _number(champion, metric)
            if base is None:
                continue  # the champion predates this metric: nothing to regress against
            if value is None:
                ok = False
            elif metric in LOWER_IS_BETTER:
                ok = value <= base + rule.max_regression
            else:
                ok = value >= base - rule.max_regression
            checks.append(Check(f"regression.{metric}", metric, "regression", ok, value, rule.max_regression, base))
    return GateResult(all(c.passed for c in checks), checks, compared)
