"""The real thing: `airflow db migrate` + `airflow dags test llmops_data` on SQLite,
crawling the demo site, exactly as `make demo` does (with a faster crawl config)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llmops.config import DemoSiteConfig
from llmops.data.demo_site import start_demo_site
from tests.dags.conftest import airflow_env

AIRFLOW = str(Path(sys.executable).parent / "airflow")
pytestmark = pytest.mark.slow


def _run(cmd: list[str], env: dict[str, str], log: Path) -> None:
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == 0, log.read_text()[-4000:]


def test_llmops_data_dag_runs_in_airflow_and_publishes_the_corpus(tmp_path):
    home = tmp_path / "home"
    env = airflow_env(home) | {
        "LLMOPS_SCRAPE__TIMEOUT_S": "1.0",
        "LLMOPS_SCRAPE__RETRIES": "1",
        "LLMOPS_SCRAPE__BACKOFF_S": "0.05",
        "LLMOPS_SCRAPE__RATE_LIMIT_PER_HOST": "500",
    }
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True)
    _run([AIRFLOW, "db", "migrate"], env, tmp_path / "migrate.log")
    with start_demo_site(DemoSiteConfig(slow_delay_s=2.0), port=0) as site:
        conf = {"seed_url": site.url, "num_shards": 3, "max_pages": 400}
        _run([AIRFLOW, "dags", "test", "llmops_data", "-c", json.dumps(conf)], env, tmp_path / "dags-test.log")
    log = (tmp_path / "dags-test.log").read_text()
    assert "XCom not found" not in log

    db = sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db")
    states = db.execute("select task_id, map_index, state from task_instance").fetchall()
    assert {s for _, _, s in states} == {"success"}, states
    assert sorted(m for t, m, _ in states if t == "extract") == [0, 1, 2]  # mapped over 3 shards

    (uri, extra_json), = db.execute(
        "select a.uri, e.extra from asset_event e join asset a on a.id = e.asset_id").fetchall()
    extra = json.loads(extra_json)
    assert uri == "llmops://corpus/"
    corpus_dir = Path(extra["path"])
    assert corpus_dir.parent == home / "artifacts" / "dedup"
    manifest = json.loads((corpus_dir / "manifest.json").read_text())
    assert extra["hash"] == manifest["key"] == corpus_dir.name
    assert (corpus_dir / "corpus.parquet").exists()
    assert manifest["summary"]["docs_out"] == extra["documents"] > 70

    latest = json.loads((home / "reports" / "llmops_data" / "latest.json").read_text())
    summary = json.loads((Path(latest["path"]) / "summary.json").read_text())
    assert (Path(latest["path"]) / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["crawl"]["failed_by_reason"]["timeout"] == 1
    assert summary["extract"]["shards"] == 3
    assert summary["dedup"]["exact_duplicates_removed"] + summary["dedup"]["near_duplicates_removed"] == len(
        site.ground_truth["duplicates"])
