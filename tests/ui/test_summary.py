"""The LLMOps view's summary, built from a home the project's own writers filled (``closed_loop``)
and from an empty one: what each section shows, what it says when it has nothing, and that one
section failing leaves the others standing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmops.config import load_config
from llmops.layout import Layout, safe_name
from llmops.records.ui import Summary
from llmops.ui import summary as view
from llmops.ui.summary import ReportPathError, build_summary, report_file
from tests.ui.conftest import DATA_RUN, NOW, RETRAIN_RUN, TRAIN_RUN, Home, config


@pytest.fixture(scope="module")
def summary(closed_loop: Home) -> Summary:
    runs = {"llmops_data": [DATA_RUN, "manual__other"], "llmops_train": [TRAIN_RUN]}
    return build_summary(closed_loop.cfg, now=NOW, airflow_runs=runs, host="airflow.example")


def test_an_empty_home_says_what_is_missing_in_every_section_and_writes_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path / "home")

    s = build_summary(cfg)

    for section, words in ((s.data, "no data card yet"), (s.training, "no training run yet"),
                           (s.registry, "nothing evaluated or registered yet"),
                           (s.deployment, "Triton is not answering"), (s.drift, "no drift check yet")):
        assert section.state == "empty" and words in (section.note or ""), section
    assert s.registry.champion is None and s.deployment.traffic is None
    assert not (tmp_path / "home").exists()  # no MLflow store created, no snapshot, nothing
    assert Summary.load(json.loads(json.dumps(s.dump()))) == s  # the JSON reads back as the record


def test_data_runs_show_the_newest_card_and_the_champions_with_counts_and_their_runs(
        summary: Summary, closed_loop: Home) -> None:
    data = summary.data
    assert data.state == "ok" and data.total_cards == 3
    newest, champions, first = data.cards
    assert (newest.key, newest.newest, newest.champion) == (closed_loop.newest_card, True, False)
    assert (champions.key, champions.newest, champions.champion) == (closed_loop.increment_card, False, True)
    assert (first.key, first.newest, first.champion) == (closed_loop.first_card, False, False)
    # The increment was made by the retraining run; the first card by the data run its report names;
    # the newest has no report (and so no run) to show.
    assert champions.run is not None and (champions.run.dag_id, champions.run.run_id) == ("llmops_retrain",
                                                                                          RETRAIN_RUN)
    assert first.run is not None and (first.run.dag_id, first.run.run_id) == ("llmops_data", DATA_RUN)
    assert newest.run is None and newest.funnel is None
    assert first.funnel == f"llmops_data/{safe_name(DATA_RUN)}/funnel.png"
    assert first.sources[0].failed_by_reason == {"http_404": 2}
    assert first.documents.dropped_by_filter == {"length": 1}
    assert first.documents.exact_duplicates_removed == 1
    assert first.pii_counts_by_type == {"PERSON": 3, "EMAIL_ADDRESS": 2}  # counts per type: the card has no value
    assert (first.docs_with_pii, first.qa_finetune, first.train_tokens) == (3, 10, 617)
    assert (champions.new_documents, champions.replay_documents) == (24, 20) and first.new_documents is None


def test_training_runs_carry_their_loss_curves_and_say_why_one_is_missing(summary: Summary) -> None:
    (run,) = summary.training.runs
    assert run.run is not None and run.run.run_id == TRAIN_RUN and run.report == f"llmops_train/{safe_name(TRAIN_RUN)}"
    pretrain, qa, full = run.jobs
    assert (pretrain.kind, pretrain.name, pretrain.steps, pretrain.final_val_loss) == ("pretrain", "tiny", 200, 4.85)
    assert pretrain.curve is not None and len(pretrain.curve.train) == 201 and len(pretrain.curve.validation) == 21
    assert pretrain.curve.train[0] == (0.0, 8.35) and pretrain.curve.train[-1] == (200.0, pytest.approx(6.35))
    assert qa.served and not pretrain.served and not full.served
    assert full.curve is None and "is gone" in (full.curve_note or "")


def test_long_curves_are_thinned_but_keep_their_last_point() -> None:
    points = [(step, 10.0 - step / 1000) for step in range(1001)]
    thin = view._thin(points, limit=300)
    assert len(thin) <= 301 and thin[0] == (0.0, 10.0) and thin[-1] == (1000.0, 9.0)


def test_the_registry_shows_versions_aliases_lineage_and_every_gate_verdict(summary: Summary,
                                                                           closed_loop: Home) -> None:
    reg = summary.registry
    assert reg.state == "ok" and (reg.champion, reg.challenger) == ("2", "2")
    v2, v1 = reg.versions
    assert v2.version == "2" and set(v2.aliases) == {"champion", "challenger"} and v1.aliases == []
    assert (v2.base_version, v2.data_card_hash, v2.previous_champion) == ("1", closed_loop.increment_card, "1")
    assert v1.base_version is None and v1.data_card_hash == closed_loop.first_card
    assert v2.gate_result == "passed" and v2.metrics == {"bits_per_byte": 1.97, "rougeL": 0.128}
    (check,) = v2.gate_checks
    assert check.passed and check.name == "floor.bits_per_byte.max" and "1.97" in check.detail
    assert reg.mlflow_ui == f"http://airflow.example:{closed_loop.cfg.mlflow.ui_port}"
    assert len(reg.evaluations) == 3
    failed = next(e for e in reg.evaluations if e.passed is False)
    assert failed.report == f"evaluation/{closed_loop.failed_evaluation}" and failed.champion_compared
    (bad,) = [c for c in failed.checks if not c.passed]
    assert (bad.metric, bad.value, bad.threshold) == ("bits_per_byte", 2.38, 2.2)


def test_with_triton_down_the_deployment_says_so_and_still_shows_the_traffic(summary: Summary) -> None:
    dep = summary.deployment
    assert dep.state == "empty" and "Triton is not answering" in (dep.note or "") and not dep.live
    assert dep.champion == "2" and dep.last_deploy is not None and dep.last_deploy.version == 2
    traffic = dep.traffic
    assert traffic is not None
    assert (traffic.requests, traffic.answered, traffic.refused, traffic.errors) == (50, 45, 5, 0)
    assert traffic.versions == {"2": 45} and traffic.per_minute == pytest.approx(50 / 60)
    # compute_ms 10 .. 59 ms, the refused (k = 9, 19, ...) left out of the percentiles
    assert traffic.compute_ms_p50 == 34.0 and traffic.compute_ms_p99 == pytest.approx(57.56)
    assert len(traffic.timeline) == 60 and sum(b.answered for b in traffic.timeline) == 45


def test_the_deployment_reads_a_real_triton_and_says_when_the_model_is_not_loaded(tmp_path: Path) -> None:
    from llmops.serving.server import TritonServer

    cfg = config(tmp_path / "triton_home")
    server = TritonServer(cfg)
    server.start()
    try:
        dep = build_summary(cfg).deployment
    finally:
        server.stop(timeout=30)
    assert dep.state == "ok" and dep.live and dep.ready and not dep.model_ready, dep
    assert "llmops is not loaded" in (dep.triton_note or "")
    assert dep.counters is not None and dep.counters.success == 0
    assert dep.since_last_check is not None and not dep.since_last_check.available  # the monitor never checked
    assert not cfg.layout.monitor_state.exists()  # and the view did not take the monitor's snapshot


def test_drift_shows_each_signal_over_the_checks_and_the_retrainings_it_caused(summary: Summary) -> None:
    drift = summary.drift
    assert drift.total_checks == 3 and [c.verdict for c in drift.checks] == ["drift", "drift", "no_drift"]
    assert drift.checks[0].report.startswith("llmops_monitor/") and drift.checks[0].version == "1"
    by_name = {s.name: s for s in drift.signals}
    assert list(by_name) == ["token_js", "bits_per_byte_ratio", "p95_latency_ms"]  # data, quality, service
    token_js = by_name["token_js"].points
    assert len(token_js) == 6 and all(p.threshold == 0.45 for p in token_js)  # 2 windows per check
    assert [p.drifted for p in token_js] == [False, False, True, True, True, True]
    assert token_js[-1].drift_decided and not token_js[0].drift_decided
    assert all(p.value is None for p in by_name["bits_per_byte_ratio"].points)
    started, skipped = drift.decisions
    assert (started.decision.outcome, started.run.dag_id, started.run.run_id) == ("started", "llmops_retrain",
                                                                                   RETRAIN_RUN)
    assert skipped.decision.reason == "cooldown: 4h left"
    assert drift.retrain_starts == [NOW - 3500]


def test_a_section_that_cannot_be_read_says_why_and_the_others_still_show(closed_loop: Home, tmp_path: Path) -> None:
    cfg = closed_loop.cfg
    card = cfg.layout.stage_output("data_card", closed_loop.increment_card) / "data_card.json"
    original = card.read_text()
    try:
        card.write_text(original.replace('"documents"', '"documentz"'))  # a renamed field
        s = build_summary(cfg, now=NOW)
    finally:
        card.write_text(original)
    assert s.data.state == "error" and "documentz" in (s.data.note or "") and "RecordError" in (s.data.note or "")
    assert s.training.state == s.registry.state == s.drift.state == "ok"


def test_the_report_kinds_are_their_writers(closed_loop: Home) -> None:
    from llmops.data.pipeline import REPORT_KIND as data
    from llmops.monitoring.check import REPORT_KIND as drift
    from llmops.training.pipeline import REPORT_KIND as train

    assert (data, train, drift) == (view.DATA_REPORTS, view.TRAIN_REPORTS, view.DRIFT_REPORTS)
    assert closed_loop.cfg.layout.latest_report(view.DEPLOY_REPORTS).is_file()
    assert closed_loop.cfg.layout.reports(view.EVAL_REPORTS).is_dir()


# ---- report files: the only files the view serves ---------------------------------------------


def test_report_files_resolve_under_the_reports_only(closed_loop: Home, tmp_path: Path) -> None:
    layout = closed_loop.cfg.layout
    funnel = f"llmops_data/{safe_name(DATA_RUN)}/funnel.png"
    assert report_file(layout, funnel) == layout.report("llmops_data", DATA_RUN) / "funnel.png"
    assert report_file(layout, f"evaluation/{closed_loop.failed_evaluation}/metrics.json").is_file()
    refused = ["", "/etc/passwd", "../mlflow.db", "llmops_data/../../mlflow.db", "llmops_data/..",
               f"llmops_data/{safe_name(DATA_RUN)}/../../../mlflow.db", "artifacts/data_card/x/data_card.json",
               "llmops_data", "llmops_data/", "llmops_data//funnel.png", "llmops_data/./latest.json",
               "evaluation/.tmp-x/metrics.json", "llmops_data\\..\\..\\mlflow.db", "llmops_data/x\x00.png",
               f"llmops_data/{safe_name(DATA_RUN)}", f"llmops_data/{safe_name(DATA_RUN)}/nothing.png"]
    for path in refused:
        with pytest.raises(ReportPathError):
            report_file(layout, path)


def test_a_symlink_out_of_the_reports_is_refused(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "home")
    secret = tmp_path / "home" / "airflow" / "simple_auth_manager_passwords.json.generated"
    secret.parent.mkdir(parents=True)
    secret.write_text('{"admin": "s3cret"}')
    run = layout.report("llmops_data", "run")
    run.mkdir(parents=True)
    os.symlink(secret, run / "passwords.json")
    os.symlink(secret.parent, run / "airflow")
    for path in ("llmops_data/run/passwords.json", "llmops_data/run/airflow/simple_auth_manager_passwords.json"
                 ".generated"):
        with pytest.raises(ReportPathError, match="outside"):
            report_file(layout, path)


def test_report_path_names_a_file_under_the_reports_or_nothing(tmp_path: Path) -> None:
    layout = load_config(environ={}, overrides={"home": str(tmp_path)}).layout
    inside = layout.report("llmops_monitor", "20270115T080000.000000Z-v1") / "drift.html"
    assert view.report_path(layout, inside) == "llmops_monitor/20270115T080000.000000Z-v1/drift.html"
    assert view.report_path(layout, layout.mlflow_db) is None
    assert view.report_path(layout, layout.reports("llmops_data")) is None
