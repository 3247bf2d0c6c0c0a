"""Following the lifecycle as the scheduler runs it: one trigger, then the Asset chain.

Users trigger ``llmops_data`` (UI or REST API) and the scheduler does the rest: each DAG
publishes an Asset whose event starts the next one (``llmops://tokens`` →
``llmops_train`` → ``llmops://model`` → ``llmops_evaluate`` → ``llmops://challenger`` →
``llmops_deploy``). ``make demo`` and the end-to-end tests watch that chain through
Airflow's REST API only (never ``dags test``): they print each task as it ends and the
training progress lines of the running jobs, wait for the run each Asset event starts,
and say how the chain ended:

- ``deployed``: ``llmops_deploy`` served the new champion;
- ``no_new_data``: ``llmops_data`` published no new ``llmops://tokens`` (its ``data_card``
  task ended *skipped*: the shards, Q&A pairs and tokenizer equal the last published ones);
- ``already_registered``: ``llmops_evaluate`` found the model's content already registered;
- ``failed``: a task failed (its log tail is in ``ChainResult.log_tail``) or a DAG the chain
  needed did not start in time.

The core library never imports airflow: this module talks HTTP through ``AirflowClient``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from llmops.airflow_client import AirflowClient, DagRun, TaskInstance
from llmops.errors import TransientError

Progress = Callable[[str], None]

DATA, TRAIN, EVALUATE, DEPLOY = "llmops_data", "llmops_train", "llmops_evaluate", "llmops_deploy"
CHAIN = (DATA, TRAIN, EVALUATE, DEPLOY)
# The task whose success publishes the Asset that starts the next DAG of the chain.
PUBLISHER = {DATA: "data_card", TRAIN: "publish", EVALUATE: "register"}

TERMINAL = {"success", "failed", "skipped", "upstream_failed", "removed"}
FAILED = {"failed", "upstream_failed"}
# Training progress worth showing while a job runs (the task log has every line).
_TRAIN_PROGRESS = re.compile(r"\[llmops\] ((?:pretrain|finetune) \S+: .*?|step \d+/\d+ val_loss .*?|finished .*?)"
                             r"(?:\s+\[airflow\.task\..*)?$")
# Lines worth showing when a task ends: what it reused, why it published nothing, the
# monitor's verdict and the retraining's decisions.
_REUSED = re.compile(r"(reused \S+ \S+|no new data since .*|already registered as models:/\S+?/\d+|monitor: .*"
                     r"|retrain: .*|increment: .*)")


class ChainTimeout(TransientError, RuntimeError):
    """A DAG of the chain did not start, or a run did not end, within its time limit."""


@dataclass
class ChainResult:
    """How one pass through the lifecycle ended."""

    outcome: Literal["deployed", "no_new_data", "already_registered", "failed"]
    message: str
    runs: dict[str, DagRun] = field(default_factory=dict)
    """The run of each DAG this pass went through, by DAG id."""
    failed_task: TaskInstance | None = None
    log_tail: str = ""


def _elapsed(since: float) -> str:
    seconds = int(time.monotonic() - since)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _label(ti: TaskInstance) -> str:
    return ti.task_id + (f" [{ti.map_index}]" if ti.map_index >= 0 else "")


@dataclass
class _LogCursor:
    """How much of a running task's log was already shown (its lines only grow)."""

    try_number: int = 0
    lines_seen: int = 0
    shown: set[str] = field(default_factory=set)
    """Messages already printed: a skip reason is in the log twice (printed, then raised)."""


def follow_run(client: AirflowClient, dag_id: str, run_id: str, progress: Progress, *, timeout_s: float = 3600,
               poll_s: float = 2.0, heartbeat_s: float = 30.0) -> tuple[DagRun, list[TaskInstance]]:
    """Print each task of the run as it ends (and training progress while it runs) until the run ends.

    A line at least every ``heartbeat_s`` says what is still running, so no minute is silent.
    Returns the finished run and its task instances.
    """
    started = time.monotonic()
    announced: set[tuple[str, int, int]] = set()
    cursors: dict[tuple[str, int], _LogCursor] = {}
    last_line = time.monotonic()

    def say(line: str) -> None:
        nonlocal last_line
        progress(line)
        last_line = time.monotonic()

    while True:
        run = client.dag_run(dag_id, run_id)
        tis = client.task_instances(dag_id, run_id)
        for ti in tis:
            key = (ti.task_id, ti.map_index, ti.try_number)
            if ti.state in TERMINAL and key not in announced:
                announced.add(key)
                took = f" in {ti.duration:.0f}s" if ti.duration is not None else ""
                say(f"    {dag_id}: task {_label(ti)} {ti.state}{took} ({_elapsed(started)})")
                if ti.state in ("success", "skipped"):  # what it reused, or why it published nothing
                    _show_new_lines(client, ti, cursors, say, only=_REUSED)
            elif ti.state == "up_for_retry" and key not in announced:
                announced.add(key)
                say(f"    {dag_id}: task {_label(ti)} failed try {ti.try_number}, will retry")
            elif ti.state == "running" and ti.operator == "DeepSpeedTrainingOperator":
                _show_new_lines(client, ti, cursors, say, only=_TRAIN_PROGRESS)
        if run.state in ("success", "failed"):
            return run, tis
        if time.monotonic() - started > timeout_s:
            raise ChainTimeout(f"{dag_id} run {run_id} did not end within {timeout_s:.0f} s (state {run.state})")
        if time.monotonic() - last_line >= heartbeat_s:
            running = [_label(t) for t in tis if t.state in ("running", "queued", "scheduled", "up_for_retry",
                                                             "deferred", "up_for_reschedule")]
            say(f"    {dag_id}: {run.state}, {', '.join(running) or 'waiting for the scheduler'} "
                f"({_elapsed(started)})")
        time.sleep(poll_s)


def _show_new_lines(client: AirflowClient, ti: TaskInstance, cursors: dict[tuple[str, int], _LogCursor],
                    say: Progress, *, only: re.Pattern[str]) -> None:
    """Print the lines of ``ti``'s log that match ``only`` and were not shown yet."""
    cursor = cursors.setdefault((ti.task_id, ti.map_index), _LogCursor())
    if cursor.try_number != ti.try_number:
        cursors[(ti.task_id, ti.map_index)] = cursor = _LogCursor(try_number=ti.try_number)
    try:
        lines = client.task_log(ti).splitlines()
    except Exception:  # noqa: BLE001 - progress is best effort; the run's state is what counts
        return
    for line in lines[cursor.lines_seen:]:
        if (match := only.search(line)) and match.group(1) not in cursor.shown:
            cursor.shown.add(match.group(1))
            say(f"      {match.group(1)[:160]}")
    cursor.lines_seen = len(lines)


def log_tail(client: AirflowClient, ti: TaskInstance, lines: int = 40) -> str:
    try:
        return "\n".join(client.task_log(ti).splitlines()[-lines:])
    except Exception as exc:  # noqa: BLE001 - the failure itself is what is reported
        return f"(the log of {ti.label} could not be read: {exc})"


def wait_for_asset_run(client: AirflowClient, dag_id: str, known: set[str], progress: Progress, *,
                       timeout_s: float = 120.0, poll_s: float = 2.0) -> DagRun:
    """The first run of ``dag_id`` not in ``known``: the one the scheduler started from an Asset event.

    Fails after ``timeout_s`` naming the DAG, whether it is paused, and its import errors.
    """
    started = time.monotonic()
    next_note = started + 15
    while time.monotonic() - started < timeout_s:
        new = [r for r in client.dag_runs(dag_id) if r.run_id not in known]
        if new:
            run = new[0]
            progress(f"==> {dag_id} run {run.run_id} ({run.run_type}) started by the scheduler")
            return run
        if time.monotonic() >= next_note:
            progress(f"    waiting for the scheduler to start {dag_id} ({_elapsed(started)})")
            next_note += 15
        time.sleep(poll_s)
    raise ChainTimeout(f"no {dag_id} run started within {timeout_s:.0f} s of the Asset event that schedules it"
                       f"{_why_not_scheduled(client, dag_id)}")


def _why_not_scheduled(client: AirflowClient, dag_id: str) -> str:
    reasons = []
    dags = {d.dag_id: d for d in client.dags()}
    if dag_id not in dags:
        reasons.append(f"{dag_id} is not parsed")
    elif dags[dag_id].is_paused:
        reasons.append(f"{dag_id} is paused")
    for err in client.import_errors():
        reasons.append(f"import error in {err.filename}: {err.stack_trace.strip().splitlines()[-1]}")
    return ": " + "; ".join(reasons) if reasons else ""


def wait_for_dags(client: AirflowClient, progress: Progress, *, dag_ids: tuple[str, ...] = CHAIN,
                  timeout_s: float = 120.0, poll_s: float = 2.0) -> None:
    """Wait until the dag-processor has parsed ``dag_ids`` and none is paused; fail with the import errors."""
    started = time.monotonic()
    next_note = started
    while True:
        dags = {d.dag_id: d for d in client.dags()}
        errors = client.import_errors()
        missing = [d for d in dag_ids if d not in dags]
        paused = [d for d in dag_ids if d in dags and dags[d].is_paused]
        if not missing and not paused:
            progress(f"    DAGs parsed and unpaused: {', '.join(dag_ids)} ({_elapsed(started)})")
            return
        if errors and time.monotonic() - started > 10:
            raise ChainTimeout("DAG import errors:\n" + "\n".join(f"{e.filename}:\n{e.stack_trace}" for e in errors))
        for dag_id in paused:  # a user may have paused one in the UI: the chain needs every DAG
            client.unpause(dag_id)
        if time.monotonic() >= next_note:
            progress(f"    waiting for the DAGs to be parsed: missing {', '.join(missing) or 'none'} "
                     f"({_elapsed(started)})")
            next_note += 15
        if time.monotonic() - started > timeout_s:
            raise ChainTimeout(f"the DAGs were not parsed within {timeout_s:.0f} s: missing {missing}"
                               + _why_not_scheduled(client, missing[0] if missing else dag_ids[0]))
        time.sleep(poll_s)


def run_chain(client: AirflowClient, conf: dict[str, Any] | None, progress: Progress, *,
              start_timeout_s: float = 120.0, run_timeout_s: float = 3600.0, poll_s: float = 2.0) -> ChainResult:
    """Trigger ``llmops_data`` once and follow the runs the Asset events start, to the end of the chain."""
    known = {dag_id: {r.run_id for r in client.dag_runs(dag_id)} for dag_id in CHAIN}
    run_id = client.trigger(DATA, conf or {})
    progress(f"==> triggered {DATA} run {run_id} through the REST API")
    result = ChainResult("failed", "")
    dag_id, index = DATA, 0
    while True:
        run, tis = follow_run(client, dag_id, run_id, progress, timeout_s=run_timeout_s, poll_s=poll_s)
        result.runs[dag_id] = run
        by_task = {ti.task_id: ti for ti in tis if ti.map_index < 0}
        failed = [ti for ti in tis if ti.state == "failed"] or [ti for ti in tis if ti.state in FAILED]
        if run.state == "failed" or failed:
            ti = failed[0] if failed else None
            result.failed_task = ti
            result.log_tail = log_tail(client, ti) if ti else ""
            result.message = (f"{dag_id} run {run_id} failed" + (f" at task {_label(ti)}" if ti else ""))
            return result
        progress(f"    {dag_id} run {run_id} succeeded in {_run_seconds(run):.0f}s")
        if dag_id == DEPLOY:
            result.outcome, result.message = "deployed", f"{DEPLOY} served the new champion"
            return result
        publisher = by_task.get(PUBLISHER[dag_id])
        if dag_id == EVALUATE and by_task.get("evaluate") and by_task["evaluate"].state == "skipped":
            result.outcome = "already_registered"
            result.message = _reason(client, by_task["evaluate"], "the model is already registered")
            return result
        if publisher is None or publisher.state != "success":
            if dag_id == DATA:
                result.outcome = "no_new_data"
                result.message = _reason(client, publisher, "no new data") if publisher else "no new data"
                return result
            result.message = f"{dag_id} published nothing ({PUBLISHER[dag_id]}: {publisher and publisher.state})"
            return result
        index += 1
        dag_id = CHAIN[index]
        run = wait_for_asset_run(client, dag_id, known[dag_id], progress, timeout_s=start_timeout_s, poll_s=poll_s)
        run_id = run.run_id


def _run_seconds(run: DagRun) -> float:
    if run.start_date and run.end_date:
        return (run.end_date - run.start_date).total_seconds()
    return 0.0


def _reason(client: AirflowClient, ti: TaskInstance, default: str) -> str:
    """The skip reason a task logged (``no new data since ...``, ``already registered as ...``)."""
    try:
        for line in reversed(client.task_log(ti).splitlines()):
            if match := re.search(r"no new data since .*?(?=\s+\[|$)|already registered as models:/\S+?/\d+", line):
                return match.group(0).strip()
    except Exception:  # noqa: BLE001 - the state is known; the reason is a courtesy
        pass
    return default


__all__ = ["CHAIN", "ChainResult", "ChainTimeout", "follow_run", "run_chain", "wait_for_asset_run", "wait_for_dags"]
