"""When a retraining must not start, and the record of every decision.

``llmops_retrain`` asks these before and after its data run: is there a champion, is its
cooldown over, did a retraining on the same data already fail the gate. Every run's
outcome, started or skipped, is one line of ``retrain/decisions.jsonl`` with its reason,
so "why did nothing retrain?" has an answer without reading task logs. (Whether another
retraining is in flight is Airflow's knowledge: the DAG asks it.)
"""

from __future__ import annotations

import datetime as dt
import fcntl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmops.config import LlmopsConfig, duration_seconds
from llmops.records.retrain import RetrainBase, RetrainDecision, RetrainPlan, RetrainTrigger
from llmops.records.serving import DeployResult


def record(cfg: LlmopsConfig, decision: RetrainDecision) -> RetrainDecision:
    """Append ``decision`` to ``retrain/decisions.jsonl`` (one JSON line, under a lock)."""
    path = cfg.layout.retrain_decisions
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0, 2)
        if fh.tell():  # a line cut short by a crash must not swallow this one
            fh.seek(fh.tell() - 1)
            ends_with_newline = fh.read(1) == "\n"
            fh.seek(0, 2)
            if not ends_with_newline:
                fh.write("\n")
        fh.write(decision.model_dump_json() + "\n")
    return decision


def decisions(cfg: LlmopsConfig) -> list[RetrainDecision]:
    """Every recorded decision, oldest first (a line that does not parse is skipped)."""
    from llmops.records.base import RecordError

    path = cfg.layout.retrain_decisions
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(RetrainDecision.model_validate_json(line))
        except (ValueError, RecordError):
            continue  # a line cut short by a crash: the others still count
    return out


def deployed_at(cfg: LlmopsConfig, version: str) -> dt.datetime | None:
    """When ``version`` was last deployed (or rolled back to): the newest deploy report that put
    it in service (``reports/llmops_deploy/<key>/``, its manifest's ``created_at``). A re-run
    that found it already serving is not a deployment. None when no report says so."""
    from llmops.artifacts import MANIFEST, read_manifest

    times = []
    for report in cfg.layout.reports("llmops_deploy").glob(f"*/{DeployResult.NAME}"):
        result = DeployResult.read(report)
        if str(result.version) == str(version) and result.status != "already serving" \
                and (report.parent / MANIFEST).exists():
            times.append(dt.datetime.fromisoformat(read_manifest(report.parent).created_at))
    newest = max(times, default=None)
    return newest.replace(tzinfo=newest.tzinfo or dt.UTC) if newest else None


def cooldown_left(cfg: LlmopsConfig, champion_version: str, now: dt.datetime) -> tuple[float, dt.datetime] | None:
    """``(seconds left, deployed at)`` while the champion's deployment is younger than
    ``retrain.cooldown``; None when the cooldown is over (or zero, or the deployment unknown)."""
    cooldown = duration_seconds(cfg.retrain.cooldown)
    deployed = deployed_at(cfg, champion_version) if cooldown > 0 else None
    if deployed is None:
        return None
    left = cooldown - (now - deployed).total_seconds()
    return (left, deployed) if left > 0 else None


GateOutcome = Literal["passed", "failed"]


def gate_outcome(cfg: LlmopsConfig, data_card_keys: list[str]) -> tuple[GateOutcome, str] | None:
    """``(outcome, MLflow run id)`` of the newest evaluation of a model trained on one of the data
    cards ``data_card_keys``; None when no such model was evaluated (yet)."""
    from llmops.registry import tracking
    from llmops.registry.model_registry import DATA_CARD_TAG

    client = tracking.connect(tracking.tracking_uri(cfg))
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is None:
        return None
    runs = []
    for key in data_card_keys:
        if not key.isalnum():  # it goes into a filter string
            raise ValueError(f"not a stage key: {key!r}")
        runs += client.search_runs([experiment.experiment_id],
                                   f"tags.{DATA_CARD_TAG} = '{key}' and tags.gate_result != ''",
                                   order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    newest = max(runs, key=lambda run: run.info.start_time)
    return ("passed" if newest.data.tags["gate_result"] == "passed" else "failed"), newest.info.run_id


@dataclass(frozen=True)
class FailedAttempt:
    decision: RetrainDecision
    """The newest retraining that published the same data."""
    evaluation_run: str
    """The MLflow run of the evaluation that failed the gate."""

    @property
    def reason(self) -> str:
        return (f"already failed the gate (run {self.decision.run_id}, evaluation {self.evaluation_run}; data card "
                f"{self.decision.data_card}): the champion keeps serving; new data or the clear_failed_gate Param "
                f"retries")


def failed_attempt(cfg: LlmopsConfig, content: dict[str, str]) -> FailedAttempt | None:
    """The newest retraining that published exactly ``content`` (the incremental data's digests),
    when the newest evaluation of a model trained on that data failed the gate; None when there
    was none or it passed. Every such retraining's card counts: a retraining cleared by hand
    trains nothing new (its jobs are reused), so its model names the first attempt's card."""
    started = [d for d in decisions(cfg) if d.outcome == "started" and d.content == content and d.data_card]
    if not started:
        return None
    outcome = gate_outcome(cfg, sorted({Path(d.data_card).name for d in started if d.data_card}))
    if outcome is None or outcome[0] == "passed":
        return None
    return FailedAttempt(started[-1], outcome[1])


def plan(cfg: LlmopsConfig, *, trigger: RetrainTrigger, run_id: str, now: dt.datetime,
         active_runs: dict[str, int], drift_report: str | None = None,
         clear_failed_gate: bool = False) -> RetrainPlan | str:
    """The guards before any data is touched: the plan (the champion to continue from), or
    why nothing starts. ``active_runs`` counts the queued or running runs of the DAGs a
    retraining hands over to, and of ``llmops_retrain`` other than this run."""
    from llmops.retrain.lineage import serving_champion

    champion = serving_champion(cfg)
    if champion is None:
        return "no champion yet: trigger llmops_data"
    busy = {dag: n for dag, n in active_runs.items() if n}
    if busy:
        return (f"retrain in progress ({', '.join(f'{dag}: {n} active' for dag, n in busy.items())}): this "
                f"{trigger} event starts nothing")
    if trigger != "manual" and (left := cooldown_left(cfg, champion.version, now)):
        seconds, deployed = left
        return (f"cooldown: champion v{champion.version} was deployed at {deployed:%Y-%m-%d %H:%M:%S} UTC; "
                f"retrain.cooldown {cfg.retrain.cooldown} leaves {seconds / 60:.0f} min")
    if drift_report is None and trigger == "manual":
        # A person retraining after a drift (clearing a failed attempt, say): the lineage names
        # the newest drift reported on this champion.
        drift_report = next((d.drift_report for d in reversed(decisions(cfg))
                             if d.drift_report and d.champion_version == champion.version), None)
    base = RetrainBase(version=champion.version, model_uri=champion.model_uri, data_card=str(champion.data_card),
                       drift_report=drift_report, trigger=trigger, run_id=run_id)
    return RetrainPlan(champion=base, clear_failed_gate=clear_failed_gate)
