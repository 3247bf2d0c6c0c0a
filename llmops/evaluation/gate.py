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

The result (``llmops.records.evaluation.GateResult``) lists every check with its numbers,
so a failure message can say exactly which checks failed and by how much.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmops.config import REPO_ROOT
from llmops.errors import PermanentError
from llmops.records.evaluation import LOWER_IS_BETTER, EvalMetrics, GateCheck, GateResult

DEFAULT_GATE_FILE = REPO_ROOT / "include" / "eval" / "gate.yaml"


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


def run_gate(challenger: EvalMetrics, champion: EvalMetrics | None, thresholds: GateThresholds) -> GateResult:
    """Decide ``challenger`` against the floors and, if given, the champion.

    A metric a threshold names but the metrics lack fails its check: a gate that cannot
    measure something must not wave it through. A floor the champion fails too on the same
    data is waived when the metric has a regression check (which then decides); the check
    says so.
    """
    checks: list[GateCheck] = []
    for metric, floor in sorted(thresholds.floors.items()):
        value = challenger.number(metric)
        base = champion.number(metric) if champion is not None else None
        for bound, within in (("min", lambda v, t: v >= t), ("max", lambda v, t: v <= t)):
            threshold = getattr(floor, bound)
            if threshold is None:
                continue
            ok = value is not None and within(value, threshold)
            # A floor is calibrated on some data. When the champion, re-evaluated on this data,
            # is outside it too, the data is harder, not the challenger worse (a retraining on
            # new pages): the metric's regression check decides, if there is one.
            waived = None
            if not ok and value is not None and base is not None and not within(base, threshold) \
                    and metric in thresholds.regression:
                waived = (f"the champion is outside it too on this data ({base:.4g}): "
                          f"regression.{metric} decides")
            checks.append(GateCheck(name=f"floor.{metric}.{bound}", metric=metric, kind="floor",
                                    passed=ok or waived is not None, value=value, threshold=threshold,
                                    champion=base if waived else None, waived=waived))
    compared = False
    if champion is not None:
        if challenger.eval_data_hash != champion.eval_data_hash:
            raise ValueError(f"the champion was evaluated on different data ({champion.eval_data_hash}) than "
                             f"the challenger ({challenger.eval_data_hash}): re-evaluate the champion on the "
                             f"challenger's evaluation data")
        compared = True
        for metric, rule in sorted(thresholds.regression.items()):
            value, base = challenger.number(metric), champion.number(metric)
            if base is None:
                continue  # the champion has no value for it: nothing to regress against
            if value is None:
                ok = False
            elif metric in LOWER_IS_BETTER:
                ok = value <= base + rule.max_regression
            else:
                ok = value >= base - rule.max_regression
            checks.append(GateCheck(name=f"regression.{metric}", metric=metric, kind="regression", passed=ok,
                                    value=value, threshold=rule.max_regression, champion=base))
    return GateResult(passed=all(c.passed for c in checks), champion_compared=compared, checks=checks)
