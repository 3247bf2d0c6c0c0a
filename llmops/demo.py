"""``llmops demo`` (what ``make demo`` runs): the demo site plus the data DAG, for real.

Starts the demo website in a background thread, prepares the embedded Airflow
(SQLite under ``$LLMOPS_HOME/airflow``), runs ``airflow dags test llmops_data`` with
the site's URL as a Param, and prints the run summary the DAG's report task wrote.
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
            print(format_report(run_data_pipeline(cfg, seed_url=site.url, progress=True, full=True)))
            return 0
        env = airflow_env(cfg)
        Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        airflow = str(Path(sys.executable).parent / "airflow")
        _run_logged([airflow, "db", "migrate"], env, logs / "airflow-db-migrate.log", "airflow db migrate")
        conf = json.dumps({"seed_url": site.url})
        _run_logged([airflow, "dags", "test", "llmops_data", "-c", conf], env, logs / "llmops_data-dags-test.log",
                    "airflow dags test llmops_data")
    latest = cfg.home / "reports" / "llmops_data" / "latest.json"
    if not latest.exists():
        raise RuntimeError(f"the DAG finished but wrote no report ({latest} is missing)")
    report_dir = Path(json.loads(latest.read_text())["path"])
    print((report_dir / "summary.txt").read_text())
    print(f"Reports: {report_dir}\nArtifacts: {cfg.home / 'artifacts'}\n"
          f"Browse the run in the UI: make airflow  (then open http://127.0.0.1:8080)")
    return 0
