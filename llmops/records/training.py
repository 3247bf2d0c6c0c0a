"""Records of training: the model preset (``include/models/*.yaml``), the job spec
(``job.json``), its result (``result.json``), checkpoint markers (``complete.json``), the run
directory's lock (``job.lock``), the exported model's info (``llmops_model.json``) and its
manifest summary, and what the training tasks hand on (the operator's and the export tasks'
XComs, the ``llmops_train`` report)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, SerializationInfo, field_serializer, model_validator

from llmops.config import FinetuneConfig, PretrainConfig
from llmops.records.base import Record
from llmops.records.common import CodeIdentity, InputRef, Ref
from llmops.records.data import StageSummary

Kind = Literal["pretrain", "finetune"]
Device = Literal["cpu", "gpu"]
Precision = Literal["fp32", "bf16", "fp16"]

UNKEYED_LOOP_FIELDS = frozenset({"variants", "parallel_jobs"})
"""Settings of ``pretrain``/``finetune`` that are not a job's: how the DAG maps variants onto tasks."""


# ---- the model preset (include/models/<name>.yaml) --------------------------------------

Number = int | float
"""A real-valued preset setting, kept as the YAML wrote it (``10000`` an int, ``10000.0`` a
float): the preset enters the job's key as it is, so a loaded preset keys as its YAML did."""


class ModelPreset(Ref):
    """A model preset: the ``LlamaConfig`` architecture fields it sets. A field it leaves
    unset is left out (transformers' default applies), so the preset reads, dumps and keys
    exactly as the YAML mapping it was loaded from."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int | None = None
    """Grouped-query attention; unset: one per attention head."""
    head_dim: int | None = None
    """Unset: ``hidden_size // num_attention_heads``."""
    max_position_embeddings: int | None = None
    rope_theta: Number | None = None
    rms_norm_eps: Number | None = None
    tie_word_embeddings: bool | None = None
    initializer_range: Number | None = None
    attention_dropout: Number | None = None
    hidden_act: str | None = None

    DEFAULT_POSITIONS: ClassVar[int] = 2048
    """``LlamaConfig``'s ``max_position_embeddings`` when the preset leaves it unset."""

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def positions(self) -> int:
        """The longest context the model is built for."""
        return self.max_position_embeddings or self.DEFAULT_POSITIONS

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelPreset:
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.kv_heads:
            raise ValueError("hidden_size must divide by num_attention_heads, and that by num_key_value_heads")
        return self


# ---- the job spec (job.json) ----------------------------------------------------------


class PretrainModelSpec(Ref):
    """A model built from a preset, with the tokenizer's vocabulary and special ids."""

    preset_name: str
    preset: ModelPreset
    vocab_size: int
    eos_id: int
    pad_id: int | None = None


class FinetuneModelSpec(Ref):
    """A model loaded from a base model's Hugging Face directory."""

    base: str
    method: Literal["full", "lora"]


class PretrainDataSpec(Ref):
    tokens: str
    """The token shards' directory."""
    context_length: int


class FinetuneDataSpec(Ref):
    pairs: str
    """The question/answer JSONL file."""
    max_length: int
    validation_fraction: float


class Lineage(Ref):
    """Where the inputs came from: recorded, never keyed."""

    data_card: InputRef | None = None
    base_source: str | None = None
    """The base model as it was named (a path or a ``models:/`` URI)."""
    base_job_key: str | None = None
    """The key of the training run that made the base model."""


class LaunchSpec(Ref):
    """How the ranks run: resolved from ``deepspeed`` settings and the machine."""

    world_size: int
    ranks_per_node: int
    nodes: int | None = None
    """None when a hostfile names the nodes."""
    device: Device
    precision: Precision
    threads_per_rank: int
    activation_checkpointing: bool
    zero_stage: int
    timeout_s: int
    command: list[str]


class MlflowRunRef(Ref):
    """The job's MLflow run, which every rank-0 relaunch logs into."""

    tracking_uri: str
    run_id: str
    system_metrics: bool
    system_metrics_interval_s: float


class TrainingJobSpec(Record):
    """``job.json`` in a run directory: everything a rank needs (``python -m
    llmops.training.worker --job job.json``) and export reads back."""

    NAME: ClassVar[str] = "job.json"

    kind: Kind
    name: str
    key: str
    """The run's key (its directory is ``runs/<kind>/<name>-<key>``)."""
    run_dir: str
    inputs: dict[str, InputRef]
    lineage: Lineage = Lineage()
    model: PretrainModelSpec | FinetuneModelSpec
    data: PretrainDataSpec | FinetuneDataSpec
    tokenizer: str
    """The tokenizer's directory."""
    loop: PretrainConfig | FinetuneConfig
    """The loop settings, as keyed (stored without :data:`UNKEYED_LOOP_FIELDS`)."""
    finetune: FinetuneConfig | None = None
    """The fine-tuning settings (LoRA), stored without ``variants``; None when pretraining."""
    deepspeed: dict[str, Any]
    """The resolved DeepSpeed config (free-form: DeepSpeed's own keys, checked by its parser)."""
    launch: LaunchSpec
    mlflow: MlflowRunRef | None = None
    version: int
    """The stage version (``llmops.artifacts.STAGE_VERSIONS[kind]``)."""
    code_version: str
    code: CodeIdentity

    @model_validator(mode="after")
    def _parts_match_kind(self) -> TrainingJobSpec:
        pretrain = self.kind == "pretrain"
        if pretrain != isinstance(self.model, PretrainModelSpec) or pretrain != isinstance(self.data,
                                                                                            PretrainDataSpec):
            raise ValueError(f"model and data are not those of a {self.kind} job")
        if pretrain != isinstance(self.loop, PretrainConfig) or pretrain != (self.finetune is None):
            raise ValueError(f"loop and finetune hold the settings of another kind than {self.kind}")
        return self

    @field_serializer("loop")
    def _loop_as_keyed(self, loop: PretrainConfig | FinetuneConfig, info: SerializationInfo):
        return loop.model_dump(mode=info.mode, exclude=set(UNKEYED_LOOP_FIELDS))

    @field_serializer("finetune")
    def _finetune_without_variants(self, finetune: FinetuneConfig | None, info: SerializationInfo):
        return None if finetune is None else finetune.model_dump(mode=info.mode, exclude={"variants"})


# ---- what a run leaves behind ----------------------------------------------------------


class ParameterCount(Ref):
    total: int
    trainable: int


class TrainingResult(Record):
    """``result.json``, written last by rank 0: a run directory holding it is finished."""

    NAME: ClassVar[str] = "result.json"

    kind: Kind
    name: str
    key: str
    steps: int
    first_val_loss: float | None
    final_val_loss: float | None
    checkpoint: str | None
    """The newest complete checkpoint's tag directory."""
    parameters: ParameterCount
    world_size: int
    mlflow_run_id: str | None
    train_samples: int
    val_samples: int
    train_tokens_dropped: int | None = None
    """Pretraining: tokens after the last whole window."""
    truncated: int | None = None
    """Fine-tuning: examples cut to ``max_length``."""


class CheckpointMarker(Record):
    """``complete.json`` in a checkpoint's tag directory: every rank's shards are on disk."""

    NAME: ClassVar[str] = "complete.json"

    step: int
    world_size: int
    zero_stage: int
    saved_at: str


class JobLockRecord(Record):
    """``job.lock`` in a run directory: the live job that owns it (``llmops.training.process.JobLock``)."""

    NAME: ClassVar[str] = "job.lock"

    token: str
    pid: int | None = None
    pid_started: float | None = None
    """The owner's create time: a recycled pid is not the owner."""
    pgid: int | None = None
    """The job's process group, once started."""
    leader_started: float | None = None
    hostname: str
    started_at: str
    command: list[str] = []


# ---- the exported model (llmops_model.json) -------------------------------------------


class ExportedModelSpec(Ref):
    """What the exported model was built from: a preset (pretraining) or a base model (fine-tuning)."""

    preset_name: str | None = None
    vocab_size: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    base: str | None = None
    method: Literal["full", "lora"] | None = None


class ModelInfo(Record):
    """``llmops_model.json`` next to an exported model's weights: its lineage, as the
    evaluation, the registry, the model card and the CLI read it."""

    NAME: ClassVar[str] = "llmops_model.json"

    kind: Kind
    name: str
    key: str
    """The training run's key (its run directory is ``runs/<kind>/<name>-<key>``)."""
    run_dir: str
    step: int
    inputs: dict[str, InputRef]
    model: ExportedModelSpec
    preset: ModelPreset | None = None
    """The model preset (pretraining)."""
    world_size: int
    zero_stage: int
    precision: str
    first_val_loss: float | None = None
    final_val_loss: float | None = None
    parameters: int
    mlflow_run_id: str | None = None
    data_card: InputRef | None = None
    code_version: str | None = None
    code: CodeIdentity | None = None


class ExportSummary(StageSummary):
    """An exported model's manifest ``summary``: what its :class:`ModelInfo` says of the run."""

    kind: Kind
    name: str
    parameters: int
    first_val_loss: float | None
    final_val_loss: float | None
    mlflow_run_id: str | None

    @classmethod
    def of(cls, info: ModelInfo) -> ExportSummary:
        return cls.model_validate(info.model_dump(include=set(cls.model_fields) - {"schema_version"}))


# ---- what the training tasks hand on -----------------------------------------------------


class TrainingJobArgs(Record):
    """What ``DeepSpeedTrainingOperator`` reads of its ``job_args``: ``llmops_train``'s
    ``resolve_inputs`` XCom (pretraining) or one ``plan_finetunes`` entry (fine-tuning)."""

    data_card: str | None = None
    tokens: str | None = None
    """Pretrain on these token shards instead of a data card's."""
    variant: str | None = None
    base: str | None = None
    """The model to fine-tune: a directory or a ``models:/`` URI."""
    base_model: str | None = None
    init: str | None = None
    """Continue pretraining from this model (a directory or ``models:/`` URI) for
    ``retrain.pretrain_steps`` steps instead of starting from random weights: a retraining
    starts from the champion."""
    retraining: bool = False
    """A retraining's fine-tuning: ``retrain.finetune_steps`` steps."""
    mlflow_parent: str | None = None
    """The DAG run's MLflow run: the parent of the job's run."""
    skip: str | None = None
    """Why the task is skipped (pretraining, when a base model was given)."""


class TrainedJob(Record):
    """A finished training job: the ``pretrain``/``finetune`` task's XCom."""

    kind: Kind
    name: str
    run_dir: str
    first_val_loss: float | None
    final_val_loss: float | None
    steps: int
    mlflow_run_id: str | None


class TrainedModel(Record):
    """An exported model and the run that made it: the export tasks' XCom and a report's entry.
    A base model given by hand (the ``base_model`` Param) has only ``name`` and ``model``.

    ``schema_version`` is read but not written, as in the report that nests it (whose
    entries had none): a stored one reads as version 0, which has the fields of version 1.
    """

    schema_version: int = Field(1, exclude=True)
    name: str
    model: str
    """The Hugging Face directory."""
    hash: str | None
    """The export's key (None for a base model given by hand)."""
    run_dir: str | None = None
    first_val_loss: float | None = None
    final_val_loss: float | None = None
    steps: int | None = None
    mlflow_run_id: str | None = None


class TrainingReport(Record):
    """``reports/llmops_train/<run>/summary.json``: what one training run made."""

    NAME: ClassVar[str] = "summary.json"

    pretrain: TrainedModel | None = None
    finetune: list[TrainedModel] = []
    data_card: str | None = None
    served_variant: str | None = None
    """The variant ``llmops://model`` announces (the DAG's report only)."""
