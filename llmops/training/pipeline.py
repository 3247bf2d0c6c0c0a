"""The training half in one process (pretrain -> export -> fine-tune each variant -> export),
for ``llmops demo --no-airflow`` and scripts; the ``llmops_train`` DAG runs the same
steps as separate tasks. Also the run summary both write for people."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llmops.artifacts import StageResult
from llmops.config import LlmopsConfig
from llmops.layout import Layout
from llmops.records.stages import LatestReport
from llmops.records.training import TrainedJob, TrainedModel, TrainingReport

REPORT_KIND = "llmops_train"


def model_entry(trained: TrainedJob, exported: StageResult) -> TrainedModel:
    """The exported model of the finished job ``trained`` (an export task's XCom, a report's entry)."""
    return TrainedModel(name=trained.name, run_dir=trained.run_dir, model=str(exported.path), hash=exported.key,
                        first_val_loss=trained.first_val_loss, final_val_loss=trained.final_val_loss,
                        steps=trained.steps, mlflow_run_id=trained.mlflow_run_id)


def run_training_pipeline(cfg: LlmopsConfig, *, data_card: str | Path | None = None,
                          on_line: Callable[[str], None] | None = None) -> TrainingReport:
    from llmops.training.export import export_stage
    from llmops.training.job import prepare_finetune, prepare_pretrain
    from llmops.training.runner import run_training

    job = prepare_pretrain(cfg, data_card=data_card)
    run_training(job, on_line)
    base = export_stage(cfg, job.run_dir)
    report = TrainingReport(pretrain=model_entry(job.trained(), base))
    for variant in cfg.finetune.variants:
        ft = prepare_finetune(cfg, variant=variant.name, base=base.path, data_card=data_card)
        run_training(ft, on_line)
        report.finetune.append(model_entry(ft.trained(), export_stage(cfg, ft.run_dir)))
    return report


def format_training_summary(report: TrainingReport) -> str:
    def line(kind: str, entry: TrainedModel) -> str:
        first, final = entry.first_val_loss, entry.final_val_loss
        losses = (f"validation loss {first:.3f} at step 0 -> {final:.3f} at step {entry.steps}"
                  if first is not None and final is not None else "")
        return f"  {kind:<9} {entry.name:<10} {losses}\n            model {entry.model}"

    out = ["llmops_train summary"]
    if report.pretrain:
        out.append(line("pretrain", report.pretrain))
    for entry in report.finetune:
        out.append(line("finetune", entry))
    return "\n".join(out)


def write_training_summary(home: Path, run_id: str, report: TrainingReport) -> Path:
    """``reports/llmops_train/<run>/`` (``summary.json``, ``summary.txt``), and ``latest.json`` pointing to it."""
    layout = Layout(home)
    out = layout.report(REPORT_KIND, run_id)
    out.mkdir(parents=True, exist_ok=True)
    report.write(out / TrainingReport.NAME)
    (out / "summary.txt").write_text(format_training_summary(report) + "\n")
    LatestReport(run_id=run_id, path=str(out)).write(layout.latest_report(REPORT_KIND))
    return out
