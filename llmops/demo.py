"""``llmops demo`` (what ``make demo`` runs): the whole lifecycle, the way users run it.

Starts the embedded stack (``llmops stack start``: Airflow's scheduler, dag-processor,
triggerer and API server, Triton, the MLflow UI and the demo site), waits until the DAGs
are parsed and unpaused, triggers ``llmops_data`` once through the REST API and follows
the runs the scheduler starts through the Assets (``llmops_train`` → ``llmops_evaluate``
→ ``llmops_deploy``), printing each task as it ends and the training progress. It ends
with the summaries and one question answered by the served champion over HTTP and gRPC,
and leaves the stack running (``make stop`` ends it). On a home whose champion is serving
and whose site did not change, the chain stops after ``llmops_data``: nothing is redone.
A failed task ends the demo with its log tail and a non-zero exit; the stack stays up for
inspection. Airflow runs in its own processes: this module never imports airflow.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

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


def run_demo(cfg: LlmopsConfig, use_airflow: bool = True, stack: Any = None) -> int:
    """Start the stack (``stack``, default ``Stack(cfg)``), trigger ``llmops_data`` once and
    follow the Asset chain to a served champion."""
    if not use_airflow:
        return _run_in_process(cfg)
    from llmops.chain import ChainTimeout, run_chain, wait_for_dags
    from llmops.stack import Stack

    stack = stack or Stack(cfg)
    print(f"==> starting the embedded stack under {cfg.home} (logs: {stack.stack_dir})", flush=True)
    stack.start(progress=_say)
    client = stack.client()
    try:
        print("==> waiting for the dag-processor to parse the DAGs", flush=True)
        wait_for_dags(client, _say)
        result = run_chain(client, {}, _say)
    except ChainTimeout as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        print(_footer(stack, failed=True))
        return 1
    if result.outcome == "failed":
        if result.log_tail:
            print(f"--- last lines of {result.failed_task.label if result.failed_task else 'the task'}'s log ---",
                  file=sys.stderr)
            print(result.log_tail, file=sys.stderr)
        print(f"demo failed: {result.message}", file=sys.stderr)
        print(_footer(stack, failed=True))
        return 1
    champion = _champion(cfg)
    if result.outcome in ("no_new_data", "already_registered"):
        serving = f"models:/{SERVED_MODEL}/{champion} keeps serving" if champion else "nothing is serving yet"
        short = "no new data" if result.outcome == "no_new_data" else "nothing new to deploy"
        print(f"{result.message}")
        print(f"{short}: {serving}")
        print(_footer(stack))
        return 0
    print((_latest_report(cfg, "llmops_data") / "summary.txt").read_text())
    print((_latest_report(cfg, "llmops_train") / "summary.txt").read_text())
    print(_registered_summary(cfg, champion))
    print(_ask(cfg, stack, champion))
    print(_footer(stack))
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def _champion(cfg: LlmopsConfig) -> str | None:
    from llmops.registry.model_registry import CHAMPION, version_for

    return version_for(cfg, SERVED_MODEL, CHAMPION)


def _footer(stack: Any, failed: bool = False) -> str:
    """How to look at what the demo did, and how to stop the stack."""
    lines = ["",
             "The stack " + ("stays up for inspection:" if failed else "keeps running:"),
             f"  Airflow UI   {stack.api_url}  (user admin, password in {stack.password_file})",
             f"  MLflow UI    {stack.mlflow_url}",
             f"  Triton       {stack.triton.http_url} (HTTP), {stack.triton.grpc_address} (gRPC): "
             'llmops generate "What is the for statement?" [--grpc]',
             "  Monitoring   llmops drift traffic reference|shifted --requests 40, then "
             "llmops drift check --window 20 (or trigger llmops_monitor with window 20)",
             f"  Artifacts    {stack.cfg.layout.artifacts}",
             "  Stop it      make stop  (llmops stack stop)"]
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
    latest = cfg.layout.latest_report(dag_id)
    if not latest.exists():
        raise RuntimeError(f"{dag_id} finished but wrote no report ({latest} is missing)")
    return Path(LatestReport.read(latest).path)


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

