"""Training's records: each round-trips, refuses an unknown field, and reads what the code
before records wrote (``tests/data/records_v0``: version 0, no ``schema_version``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.config import FinetuneConfig, PretrainConfig
from llmops.records.base import Record, RecordError
from llmops.records.common import CodeIdentity, InputRef
from llmops.records.stages import LatestReport
from llmops.records.training import (
    CheckpointMarker,
    ExportSummary,
    FinetuneDataSpec,
    FinetuneModelSpec,
    JobLockRecord,
    LaunchSpec,
    Lineage,
    MlflowRunRef,
    ModelInfo,
    ParameterCount,
    PretrainDataSpec,
    PretrainModelSpec,
    TrainedJob,
    TrainedModel,
    TrainingJobArgs,
    TrainingJobSpec,
    TrainingReport,
    TrainingResult,
)
from llmops.training.model import load_preset

V0 = Path(__file__).resolve().parent.parent / "data" / "records_v0"
CODE = CodeIdentity(version="0.1.0", source_sha256="d25159ea80ee", commit="4" * 40, dirty=False)
LAUNCH = LaunchSpec(world_size=2, ranks_per_node=2, nodes=1, device="cpu", precision="fp32", threads_per_rank=1,
                    activation_checkpointing=False, zero_stage=2, timeout_s=600, command=["python", "-m", "x"])
TOKENIZER = InputRef(path="/h/artifacts/tokenizer/k", hash="t" * 64, sha256="s" * 64)


def _pretrain_job() -> TrainingJobSpec:
    return TrainingJobSpec(
        kind="pretrain", name="tiny", key="f106bac7ca7be06b", run_dir="/h/runs/pretrain/tiny-f106bac7ca7be06b",
        inputs={"tokens": InputRef(path="/h/artifacts/tokens/k", hash="a" * 64), "tokenizer": TOKENIZER},
        lineage=Lineage(data_card=InputRef(path="/h/artifacts/data_card/c", hash="c", output_hash="o" * 64)),
        model=PretrainModelSpec(preset_name="tiny", preset=load_preset("tiny"), vocab_size=1024, eos_id=0, pad_id=1),
        data=PretrainDataSpec(tokens="/h/artifacts/tokens/k", context_length=64), tokenizer="/h/artifacts/tokenizer/k",
        loop=PretrainConfig(steps=30), deepspeed={"zero_optimization": {"stage": 2}}, launch=LAUNCH,
        mlflow=MlflowRunRef(tracking_uri="sqlite:////h/mlflow.db", run_id="r1", system_metrics=True,
                            system_metrics_interval_s=5.0),
        version=1, code_version="git:444444444444", code=CODE)


def _finetune_job() -> TrainingJobSpec:
    return TrainingJobSpec(
        kind="finetune", name="qa", key="f1cc0ad2d8586552", run_dir="/h/runs/finetune/qa-f1cc0ad2d8586552",
        inputs={"base": InputRef(path="/h/artifacts/model/m", hash="b" * 64), "tokenizer": TOKENIZER,
                "pairs": InputRef(path="/h/qa.jsonl", hash="p" * 64)},
        lineage=Lineage(base_source="models:/llmops/1", base_job_key="f106bac7ca7be06b"),
        model=FinetuneModelSpec(base="/h/artifacts/model/m", method="lora"),
        data=FinetuneDataSpec(pairs="/h/qa.jsonl", max_length=96, validation_fraction=0.1),
        tokenizer="/h/artifacts/model/m", loop=FinetuneConfig(steps=16), finetune=FinetuneConfig(steps=16),
        deepspeed={}, launch=LAUNCH, version=1, code_version="git:444444444444", code=CODE)


RECORDS: list[Record] = [
    _pretrain_job(),
    _finetune_job(),
    TrainingResult(kind="pretrain", name="tiny", key="k", steps=30, first_val_loss=7.0, final_val_loss=5.0,
                   checkpoint="/h/runs/pretrain/tiny-k/checkpoints/step_00000030",
                   parameters=ParameterCount(total=10, trainable=10), world_size=2, mlflow_run_id=None,
                   train_samples=400, val_samples=20, train_tokens_dropped=41),
    CheckpointMarker(step=30, world_size=2, zero_stage=2, saved_at="2026-01-01T00:00:00+00:00"),
    ExportSummary(kind="pretrain", name="tiny", parameters=10, first_val_loss=7.0, final_val_loss=5.0,
                  mlflow_run_id=None),
    JobLockRecord(token="t", pid=42, pid_started=1.5, pgid=43, leader_started=1.6, hostname="node",
                  started_at="2026-01-01T00:00:00+00:00", command=["deepspeed"]),
    TrainingJobArgs(data_card="/h/artifacts/data_card/c", mlflow_parent="p"),
    TrainedJob(kind="finetune", name="qa", run_dir="/h/runs/finetune/qa-k", first_val_loss=4.0,
               final_val_loss=3.0, steps=16, mlflow_run_id="r"),
    TrainingReport(pretrain=TrainedModel(name="tiny", model="/h/artifacts/model/m", hash="m", run_dir="/h/r",
                                         first_val_loss=7.0, final_val_loss=5.0, steps=30, mlflow_run_id="r"),
                   finetune=[TrainedModel(name="base", model="models:/llmops/1", hash=None)],
                   data_card="/h/artifacts/data_card/c", served_variant="qa"),
    LatestReport(run_id="manual__2026-01-01T00:00:00+00:00", path="/h/reports/llmops_train/manual__x"),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_a_record_reads_back_equal(record: Record, tmp_path):
    path = record.write(tmp_path / "record.json")
    assert type(record).read(path) == record
    assert type(record).load(json.loads(json.dumps(record.dump()))) == record  # as an XCom


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_an_unknown_field_is_refused(record: Record):
    with pytest.raises(RecordError, match="renamed_field"):
        type(record).load(record.dump() | {"renamed_field": 1})


def test_a_job_spec_refuses_a_nested_typo_and_parts_of_another_kind():
    job = _pretrain_job().dump()
    with pytest.raises(RecordError, match=r"launch\.world_sise"):
        TrainingJobSpec.load(job | {"launch": job["launch"] | {"world_sise": 2}})
    with pytest.raises(RecordError, match="not those of a finetune job"):
        TrainingJobSpec.load(job | {"kind": "finetune"})


def test_a_job_spec_refuses_a_typo_in_its_preset():
    job = _pretrain_job().dump()
    preset = job["model"]["preset"] | {"hiden_size": 64}
    with pytest.raises(RecordError, match=r"model\.PretrainModelSpec\.preset\.hiden_size"):
        TrainingJobSpec.load(job | {"model": job["model"] | {"preset": preset}})


def test_an_export_summary_has_the_manifest_summary_keys():
    """The model manifest's summary keeps the keys it had (a null ``mlflow_run_id`` included)."""
    stored = json.loads((V0 / "pretrain_model_manifest.json").read_text())["summary"]
    assert ExportSummary.load(stored).model_dump(mode="json") == stored
    info = ModelInfo.read(V0 / "pretrain_llmops_model.json")
    assert list(ExportSummary.of(info).model_dump(mode="json")) == list(stored)
    summary = ExportSummary.of(info.model_copy(update={"mlflow_run_id": None})).model_dump(mode="json")
    assert summary["mlflow_run_id"] is None


def test_the_stored_job_leaves_out_what_is_not_the_jobs():
    """``loop`` is stored as keyed (no variants, no parallel jobs), ``finetune`` without variants."""
    stored = _finetune_job().dump()
    assert "variants" not in stored["loop"] and "parallel_jobs" not in stored["loop"]
    assert "variants" not in stored["finetune"] and "parallel_jobs" in stored["finetune"]


@pytest.mark.parametrize("record,name", [
    (TrainingJobSpec, "pretrain_job.json"), (TrainingJobSpec, "finetune_job.json"),
    (TrainingResult, "pretrain_result.json"), (TrainingResult, "finetune_result.json"),
    (CheckpointMarker, "complete.json"),
    (ModelInfo, "pretrain_llmops_model.json"), (ModelInfo, "finetune_llmops_model.json"),
    (TrainingReport, "llmops_train_summary.json"), (LatestReport, "llmops_train_latest.json"),
])
def test_a_file_written_before_records_reads(record: type[Record], name: str):
    stored = json.loads((V0 / name).read_text())
    assert "schema_version" not in stored
    read = record.read(V0 / name)
    # Every key of the old file is a field of the record, with the same value.
    assert {k: v for k, v in read.dump().items() if k in stored} == stored


def test_an_old_job_spec_gives_the_ranks_typed_settings():
    job = TrainingJobSpec.read(V0 / "finetune_job.json")
    assert isinstance(job.model, FinetuneModelSpec) and job.model.method == "full"
    assert isinstance(job.loop, FinetuneConfig) and job.finetune is not None and job.finetune.lora_r == 16
    assert job.launch.world_size == 2 and job.mlflow is not None and job.lineage.base_job_key == "f106bac7ca7be06b"
