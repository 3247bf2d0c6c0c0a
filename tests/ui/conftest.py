"""An ``LLMOPS_HOME`` as a closed loop leaves it, written by the project's own writers: three
data cards (v1's with its data run report, the retraining's increment v2 was trained on, a later
crawl's), a training report with its jobs' metrics, three evaluations (one failed gate), an
MLflow registry with two versions (v2 champion, retrained from v1), a deploy report, an hour of
inference log, drift checks and retraining decisions. No Triton runs there: the view must say
so (one test starts a real one in a home of its own).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmops.artifacts import build_stage
from llmops.config import LlmopsConfig, load_config
from llmops.data.pipeline import write_report
from llmops.layout import Layout
from llmops.monitoring import log as inference_log
from llmops.records.data import DataCardSummary
from llmops.records.evaluation import EvalMetrics, EvaluationReport, GateCheck, GateResult, ModelLineage
from llmops.records.monitoring import (
    DriftReport,
    ReferenceSummary,
    ServiceWindow,
    Signal,
    WindowResult,
)
from llmops.records.retrain import IncrementSummary, RetrainBase, RetrainDecision
from llmops.records.serving import DeployResult
from llmops.records.training import TrainedModel, TrainingReport
from llmops.registry.data_card import write_data_card
from llmops.retrain.guards import record
from llmops.stack import free_ports
from llmops.training.pipeline import write_training_summary
from tests.data.test_report_plot import REPORT
from tests.monitoring.test_drift import records
from tests.registry.test_data_card import _card

NOW = 1_800_000_000.0
"""The view's "now" in these tests (2027-01-15 08:00 UTC)."""
DATA_RUN = "manual__2027-01-15T06:00:00.123456+00:00"
TRAIN_RUN = "asset_triggered__2027-01-15T06:05:00.000000+00:00_AbCd1234"
RETRAIN_RUN = "asset_triggered__2027-01-15T07:30:00.000000+00:00_XyZ98765"


@dataclass
class Home:
    cfg: LlmopsConfig
    first_card: str
    """v1's data card (a data run, with its report)."""
    increment_card: str
    """v2's, the champion's: the retraining's increment."""
    newest_card: str
    """A later data run's, not trained on yet."""
    failed_evaluation: str


def config(home: Path) -> LlmopsConfig:
    """A configuration of ``home`` on free ports (nothing answers there), not read from the environment."""
    http, grpc, metrics, mlflow_ui = free_ports(4)
    return load_config(environ={}, overrides={
        "home": str(home), "serving": {"http_port": http, "grpc_port": grpc, "metrics_port": metrics},
        "mlflow": {"ui_port": mlflow_ui}})


def _data_card(cfg: LlmopsConfig, crawl: str, **update) -> Path:
    card = _card().model_copy(update=update)

    def build(tmp: Path) -> DataCardSummary:
        write_data_card(card, tmp)
        return DataCardSummary(contamination=card.contamination, mlflow_run_id=None)

    return build_stage(cfg.home, "data_card", {"crawl": {"key": crawl, "path": f"/crawls/{crawl}"}}, {}, build).path


def _metrics(run_dir: Path, steps: int, start: float) -> None:
    """``metrics.jsonl`` as the training worker writes it: train loss every step, validation every 10."""
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.jsonl", "w") as fh:
        for step in range(steps + 1):
            fh.write(json.dumps({"step": step, "train_loss": start - 2 * step / steps, "lr": 1e-3}) + "\n")
            if step % 10 == 0:
                fh.write(json.dumps({"step": step, "val_loss": start - 1.5 * step / steps + 0.1}) + "\n")


def _evaluation(cfg: LlmopsConfig, model: str, gate: GateResult, bits_per_byte: float) -> Path:
    report = EvaluationReport(model=model, metrics=EvalMetrics(bits_per_byte=bits_per_byte, rougeL=0.12,
                                                               eval_data_hash="e1"), gate=gate)

    def build(tmp: Path) -> None:
        report.write(tmp)

    return build_stage(cfg.home, "evaluation", {"model": model}, {"id": model}, build,
                       parent=cfg.layout.reports("evaluation")).path


def _model_dir(path: Path, marker: str) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "marker": marker}))
    (path / "model.safetensors").write_bytes(marker.encode() * 8)
    return path


def _register(cfg: LlmopsConfig, tmp: Path, marker: str, gate: GateResult, lineage: ModelLineage) -> str:
    from llmops.registry import model_registry as reg, tracking

    run_id = tracking.job_run(cfg, f"eval-{marker}", f"evaluate-{marker}", parent_run_id=None)
    tags = gate.tags() | lineage.tags() | {"metric.bits_per_byte": "1.97", "metric.rougeL": "0.128"}
    return reg.register_model(cfg, _model_dir(tmp / marker, marker), run_id, tags=tags)


def _drift_report(cfg: LlmopsConfig, when: float, drifted: bool) -> None:
    token_js = 0.52 if drifted else 0.31
    windows = [WindowResult(start=when - 600 * (2 - k), end=when - 600 * (1 - k), requests=20,
                            votes=2 if drifted else 0, drifted=drifted,
                            signals=[Signal(name="token_js", kind="data", value=token_js + 0.01 * k, threshold=0.45,
                                            drifted=drifted),
                                     Signal(name="bits_per_byte_ratio", kind="quality", value=None, threshold=1.2,
                                            reason="no reference scores"),
                                     Signal(name="p95_latency_ms", kind="service", value=48.0, threshold=5000.0)])
               for k in range(2)]
    report = DriftReport(
        time=when, verdict="drift" if drifted else "no_drift",
        message=f"drift detected (token_js={token_js} > 0.45)" if drifted else "no drift (token_js=0.31 <= 0.45)",
        model="llmops", version="1", window="20", persistence=2, vote=2,
        reference=ReferenceSummary(heldout_questions=10), windows=windows,
        service=ServiceWindow(available=False, reason="Triton's metrics did not answer"))
    stamp = dt.datetime.fromtimestamp(when, tz=dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    out = cfg.layout.report("llmops_monitor", f"{stamp}-v1")
    out.mkdir(parents=True)
    report.model_copy(update={"report_dir": str(out)}).write(out / DriftReport.NAME)
    (out / "drift.html").write_text("<html><body>drift report</body></html>")


def _inference_log(cfg: LlmopsConfig) -> None:
    writer = inference_log.InferenceLogWriter(inference_log.log_dir(cfg), model="llmops", instance="i0",
                                              retention_s=10 * 365 * 86_400.0)
    for k, row in enumerate(records(50, seed=0)):
        row.version, row.time, row.compute_ms = "2", NOW - 1800 + 30 * k, 10.0 + k  # 10 .. 59 ms
        row.finish_reason = "refused" if k % 10 == 9 else "stop"
        writer.submit(inference_log.PendingRecord(row))
    writer.close()


@pytest.fixture(scope="session")
def closed_loop(tmp_path_factory: pytest.TempPathFactory) -> Home:
    root = tmp_path_factory.mktemp("ui_closed_loop")
    cfg = config(root / "home")
    layout = Layout(cfg.home)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow must not write ./mlruns into the checkout

        # Data: v1's card (a data run, with its report), the retraining's increment v2 was trained
        # on, and a later crawl's card nothing was trained on yet.
        first_card = _data_card(cfg, "crawl-1")
        write_report(cfg.home, DATA_RUN, REPORT, data_card=first_card)
        base = RetrainBase(version="1", model_uri="models:/llmops/1", data_card=str(first_card),
                           drift_report="/x/drift.json", trigger="drift", run_id=RETRAIN_RUN)
        increment = IncrementSummary(champion_version="1", chain=["1"], known_documents=81, corpus_documents=105,
                                     new_documents=24, replay_documents=20, new_pages=["http://h/library/json.html"],
                                     new_qa_pairs=30, base_qa_pairs=134)
        increment_card = _data_card(cfg, "crawl-2", retrain=base, increment=increment)
        newest_card = _data_card(cfg, "crawl-3")

        # Training: one llmops_train run (pretraining + the served LoRA variant).
        runs = cfg.home / "runs"
        _metrics(runs / "pretrain" / "tiny-k1", 200, 8.35)
        _metrics(runs / "finetune" / "qa-k2", 120, 4.2)
        write_training_summary(cfg.home, TRAIN_RUN, TrainingReport(
            pretrain=TrainedModel(name="tiny", model="/m/tiny", hash="k1", run_dir=str(runs / "pretrain" / "tiny-k1"),
                                  first_val_loss=8.35, final_val_loss=4.85, steps=200, mlflow_run_id="r1"),
            finetune=[TrainedModel(name="qa", model="/m/qa", hash="k2", run_dir=str(runs / "finetune" / "qa-k2"),
                                   first_val_loss=4.2, final_val_loss=3.3, steps=120),
                      TrainedModel(name="qa-full", model="/m/qa-full", hash="k3", run_dir=str(runs / "gone"))],
            data_card=str(first_card), served_variant="qa"))

        # The gate: v1 and v2 passed (registered); a third model failed (evaluation report only).
        passed = GateResult(passed=True, checks=[
            GateCheck(name="floor.bits_per_byte.max", metric="bits_per_byte", kind="floor", passed=True, value=1.97,
                      threshold=2.2)])
        failed = GateResult(passed=False, champion_compared=True, checks=[
            GateCheck(name="floor.bits_per_byte.max", metric="bits_per_byte", kind="floor", passed=False, value=2.38,
                      threshold=2.2),
            GateCheck(name="regression.rougeL", metric="rougeL", kind="regression", passed=True, value=0.12,
                      threshold=0.02, champion=0.128)])
        _evaluation(cfg, "/m/qa-v1", passed, 1.97)
        _evaluation(cfg, "/m/qa-v2", passed, 1.95)
        failed_evaluation = _evaluation(cfg, "/m/qa-overfit", failed, 2.38)

        from llmops.registry import model_registry as reg

        v1 = _register(cfg, root, "v1", passed, ModelLineage(base_model="from scratch", eval_data_hash="e1",
                                                             champion_compared="none",
                                                             data_card_hash=first_card.name))
        v2 = _register(cfg, root, "v2", passed, ModelLineage(base_model="/m/tiny", eval_data_hash="e1",
                                                             champion_compared="models:/llmops/1",
                                                             data_card_hash=increment_card.name, base_version=v1,
                                                             drift_report="/x/drift.json"))
        reg.promote_champion(cfg, v1)
        reg.promote_champion(cfg, v2)
        layout.reports("llmops_deploy").mkdir(parents=True)
        DeployResult(name="llmops", version=2, model_uri="models:/llmops/2", previous=1,
                     status="deployed").write(layout.latest_report("llmops_deploy"))

        # Monitoring: an hour of traffic, three checks (the last two drifted), the decisions.
        _inference_log(cfg)
        for when, drifted in ((NOW - 7200, False), (NOW - 5400, True), (NOW - 3600, True)):
            _drift_report(cfg, when, drifted)
        record(cfg, RetrainDecision(time=dt.datetime.fromtimestamp(NOW - 5300, dt.UTC), run_id="scheduled__x",
                                    trigger="schedule", outcome="skipped", reason="cooldown: 4h left",
                                    champion_version="1"))
        record(cfg, RetrainDecision(time=dt.datetime.fromtimestamp(NOW - 3500, dt.UTC), run_id=RETRAIN_RUN,
                                    trigger="drift", outcome="started", reason="published 24 new documents",
                                    champion_version="1", data_card=str(increment_card)))
    return Home(cfg=cfg, first_card=first_card.name, increment_card=increment_card.name,
                newest_card=newest_card.name, failed_evaluation=failed_evaluation.name)
