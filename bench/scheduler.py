"""Scheduler overhead: ``llmops_data`` under the embedded stack's scheduler vs its stages in one process.

The same work twice, on fresh ``LLMOPS_HOME``s and the same demo site settings:

- **in one process**: ``llmops.data.pipeline.run_data_pipeline(cfg, seed_url=..., full=True)``
  (scrape, extract/clean per shard, dedup, redact, Q&A, tokenizer, encode, data card: the
  stage functions the DAG's tasks call) in a fresh interpreter, timed from its launch to its
  exit, so imports and model loads (spaCy, tokenizers) are paid once, cold, as a user's
  first run pays them. It runs before and after the scheduler runs; the mean is the baseline
  (the machine is shared: the spread of the two is reported as ``baseline_spread_s``);
- **under the scheduler**: ``llmops.stack.Stack`` on free ports (API server, scheduler with
  the LocalExecutor, dag-processor, triggerer, Triton, MLflow UI, demo site), DAGs parsed,
  ``llmops_train`` paused (so the ``llmops://tokens`` event starts no training), one
  ``llmops_data`` run triggered through the REST API and followed to its end, then
  the stack is stopped. Wall time is the run's ``end_date - start_date`` (Airflow's clock).

Rows (``sched_`` prefix; a measured setting adds its suffix, e.g. ``_idle0.1``):

- ``run_wall_s`` vs ``baseline_s`` and ``overhead_s_per_task`` = (run wall - baseline) /
  task instances (mapped instances count one each);
- ``sum_task_s``: the task instances' durations added up (more than the wall when mapped
  shards run side by side, ``airflow.parallelism`` = cores), and ``idle_s``: time inside the
  run when no task instance was running at all;
- ``latency_median_s`` / ``latency_max_s``: for each task instance with upstream tasks, its
  start minus the end of its last upstream instance (the scheduling latency), split into
  ready→scheduled (scheduler loop), scheduled→queued (handed to the executor) and
  queued→started (a LocalExecutor worker forks the task supervisor, which reports the start);
- ``empty_task_s_median``: the duration of tasks that do almost nothing (``plan_shards``,
  ``publish_corpus``, ``publish_qa``): the fixed cost inside every task instance (fork,
  parsing the DAG file, task-SDK calls to the API server, XCom);
- ``slot_release_*``: from a task's ``end_date`` (it reported its state) to the scheduler's
  "Received executor event" line for it in ``stack/scheduler.log``: until then its
  LocalExecutor worker is busy, and with ``parallelism`` workers (2 here) a queued task
  waits for one (it shows in queued→started).
- ``loadavg_1m``: the machine's load average during the run (a neighbour's load lengthens
  the task durations and so the wall time, much less the latencies).

Settings. Measured, each in a stack of its own in the same run (suffix):

- ``_idle0.1``: ``[scheduler] scheduler_idle_sleep_time`` 1 → 0.1 s, how long the scheduler
  loop sleeps after a loop that queued nothing and saw no task finish
  (airflow/jobs/scheduler_job_runner.py ``_run_scheduler_loop``): bounds ready→scheduled;
  the loop then polls SQLite 10 times a second.
- ``_hb5``: ``[workers] min_heartbeat_interval`` back to Airflow's default 5 s (the stack sets 1,
  after this bench measured it; an integer). Besides the task heartbeat, it is
  the longest ``select()`` of the task supervisor's loop (airflow/sdk/execution_time/
  supervisor.py ``_monitor_subprocess``). When the task process's sockets reach EOF before
  the process can be reaped, the supervisor unregisters them and then sleeps in a
  ``select()`` on no file at all for the whole interval before it notices the exit: the
  worker slot stays taken about 5 s after the task ended (seen for about a third of the
  tasks: ``slot_release_over_2s``). Costs one heartbeat call per running task per second.

Read, not measured (Airflow 3.3.2's config.yml, the source of its configuration reference,
and the code):

- ``[scheduler] scheduler_heartbeat_sec`` (5): despite its description ("how often the
  scheduler should run"), only how often the scheduler job writes its heartbeat row; the
  loop's pace is ``scheduler_idle_sleep_time``. No effect on latency expected.
- ``[core] parallelism`` (llmops ``airflow.parallelism``, default the core count): worker
  processes and task instances at once; moves the wall time of the mapped extract/clean
  shards, and more workers than ready tasks would hide the slot-release lag above (at
  ~200 MB per idle worker).
- ``[scheduler] max_tis_per_query`` (16): task instances examined per loop; this DAG never
  has more than 3 ready at once.
- ``[core] mp_start_method`` / ``mp_forkserver_preload`` (new in 3.3): how the LocalExecutor
  starts its workers (fork on Python 3.11; forkserver/spawn re-import Airflow); the task
  supervisor forks the task process itself either way.
- ``[core] execute_tasks_new_python_interpreter``: a dead shim in Airflow 3 (settings.py),
  tasks are always forked.

Run alone: ``.venv/bin/python bench/scheduler.py [--variants default,idle0.1] [--work DIR]``
(``--work`` keeps the homes and their ``stack/`` logs; otherwise they are deleted).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[1]

DATA, TRAIN = "llmops_data", "llmops_train"
# Settings measured, each in a stack of its own: suffix -> Airflow environment.
VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "idle0.1": {"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1"},
    "hb5": {"AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "5"},
}
# Tasks that do (almost) nothing but exist: their duration is the per-task floor.
EMPTY_TASKS = ("plan_shards", "publish_corpus", "publish_qa")
# The end-to-end fixture's fast crawl (tests/e2e/conftest.py): the demo site's slow page
# stalls 2 s against a 1 s timeout, the politeness limit is lifted; 3 extract/clean shards.
DATA_ENV = {
    "LLMOPS_DEMO_SITE__SLOW_DELAY_S": "2.0",
    "LLMOPS_DATA__NUM_SHARDS": "3",
    "LLMOPS_SCRAPE__MAX_PAGES": "400",
    "LLMOPS_SCRAPE__TIMEOUT_S": "1.0",
    "LLMOPS_SCRAPE__RETRIES": "1",
    "LLMOPS_SCRAPE__BACKOFF_S": "0.05",
    "LLMOPS_SCRAPE__RATE_LIMIT_PER_HOST": "500",
    "LLMOPS_TOKENIZER__VOCAB_SIZE": "1024",
    "LLMOPS_MLFLOW__SYSTEM_METRICS": "false",
}

BASELINE_PROBE = """
import json, sys, time
t0 = time.perf_counter()
from llmops.config import load_config
from llmops.data.pipeline import run_data_pipeline
cfg = load_config()
t1 = time.perf_counter()
report = run_data_pipeline(cfg, seed_url=sys.argv[1], full=True)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "pipeline_s": t2 - t1, "pages_ok": report.crawl.pages_ok,
                  "docs": report.dedup.docs_out}))
"""

Progress = Callable[[str], None]


def _base_env(home: Path, site_port: int) -> dict[str, str]:
    return {**DATA_ENV, "LLMOPS_HOME": str(home), "LLMOPS_DEMO_SITE__PORT": str(site_port),
            "LLMOPS_DATA__SEED_URL": f"http://127.0.0.1:{site_port}/"}


def baseline(work: Path, name: str) -> dict[str, Any]:
    """``run_data_pipeline`` in a fresh interpreter on a fresh home; wall seconds from launch to exit."""
    from llmops.config import load_config
    from llmops.demo_site import start_demo_site
    from llmops.stack import free_ports

    home = work / f"baseline_{name}"
    home.mkdir()
    (site_port,) = free_ports(1)
    env = {**os.environ, **_base_env(home, site_port)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    cfg = load_config(environ=env)
    # The site is served from this process (a thread), the pipeline runs in another: as under
    # the stack, where the site is a process of its own.
    with start_demo_site(cfg.demo_site, port=site_port) as site:
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", BASELINE_PROBE, site.url], env=env, cwd=REPO,
                             capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"in-process llmops_data failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result | {"wall_s": wall}


def _raw_task_instances(client: Any, run_id: str) -> list[dict[str, Any]]:
    # AirflowClient's TaskInstance leaves out scheduled_when/queued_when, which split the latency.
    from urllib.parse import quote

    path = f"/api/v2/dags/{DATA}/dagRuns/{quote(run_id, safe='')}/taskInstances"
    return list(client._paged(path, "task_instances", {"order_by": "id"}))


def _upstream(client: Any) -> dict[str, set[str]]:
    """task id -> its upstream task ids, from the serialized DAG (``GET /api/v2/dags/{id}/tasks``)."""
    tasks = client._send("GET", f"/api/v2/dags/{DATA}/tasks")["tasks"]
    up: dict[str, set[str]] = {t["task_id"]: set() for t in tasks}
    for t in tasks:
        for down in t.get("downstream_task_ids") or []:
            up.setdefault(down, set()).add(t["task_id"])
    return up


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


_EXECUTOR_EVENT = re.compile(r"^(\S+Z) .*Received executor event with state \w+ for task instance "
                             r"TaskInstanceKey\(dag_id='(?P<dag>[^']+)', task_id='(?P<task>[^']+)'.*?"
                             r"map_index=(?P<map>-?\d+)\)")


def _executor_events(scheduler_log: Path) -> dict[tuple[str, int], dt.datetime]:
    """(task, map index) -> when the scheduler learnt from the LocalExecutor that the task's worker
    was done (its supervisor returned): the worker slot is free again from then on."""
    events: dict[tuple[str, int], dt.datetime] = {}
    try:
        lines = scheduler_log.read_text(errors="replace").splitlines()
    except OSError:
        return events
    for line in lines:
        if (m := _EXECUTOR_EVENT.match(line)) and m["dag"] == DATA:
            events[(m["task"], int(m["map"]))] = dt.datetime.fromisoformat(m.group(1))
    return events


def _analyse(run: Any, raw: list[dict[str, Any]], up: dict[str, set[str]],
             executor_events: dict[tuple[str, int], dt.datetime]) -> dict[str, Any]:
    tis = [{"task": t["task_id"], "map": t.get("map_index", -1), "state": t["state"],
            "start": _when(t.get("start_date")), "end": _when(t.get("end_date")),
            "scheduled": _when(t.get("scheduled_when")), "queued": _when(t.get("queued_when")),
            "duration": t.get("duration")} for t in raw]
    ran = [t for t in tis if t["start"] and t["end"]]
    ends: dict[str, dt.datetime] = {}
    for t in ran:
        ends[t["task"]] = max(ends.get(t["task"], t["end"]), t["end"])

    gaps, to_sched, to_queue, to_start = [], [], [], []
    for t in ran:
        ups = up.get(t["task"]) or set()
        if not ups or any(u not in ends for u in ups):
            continue
        ready = max(ends[u] for u in ups)
        gaps.append((t["start"] - ready).total_seconds())
        if t["scheduled"] and t["queued"]:
            to_sched.append((t["scheduled"] - ready).total_seconds())
            to_queue.append((t["queued"] - t["scheduled"]).total_seconds())
            to_start.append((t["start"] - t["queued"]).total_seconds())

    # Time inside the run with no task instance running: the union of [start, end] intervals.
    busy, cursor = 0.0, None
    for t in sorted(ran, key=lambda t: t["start"]):
        if cursor is None or t["start"] > cursor:
            busy += (t["end"] - t["start"]).total_seconds()
            cursor = t["end"]
        elif t["end"] > cursor:
            busy += (t["end"] - cursor).total_seconds()
            cursor = t["end"]
    wall = (run.end_date - run.start_date).total_seconds()
    empty = [t["duration"] for t in ran if t["task"] in EMPTY_TASKS and t["duration"] is not None]
    # The task's end_date is set when it reports its state; its worker is free only once the
    # supervisor has seen the task process exit.
    release = [(executor_events[(t["task"], t["map"])] - t["end"]).total_seconds() for t in ran
               if (t["task"], t["map"]) in executor_events]

    def med(xs: list[float]) -> float | None:
        return round(statistics.median(xs), 2) if xs else None

    return {
        "state": run.state,
        "run_wall_s": round(wall, 1),
        "queued_to_running_s": round((run.start_date - run.queued_at).total_seconds(), 1) if run.queued_at else None,
        "tasks": len(tis),
        "task_states": ",".join(f"{s}={n}" for s, n in sorted(
            {s: sum(t["state"] == s for t in tis) for s in {t["state"] for t in tis}}.items())),
        "sum_task_s": round(sum(t["duration"] or 0.0 for t in ran), 1),
        "idle_s": round(wall - busy, 1),
        "latency_median_s": med(gaps),
        "latency_max_s": round(max(gaps), 2) if gaps else None,
        "latency_ready_to_scheduled_median_s": med(to_sched),
        "latency_scheduled_to_queued_median_s": med(to_queue),
        "latency_queued_to_started_median_s": med(to_start),
        "empty_task_s_median": med(empty),
        "slot_release_median_s": med(release),
        "slot_release_max_s": round(max(release), 2) if release else None,
        "slot_release_over_2s": f"{sum(x > 2 for x in release)}/{len(release)}" if release else None,
        "per_task_s": {f"{t['task']}[{t['map']}]" if t["map"] >= 0 else t["task"]: t["duration"] for t in ran},
    }


class _LoadSampler:
    """The 1-minute load average, sampled every few seconds while the block runs: this machine is
    shared, and a neighbour's load shows in the task durations, not in the scheduling latencies."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s, self.samples = every_s, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return round(statistics.mean(self.samples), 1)


def scheduler_run(work: Path, name: str, airflow_env: dict[str, str], progress: Progress) -> dict[str, Any]:
    """One stack on a fresh home: trigger ``llmops_data`` once, follow it, stop the stack."""
    from llmops.chain import follow_run, wait_for_dags
    from llmops.config import load_config
    from llmops.stack import Stack, isolated_env

    home = work / f"stack_{name}"
    home.mkdir()
    env = {
        **DATA_ENV,
        **isolated_env(home),
        **airflow_env,  # the stack's environment wins over its own Airflow settings
    }
    cfg = load_config(environ={**os.environ, **env})
    stack = Stack(cfg, env=env)
    log = home / "bench_progress.log"

    def say(line: str) -> None:
        with open(log, "a") as fh:
            fh.write(line + "\n")
        if line.startswith("==>") or "task " in line:
            progress(f"    [{name}] {line.strip()}")

    t0 = time.perf_counter()
    stack.start(progress=say)
    startup_s = time.perf_counter() - t0
    try:
        client = stack.client()
        wait_for_dags(client, say, dag_ids=(DATA, TRAIN), timeout_s=180)
        client.set_paused(TRAIN, True)  # the tokens event must not start a training run
        run_id = client.trigger(DATA, {})
        with _LoadSampler() as load:
            run, _ = follow_run(client, DATA, run_id, say, timeout_s=1800)
        result = _analyse(run, _raw_task_instances(client, run_id), _upstream(client),
                          _executor_events(stack.log_path("scheduler")))
        result["loadavg_1m"] = load.mean
    except BaseException:
        progress(f"    [{name}] failed; stack logs: {stack.stack_dir}, task logs: {home / 'airflow' / 'logs'}")
        raise
    finally:
        stack.stop(timeout=10, progress=say)
    return result | {"stack_startup_s": round(startup_s, 1), "home": str(home)}


def _print(line: str) -> None:
    print(line, flush=True)


def bench_scheduler(work: Path, variants: list[str] | None = None, progress: Progress = _print) -> dict[str, Any]:
    """The scheduler-overhead rows of ``make bench`` (see the module docstring). The key
    ``_sched_per_task_s`` holds each run's task durations, for results.json, not the table."""
    section_started = time.perf_counter()
    variants = variants or list(VARIANTS)
    progress("  in-process baseline (1/2) ...")
    first = baseline(work, "before")
    runs = {}
    for name in variants:
        progress(f"  llmops_data under the scheduler ({name}: {VARIANTS[name] or 'stack defaults'}) ...")
        runs[name] = scheduler_run(work, name, VARIANTS[name], progress)
    progress("  in-process baseline (2/2) ...")
    second = baseline(work, "after")
    base = (first["wall_s"] + second["wall_s"]) / 2

    rows: dict[str, Any] = {
        "sched_baseline_s": round(base, 1),
        "sched_baseline_spread_s": round(abs(first["wall_s"] - second["wall_s"]), 1),
        "sched_baseline_import_s": round((first["import_s"] + second["import_s"]) / 2, 1),
        "sched_baseline_pages_ok": first["pages_ok"],
        "sched_baseline_docs": first["docs"],
    }
    for name, r in runs.items():
        sfx = "" if name == "default" else f"_{name}"
        if r["state"] != "success":
            rows[f"sched_run_state{sfx}"] = f"{r['state']} ({r['task_states']}; logs under {r['home']})"
            continue
        rows |= {
            f"sched_run_wall_s{sfx}": r["run_wall_s"],
            f"sched_tasks{sfx}": r["tasks"],
            f"sched_overhead_s_per_task{sfx}": round((r["run_wall_s"] - base) / r["tasks"], 2),
            f"sched_run_vs_baseline_ratio{sfx}": round(r["run_wall_s"] / base, 2),
            f"sched_sum_task_s{sfx}": r["sum_task_s"],
            f"sched_idle_s{sfx}": r["idle_s"],
            f"sched_idle_s_per_task{sfx}": round(r["idle_s"] / r["tasks"], 2),
            f"sched_latency_median_s{sfx}": r["latency_median_s"],
            f"sched_latency_max_s{sfx}": r["latency_max_s"],
            f"sched_latency_ready_to_scheduled_median_s{sfx}": r["latency_ready_to_scheduled_median_s"],
            f"sched_latency_scheduled_to_queued_median_s{sfx}": r["latency_scheduled_to_queued_median_s"],
            f"sched_latency_queued_to_started_median_s{sfx}": r["latency_queued_to_started_median_s"],
            f"sched_empty_task_s_median{sfx}": r["empty_task_s_median"],
            f"sched_slot_release_median_s{sfx}": r["slot_release_median_s"],
            f"sched_slot_release_max_s{sfx}": r["slot_release_max_s"],
            f"sched_slot_release_over_2s{sfx}": r["slot_release_over_2s"],
            f"sched_queued_to_running_s{sfx}": r["queued_to_running_s"],
            f"sched_stack_startup_s{sfx}": r["stack_startup_s"],
            f"sched_loadavg_1m{sfx}": r["loadavg_1m"],
        }
    rows["sched_settings_measured"] = "; ".join(
        f"{n}: {', '.join(f'{k}={v}' for k, v in VARIANTS[n].items()) or 'defaults'}" for n in variants)
    rows["sched_settings_read_only"] = ("scheduler_heartbeat_sec, parallelism, max_tis_per_query, "
                                        "mp_start_method (bench/scheduler.py docstring)")
    rows["sched_section_s"] = round(time.perf_counter() - section_started, 1)
    rows["_sched_per_task_s"] = {n: r.get("per_task_s") for n, r in runs.items()}
    return rows


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    sys.path.insert(0, str(REPO))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, from {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--work", type=Path, help="keep the homes here (default: a temporary directory)")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        rows = bench_scheduler(args.work, variants)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows = bench_scheduler(Path(tmp), variants)
    per_task = rows.pop("_sched_per_task_s")
    print("\n| metric | value |\n|---|---|")
    for key, value in rows.items():
        print(f"| {key} | {value} |")
    print("\nper-task durations (s):", json.dumps(per_task, indent=1))
    return 0


if __name__ == "__main__":  # this section alone: .venv/bin/python bench/scheduler.py
    sys.exit(main())
