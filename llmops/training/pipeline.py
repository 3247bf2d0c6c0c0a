"""The training half in one process (pretrain -> export -> fine-tune each variant -> export),
for ``llmops demo --no-airflow`` and scripts; the ``llmops_train`` DAG runs the same
steps as separate tasks. Also the run summary both write for people."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmops.config import LlmopsConfig


def model_entry(job_result: dict[str, Any], exported: Any) -> dict[str, Any]:
    return {"name": job_result["name"], "run_dir": str(Path(exported.manifest["inputs"]["run"]["path"])),
            "model": str(exported.path), "hash": exported.key,
            "first_val_loss": job_result.get("first_val_loss"), "final_val_loss": job_result.get("final_val_loss"),
            "steps": job_result.get("steps"), "mlflow_run_id": job_result.get("mlflow_run_id")}


def run_training_pipeline(cfg: LlmopsConfig, *, data_card: str | Path | None = None,
                          on_line: Callable[[str], None] | None = None) -> dict[str, Any]:
    from llmops.training.export import export_stage
    from llmops.training.job import prepare_finetune, prepare_pretrain
    from llmops.training.runner import run_training

    job = prepare_pretrain(cfg, data_card=data_card)
    result = run_training(job, on_line)
    base = export_stage(cfg, job.run_dir)
    summary: dict[str, Any] = {"pretrain": model_entry(result, base), "finetune": []}
    for variant in cfg.finetune.variants:
        ft = prepare_finetune(cfg, variant=variant.name, base=base.path, data_card=data_card)
        ft_result = run_training(ft, on_line)
        summary["finetune"].append(model_entry(ft_result, export_stage(cfg, ft.run_dir)))
    return summary


def format_training_summary(summary: dict[str, Any]) -> str:
    def line(kind: str, entry: dict[str, Any]) -> str:
        first, final = entry.get("first_val_loss"), entry.get("final_val_loss")
        losses = (f"validation loss {first:.3f} at step 0 -> {final:.3f} at step {entry['steps']}"
                  if first is not None and final is not None else "")
        return f"  {kind:<9} {entry['name']:<10} {losses}\n            model {entry['model']}"

    out = ["llmops_train summary"]
    if summary.get("pretrain"):
        out.append(line("pretrain", summary["pretrain"]))
    for entry in summary.get("finetune", []):
        out.append(line("finetune", entry))
    return "\n".join(out)


def write_training_summary(home: Path, run_id: str, summary: dict[str, Any]) -> Path:
    from llmops.data.pipeline import _safe_name

    out = Path(home) / "reports" / "llmops_train" / _safe_name(run_id)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.txt").write_text(format_training_summary(summary) + "\n")
    (out.parent / "latest.json").write_text(json.dumps({"run_id": run_id, "path": str(out)}) + "\n")
    return out
