"""``llmops demo`` (what ``make demo`` runs): the whole lifecycle with its closed loop, the way
users run it.

Starts the embedded stack (``llmops stack start``: Airflow's scheduler, dag-processor,
triggerer and API server, Triton, the MLflow UI and the demo site), waits until the DAGs
are parsed and unpaused, triggers ``llmops_data`` once through the REST API and follows
the runs the scheduler starts through the Assets (``llmops_train`` → ``llmops_evaluate``
→ ``llmops_deploy``), printing each task as it ends and the training progress, then the
summaries and one question answered by the served champion over HTTP and gRPC.

Then the loop: synthetic users ask about the site through tritonclient and the demo triggers
``llmops_monitor`` (instead of waiting for the hour): no drift; the site publishes its
library section and the users ask about it; the monitor finds drift and announces it, and
the scheduler does the rest: ``llmops_retrain`` → ``llmops_train`` → ``llmops_evaluate`` →
``llmops_deploy``, v2 deployed while users keep asking (one request a second; a failed
request fails the demo). It ends with v1 and v2 on the new pages' held-out questions, each
phase's time, and where every report is; the stack keeps running (``make stop`` ends it).
On a home where the loop already ran it says so and exits 0. A failed task (the retrained
model failing the gate included) ends the demo with its log tail and a non-zero exit; the
stack stays up for inspection. Airflow runs in its own processes: this module never
imports airflow.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from llmops.chain import CHAIN
from llmops.config import REPO_ROOT, LlmopsConfig
from llmops.records.stages import LatestReport
from llmops.registry.model_registry import SERVED_MODEL


def airflow_env(cfg: LlmopsConfig) -> dict[str, str]:
    """Environment of the embedded Airflow: its home under LLMOPS_HOME, our DAGs and plugins."""
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(cfg.layout.airflow_home))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO_ROOT / "dags"))
    env.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO_ROOT / "plugins"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "False")
    env["LLMOPS_HOME"] = str(cfg.home)
    paths = [str(REPO_ROOT / "plugins"), str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_demo(cfg: LlmopsConfig, use_airflow: bool = True, stack: Any = None,
             phases: DemoPhases | None = None) -> int:
    """Start the stack (``stack``, default ``Stack(cfg)``), trigger ``llmops_data`` once and
    follow the Asset chain to a served champion; then close the loop (:func:`_closed_loop`).
    ``phases`` collects each phase's wall time (``make bench`` reads them)."""
    if not use_airflow:
        return _run_in_process(cfg)
    from llmops.chain import ChainTimeout, run_chain, wait_for_dags
    from llmops.stack import Stack

    if ran := _loop_ran(cfg):
        print(f"already ran: champion v{ran}; make clean to start over")
        return 0
    stack = stack or Stack(cfg)
    phases = phases or DemoPhases()
    print(f"==> starting the embedded stack under {cfg.home} (logs: {stack.stack_dir})", flush=True)
    stack.start(progress=_say)
    client = stack.client()
    phases.done("start the stack")
    try:
        print("==> waiting for the dag-processor to parse the DAGs", flush=True)
        wait_for_dags(client, _say, dag_ids=(*CHAIN, RETRAIN, MONITOR))
        result = run_chain(client, {}, _say)
    except ChainTimeout as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        print(_footer(stack, failed=True))
        return 1
    if result.outcome == "failed":
        _print_failure(result.message, result.failed_task, result.log_tail)
        print(_footer(stack, failed=True))
        return 1
    champion = _champion(cfg)
    phases.done(FIRST_LIFECYCLE)
    if result.outcome in ("no_new_data", "already_registered"):
        serving = f"models:/{SERVED_MODEL}/{champion} keeps serving" if champion else "nothing is serving yet"
        short = "no new data" if result.outcome == "no_new_data" else "nothing new to deploy"
        print(f"{result.message}")
        print(f"{short}: {serving}")
    else:
        print((_latest_report(cfg, "llmops_data") / "summary.txt").read_text())
        print((_latest_report(cfg, "llmops_train") / "summary.txt").read_text())
        print(_registered_summary(cfg, champion))
        print(_ask(cfg, stack, champion))
    if champion is None:
        print("demo failed: the first lifecycle deployed nothing", file=sys.stderr)
        print(_footer(stack, failed=True))
        return 1
    try:
        code = _closed_loop(cfg, stack, client, champion, phases)
    except ChainTimeout as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        code = 1
    print(phases.table())
    print(_footer(stack, failed=code != 0))
    return code

# ---- the closed loop: users, the monitor, drift, the retraining --------------------------

RETRAIN, MONITOR = "llmops_retrain", "llmops_monitor"
DEMO_ENV = {"LLMOPS_RETRAIN__COOLDOWN": "0"}
"""Settings the demo's stack runs with (an environment variable already set wins)."""
WINDOW = 20
"""Requests per monitoring window in the demo (the monitor's ``window`` Param)."""
FIRST_LIFECYCLE = "first lifecycle (llmops_data → train → evaluate → deploy)"
LOOP_TRAFFIC_PER_S = 1.0
"""Synthetic users while the retraining trains: at most this many requests a second."""


class DemoPhases:
    """Wall time of each phase of the demo, for the closing table."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.rows: list[tuple[str, float]] = []

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.rows.append((name, now - self.last))
        self.last = now

    def table(self) -> str:
        lines = ["", "demo phases", *(f"  {_minutes(seconds):>7}  {name}" for name, seconds in self.rows),
                 f"  {_minutes(time.monotonic() - self.started):>7}  in all"]
        return "\n".join(lines)


def _minutes(seconds: float) -> str:
    return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def _loop_ran(cfg: LlmopsConfig) -> str | None:
    """The champion's version when it came from a retraining (the loop ran on this home)."""
    from llmops.registry.model_registry import BASE_VERSION_TAG, version_tags

    if not cfg.layout.mlflow_db.exists():
        return None
    champion = _champion(cfg)
    if champion and version_tags(cfg, champion).get(BASE_VERSION_TAG):
        return champion
    return None


def _print_failure(message: str, task: Any, log_tail: str) -> None:
    if log_tail:
        print(f"--- last lines of {task.label if task else 'the task'}'s log ---", file=sys.stderr)
        print(log_tail, file=sys.stderr)
    print(f"demo failed: {message}", file=sys.stderr)


def _users(cfg: LlmopsConfig, stack: Any, questions: list[str], what: str) -> None:
    """Synthetic users ask ``questions`` through tritonclient (gRPC); wait until the inference
    log holds their answers (its writer flushes within seconds)."""
    from llmops.monitoring import traffic

    result = traffic.send(questions, url=stack.triton.grpc_address, protocol="grpc", model=cfg.serving.model_name,
                          concurrency=2)
    print(f"    users asked {result.sent} questions about {what}: {result.answered} answered, {result.failed} "
          f"failed (p50 {result.p50_ms or 0:.0f} ms)", flush=True)
    time.sleep(3)


def _monitor(client: Any) -> str:
    """Trigger ``llmops_monitor`` (instead of waiting for the hour) and follow it; its verdict."""
    from llmops.chain import follow_run

    run_id = client.trigger(MONITOR, {"window": str(WINDOW)})
    print(f"==> triggered {MONITOR} run {run_id} (window {WINDOW} requests)", flush=True)
    run, tis = follow_run(client, MONITOR, run_id, _say, timeout_s=600)
    states = {t.task_id: t.state for t in tis}
    if run.state != "success":
        raise RuntimeError(f"{MONITOR} run {run_id} failed: {states}")
    return "drift" if states.get("announce_drift") == "success" else "no drift"


class _BackgroundUsers:
    """Users who keep asking while the retraining runs (at most ``LOOP_TRAFFIC_PER_S``), so
    the deployment of the new version happens under traffic; every failure is counted."""

    def __init__(self, cfg: LlmopsConfig, stack: Any) -> None:
        import threading

        from llmops.monitoring import traffic

        self.questions = traffic.shifted_questions(400, seed=11) + traffic.reference_questions(400, seed=12)
        self.url, self.model = stack.triton.grpc_address, cfg.serving.model_name
        self.sent = self.failed = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-users", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from llmops.monitoring import traffic

        while not self._stop.is_set():
            began = time.monotonic()
            question = self.questions[self.sent % len(self.questions)]
            result = traffic.send([question], url=self.url, protocol="grpc", model=self.model)
            self.sent += 1
            self.failed += result.failed
            self.errors += result.errors[: max(0, 3 - len(self.errors))]
            self._stop.wait(max(0.0, 1 / LOOP_TRAFFIC_PER_S - (time.monotonic() - began)))

    def stop(self) -> str:
        self._stop.set()
        self._thread.join(timeout=30)
        return (f"    users during the retraining: {self.sent} requests, {self.failed} failed"
                + (f" ({'; '.join(self.errors)})" if self.errors else ""))


def _closed_loop(cfg: LlmopsConfig, stack: Any, client: Any, champion: str, phases: DemoPhases) -> int:
    """Users ask about the first section (no drift) → the site publishes a new section and users
    ask about it → the monitor finds drift → ``llmops_retrain`` → train → gate → deploy under
    traffic, all started by the scheduler → v1 and v2 on the new pages."""
    from llmops.chain import DEPLOY, EVALUATE, follow_run, log_tail, wait_for_asset_run
    from llmops.demo_site.server import publish_section
    from llmops.monitoring import traffic

    print("\n==> users ask about the first section (the language reference)", flush=True)
    _users(cfg, stack, traffic.reference_questions(3 * WINDOW, seed=1), "the language reference")
    verdict = _monitor(client)
    print(f"    the monitor: {verdict}", flush=True)
    phases.done("users on the first section, monitor")

    print("\n==> the site publishes its library section; users ask about the standard library", flush=True)
    entry, new = publish_section(cfg.layout.demo_site_published, "library")
    print(f"    {'published' if new else 'already published'}: library ({entry.published_at:%H:%M:%S})", flush=True)
    known = {dag_id: {r.run_id for r in client.dag_runs(dag_id)} for dag_id in (RETRAIN, *CHAIN[1:])}
    _users(cfg, stack, traffic.shifted_questions(2 * WINDOW, seed=5), "the standard library")
    verdict = _monitor(client)
    print(f"    the monitor: {verdict}", flush=True)
    phases.done("new section published, users on it, monitor")
    if verdict != "drift":
        print("demo failed: the monitor found no drift after the topic shift", file=sys.stderr)
        return 1

    users = _BackgroundUsers(cfg, stack)
    try:
        for dag_id in (RETRAIN, *CHAIN[1:]):
            run = wait_for_asset_run(client, dag_id, known[dag_id], _say, timeout_s=300)
            finished, tis = follow_run(client, dag_id, run.run_id, _say)
            by_task = {t.task_id: t for t in tis if t.map_index < 0}
            failed = next((t for t in tis if t.state in ("failed", "upstream_failed")), None)
            if finished.state != "success" or failed is not None:
                why = "the retrained model failed the gate" if dag_id == EVALUATE else f"{dag_id} failed"
                _print_failure(f"{why}: the champion v{champion} keeps serving", failed,
                               log_tail(client, failed) if failed else "")
                return 1
            if dag_id == RETRAIN and by_task["publish"].state != "success":
                from llmops.retrain.guards import decisions

                why = next((d.reason for d in reversed(decisions(cfg)) if d.run_id == run.run_id), "see its log")
                print(f"demo failed: {RETRAIN} started no retraining: {why}", file=sys.stderr)
                return 1
            phases.done(dag_id)
            if dag_id == DEPLOY:
                break
    finally:
        print(users.stop(), flush=True)
    if users.failed:
        print("demo failed: requests failed while the new version was deployed", file=sys.stderr)
        return 1
    return _before_after(cfg, champion)


def _before_after(cfg: LlmopsConfig, old: str) -> int:
    """v1 and v2 on the new pages' held-out questions."""
    from llmops.registry.model_registry import DATA_CARD_TAG, version_tags
    from llmops.retrain.compare import compare_versions, new_page_pairs

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the downloads below: no bars
    new = _champion(cfg)
    if new is None or new == old:
        print(f"demo failed: the champion is still v{old} after the retraining", file=sys.stderr)
        return 1
    card = cfg.layout.stage_output("data_card", version_tags(cfg, new)[DATA_CARD_TAG])
    pairs = new_page_pairs(card)
    print(f"\nbefore and after, on the {len(pairs)} held-out questions of the new pages", flush=True)
    for row in compare_versions(cfg, [old, new], pairs):
        print(f"  v{row.version}: bits per byte {row.bits_per_byte:.3f}, ROUGE-L {row.rouge_l:.3f}")
        print(f"       {row.question!r} -> {row.answer!r}")
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def _champion(cfg: LlmopsConfig) -> str | None:
    from llmops.registry.model_registry import CHAMPION, version_for

    return version_for(cfg, SERVED_MODEL, CHAMPION)


def _footer(stack: Any, failed: bool = False) -> str:
    """Where every report is, how to look at what the demo did, and how to stop the stack."""
    from llmops.stack import login_hint

    layout = stack.cfg.layout
    lines = ["",
             "The stack " + ("stays up for inspection:" if failed else "keeps running:"),
             f"  Airflow UI   {stack.api_url}  ({login_hint(stack.password_file)})",
             f"  LLMOps view  {stack.api_url}/plugin/llmops  (in the UI's navigation: data, training, registry, "
             "deployment, drift; retrain and rollback for op and admin)",
             f"  MLflow UI    {stack.mlflow_url}  (experiment llmops; model llmops, aliases champion/challenger)",
             f"  Triton       {stack.triton.http_url} (HTTP), {stack.triton.grpc_address} (gRPC): "
             'llmops generate "What is the for statement?" [--grpc]',
             "  Monitoring   llmops drift traffic reference|shifted --requests 40, then "
             "llmops drift check --window 20 (or trigger llmops_monitor with window 20)",
             "Reports:",
             f"  data runs    {layout.reports('llmops_data')}/<run>/ (summary.txt, funnel.png; data cards under "
             f"{layout.stage_dir('data_card')})",
             f"  training     {layout.reports('llmops_train')}/<run>/ (loss curves under {layout.home / 'runs'})",
             f"  evaluations  {layout.reports('evaluation')}/<key>/ (report.md, plots, model card)",
             f"  deployments  {layout.reports('llmops_deploy')}/ (latest.json)",
             f"  drift        {layout.reports('llmops_monitor')}/<time>-v<version>/ (drift.md, signals.png)",
             f"  retraining   {layout.retrain_decisions} (every decision and why)",
             f"  Artifacts    {layout.artifacts}",
             "  Stop it      make stop  (llmops stack stop); start over: make clean"]
    return "\n".join(lines)


def _run_in_process(cfg: LlmopsConfig) -> int:
    """``llmops demo --no-airflow``: the data and training stages in this process, no scheduler."""
    from llmops.data.pipeline import format_report, run_data_pipeline
    from llmops.demo_site import start_demo_site
    from llmops.training.pipeline import format_training_summary, run_training_pipeline
    from llmops.training.runner import console_printer

    site_dir = cfg.layout.demo_site
    site_dir.mkdir(parents=True, exist_ok=True)
    with start_demo_site(cfg.demo_site, port=0, access_log=site_dir / "access.jsonl") as site:
        print(f"==> demo site serving on {site.url}", flush=True)
        print(format_report(run_data_pipeline(cfg, seed_url=site.url, progress=True, full=True)))
    print(format_training_summary(run_training_pipeline(cfg, on_line=console_printer())))
    return 0


def _ask(cfg: LlmopsConfig, stack: Any, version: str | None) -> str:
    """Ask the served champion one question over HTTP and over gRPC."""
    from llmops.serving.client import Protocol, generate

    question = "What is the for statement?"
    server = stack.triton
    lines = ["llmops_deploy summary", f"  champion models:/{SERVED_MODEL}/{version} served by Triton at "
             f"{server.http_url} (HTTP) and {server.grpc_address} (gRPC)", f"  question: {question}"]
    endpoints: tuple[tuple[Protocol, str], ...] = (("http", server.http_address), ("grpc", server.grpc_address))
    for protocol, url in endpoints:
        answer = generate(question, url=url, protocol=protocol, model=cfg.serving.model_name)
        if answer.model_version != str(version):
            raise RuntimeError(f"the served model answered as version {answer.model_version}, expected {version}")
        lines.append(f"  {protocol:<4} answer (version {answer.model_version}, {answer.completion_tokens} tokens): "
                     f"{answer.text}")
    return "\n".join(lines)


def _latest_report(cfg: LlmopsConfig, dag_id: str) -> Path:
    from llmops.records.data import LatestDataReport

    latest = cfg.layout.latest_report(dag_id)
    if not latest.exists():
        raise RuntimeError(f"{dag_id} finished but wrote no report ({latest} is missing)")
    # llmops_data's names its data card too: read with its own record (extra fields are refused).
    record = LatestDataReport if dag_id == "llmops_data" else LatestReport
    return Path(record.read(latest).path)


def _registered_summary(cfg: LlmopsConfig, version: str | None) -> str:
    """The version the chain registered and deployed, with its metrics and report."""
    from llmops.registry import tracking

    if version is None:
        return "llmops_evaluate: nothing registered"
    mv = tracking.connect(tracking.tracking_uri(cfg)).get_model_version(SERVED_MODEL, version)
    metrics = {k.removeprefix("metric."): v for k, v in mv.tags.items() if k.startswith("metric.")}
    shown = ", ".join(f"{k} {metrics[k]}" for k in ("bits_per_byte", "perplexity", "bleu", "rougeL",
                                                     "pii_leak_rate", "behaviour_pass_rate") if k in metrics)
    run = tracking.connect(tracking.tracking_uri(cfg)).get_run(mv.run_id)
    report = cfg.layout.reports("evaluation")
    return (f"llmops_evaluate summary\n  registered models:/{SERVED_MODEL}/{version} (alias champion), gate "
            f"{mv.tags.get('gate_result')}\n  metrics    {shown}\n  MLflow run {run.info.run_id}; reports under "
            f"{report}")

