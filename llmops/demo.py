"""``llmops demo`` (what ``make demo`` runs): the demo site and every DAG, for real.

Starts the demo website in a background thread, prepares the embedded Airflow
(SQLite under ``$LLMOPS_HOME/airflow``), runs ``airflow dags test llmops_data`` with
the site's URL as a Param, then ``airflow dags test llmops_train`` (DeepSpeed
pretraining on 2 CPU ranks, then the fine-tuned variants), ``llmops_evaluate`` (gate,
registry), starts the embedded Triton server and runs ``llmops_deploy``, then asks the
served model one question over HTTP and over gRPC and prints every summary. Triton
keeps serving afterwards (``llmops serve stop`` ends it).
Airflow runs as a subprocess: this module never imports airflow.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from llmops.config import REPO_ROOT, LlmopsConfig


def airflow_env(cfg: LlmopsConfig) -> dict[str, str]:
    """Environment of the embedded Airflow: its home under LLMOPS_HOME, our DAGs and plugins."""
    env = dict(os.environ)
    env.setdefault("AIRFLOW_HOME", str(cfg.home / "airflow"))
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


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) != 0


_TASK_DONE = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")
# Training progress worth showing while a DAG runs (the full log is in the log file).
_TRAIN_PROGRESS = re.compile(r"\[llmops\] ((?:pretrain|finetune) \S+: .*?|step \d+/\d+ val_loss .*?|finished .*?)"
                             r"(?:\s+\[airflow\.task\..*)?$")


def _run_logged(cmd: list[str], env: dict[str, str], log_path: Path, label: str) -> None:
    """Run ``cmd`` with its output in ``log_path``, echoing finished Airflow tasks as progress.

    On failure the log's tail is shown and the error names the log file.
    """
    started = time.monotonic()
    print(f"==> {label} (log: {log_path})", flush=True)
    with open(log_path, "w") as log, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                                      stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            log.write(line)
            if match := _TASK_DONE.search(line):
                task, index = match.groups()
                shard = f" [{index}]" if index != "-1" else ""
                print(f"    task {task}{shard} finished ({time.monotonic() - started:.0f}s)", flush=True)
            elif match := _TRAIN_PROGRESS.search(line):
                print(f"      {match.group(1)[:150]}", flush=True)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        print("\n".join(tail), file=sys.stderr)
        raise RuntimeError(f"{label} failed with exit code {proc.returncode}; see {log_path}")
    print(f"    done in {time.monotonic() - started:.1f}s", flush=True)


def run_demo(cfg: LlmopsConfig, use_airflow: bool = True) -> int:
    from llmops.data.demo_site import start_demo_site
    from llmops.data.pipeline import format_report, run_data_pipeline

    logs = cfg.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    site_dir = cfg.home / "demo_site"
    site_dir.mkdir(parents=True, exist_ok=True)
    port = cfg.demo_site.port if _port_free(cfg.demo_site.host, cfg.demo_site.port) else 0
    with start_demo_site(cfg.demo_site, port=port, access_log=site_dir / "access.jsonl") as site:
        print(f"==> demo site serving on {site.url}", flush=True)
        (site_dir / "ground_truth.json").write_text(json.dumps(site.ground_truth, indent=2))
        if not use_airflow:
            from llmops.training.pipeline import format_training_summary, run_training_pipeline
            from llmops.training.runner import console_printer

            print(format_report(run_data_pipeline(cfg, seed_url=site.url, progress=True, full=True)))
            print(format_training_summary(run_training_pipeline(cfg, on_line=console_printer())))
            return 0
        env = airflow_env(cfg)
        Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        airflow = str(Path(sys.executable).parent / "airflow")
        _run_logged([airflow, "db", "migrate"], env, logs / "airflow-db-migrate.log", "airflow db migrate")
        conf = json.dumps({"seed_url": site.url})
        _run_logged([airflow, "dags", "test", "llmops_data", "-c", conf], env, logs / "llmops_data-dags-test.log",
                    "airflow dags test llmops_data")
    data_report = _latest_report(cfg, "llmops_data")
    # The scheduler would start llmops_train on the llmops://tokens event; `dags test`
    # runs one DAG, so the demo starts it next (it trains on the newest data card).
    _run_logged([airflow, "dags", "test", "llmops_train"], env, logs / "llmops_train-dags-test.log",
                "airflow dags test llmops_train (DeepSpeed, 2 CPU ranks)")
    train_report = _latest_report(cfg, "llmops_train")
    summary = json.loads((train_report / "summary.json").read_text())
    served = next(e for e in summary["finetune"] if e["name"] == summary["served_variant"])
    # The scheduler would start llmops_evaluate on the llmops://model event; here it is
    # started with the served variant's directory.
    conf = json.dumps({"model_path": served["model"], "variant": served["name"]})
    _run_logged([airflow, "dags", "test", "llmops_evaluate", "-c", conf], env, logs / "llmops_evaluate-dags-test.log",
                "airflow dags test llmops_evaluate (evaluation gate, MLflow registry)")
    served_answers = _deploy_and_ask(cfg, env, airflow, logs)
    print((data_report / "summary.txt").read_text())
    print((train_report / "summary.txt").read_text())
    print(_registered_summary(cfg))
    print(served_answers)
    print(f"Reports: {data_report}\n         {train_report}\nArtifacts: {cfg.home / 'artifacts'}\n"
          f"Browse the runs: make airflow (http://127.0.0.1:8080), make mlflow (http://127.0.0.1:5000)\n"
          f"Triton keeps serving: llmops generate \"What is the for statement?\" [--grpc]; "
          f"llmops serve status; llmops serve stop")
    return 0


def _deploy_and_ask(cfg: LlmopsConfig, env: dict[str, str], airflow: str, logs: Path) -> str:
    """Start the embedded Triton (serving the current champion, if any), deploy the new
    challenger through llmops_deploy, and ask the served model over HTTP and gRPC."""
    from llmops.registry.model_registry import CHALLENGER, SERVED_MODEL, version_for
    from llmops.serving.client import generate
    from llmops.serving.deploy import ensure_champion_in_repository
    from llmops.serving.server import TritonServer

    version = version_for(cfg, SERVED_MODEL, CHALLENGER)
    if version is None:
        return "llmops_deploy: skipped, no challenger was registered"
    server = TritonServer(cfg)
    if not server.is_running():
        ensure_champion_in_repository(cfg, progress=lambda line: print(f"    {line}", flush=True))
        print(f"==> starting Triton Inference Server on {server.http_url} (gRPC {server.grpc_address}, "
              f"log {server.log_path})", flush=True)
        server.start(progress=lambda line: print(f"    {line}", flush=True))
    # The scheduler would start llmops_deploy on the llmops://challenger event.
    conf = json.dumps({"model_version": int(version)})
    _run_logged([airflow, "dags", "test", "llmops_deploy", "-c", conf], env, logs / "llmops_deploy-dags-test.log",
                "airflow dags test llmops_deploy (staging, smoke tests, zero-downtime swap, champion)")
    question = "What is the for statement?"
    lines = ["\nllmops_deploy summary", f"  champion models:/{SERVED_MODEL}/{version} served by Triton at "
             f"{server.http_url} (HTTP) and {server.grpc_address} (gRPC)", f"  question: {question}"]
    for protocol, url in (("http", server.http_address), ("grpc", server.grpc_address)):
        answer = generate(question, url=url, protocol=protocol, model=cfg.serving.model_name)
        if answer.model_version != str(version):
            raise RuntimeError(f"the served model answered as version {answer.model_version}, expected {version}; "
                               f"see {logs / 'llmops_deploy-dags-test.log'}")
        lines.append(f"  {protocol:<4} answer (version {answer.model_version}, {answer.completion_tokens} tokens): "
                     f"{answer.text}")
    return "\n".join(lines)


def _latest_report(cfg: LlmopsConfig, dag_id: str) -> Path:
    latest = cfg.home / "reports" / dag_id / "latest.json"
    if not latest.exists():
        raise RuntimeError(f"{dag_id} finished but wrote no report ({latest} is missing)")
    return Path(json.loads(latest.read_text())["path"])


def _registered_summary(cfg: LlmopsConfig) -> str:
    """The challenger the demo registered, with its metrics and report."""
    from llmops.registry import tracking
    from llmops.registry.model_registry import CHALLENGER, SERVED_MODEL, version_for

    version = version_for(cfg, SERVED_MODEL, CHALLENGER)
    if version is None:
        return "llmops_evaluate: no challenger registered"
    mv = tracking.connect(tracking.tracking_uri(cfg)).get_model_version(SERVED_MODEL, version)
    metrics = {k.removeprefix("metric."): v for k, v in mv.tags.items() if k.startswith("metric.")}
    shown = ", ".join(f"{k} {metrics[k]}" for k in ("bits_per_byte", "perplexity", "bleu", "rougeL",
                                                     "pii_leak_rate", "behaviour_pass_rate") if k in metrics)
    run = tracking.connect(tracking.tracking_uri(cfg)).get_run(mv.run_id)
    report = Path(cfg.home) / "reports" / "evaluation"
    return (f"llmops_evaluate summary\n  registered models:/{SERVED_MODEL}/{version} (alias {CHALLENGER}), gate "
            f"{mv.tags.get('gate_result')}\n  metrics    {shown}\n  MLflow run {run.info.run_id}; reports under "
            f"{report}")

