"""
### llmops_train — DeepSpeed pretraining, then fine-tuned variants

Runs when `llmops_data` publishes new token shards (`llmops://tokens`, whose event
names the data card, shards, tokenizer and Q&A set), or by hand with Params.

`resolve_inputs` picks the data (the triggering event, the `data_card` Param, or the
newest data card) and opens the DAG run's MLflow run → `pretrain` runs `deepspeed`
with N ranks (a Llama-style model from a preset, from scratch) → `export_pretrained`
consolidates the ZeRO checkpoint into a Hugging Face directory → `plan_finetunes` lists
the variants (`finetune.variants` in the config) → `finetune` runs once per variant
(dynamic task mapping; LoRA or full) → `export_finetuned` → `publish` announces the
served variant on `llmops://model` (extra: path, hash, every variant).

Every training task is resumable: its run directory is keyed by inputs + config, so a
retry resumes from the newest complete checkpoint; each job is one MLflow run nested
under the DAG run's. Bad settings or inputs fail a task at once (permanent errors);
anything else is retried with exponential backoff (`llmops_airflow.errors`). With the
`base_model` Param set, pretraining is skipped and the variants are fine-tuned from that
model (a directory or `models:/name/version`).

A retraining (`llmops_retrain`: the event's `retrain` names the champion) continues
pretraining from the champion's weights for `retrain.pretrain_steps` steps on the new
documents and a replay sample, then fine-tunes the served variant only, on the old and
new Q&A pairs, for `retrain.finetune_steps` steps.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import Param, dag, get_current_context, task

from llmops.config import load_config
from llmops_airflow.assets import MODEL, TOKENS
from llmops_airflow.config import config_params, run_config
from llmops_airflow.errors import RETRIES
from llmops_airflow.operators.deepspeed_training import DeepSpeedTrainingOperator

# Param name -> llmops config key (llmops_airflow.config: null keeps the configured value).
PARAM_TO_CONFIG = {
    "preset": "pretrain.preset",
    "steps": "pretrain.steps",
    "lr": "pretrain.lr",
    "finetune_steps": "finetune.steps",
    "finetune_lr": "finetune.lr",
    "finetune_method": "finetune.method",
    "ranks": "deepspeed.ranks",
    "zero_stage": "deepspeed.zero_stage",
}

_configured = load_config()  # pydantic + YAML only: cheap enough for parse time

PARAMS = {
    **config_params(PARAM_TO_CONFIG, _configured),
    "base_model": Param(None, type=["null", "string"],
                        description="Fine-tune this model (HF directory or models:/name/version) instead of "
                                    "pretraining one."),
    "data_card": Param(None, type=["null", "string"],
                       description="Data-card directory to train on (default: the triggering event's, else the "
                                   "newest)."),
}

# A training try that dies (a rank killed, a node lost) resumes from its newest checkpoint;
# one that failed three times is likely to fail again (backoff and policy: RETRIES).
TRAIN_RETRY = {"retries": 2}


def _cfg():
    """The run's configuration; a bad setting raises ConfigError (permanent: the task fails at once)."""
    return run_config(PARAM_TO_CONFIG)


@dag(
    dag_id="llmops_train",
    schedule=[TOKENS],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["llmops", "training"],
    params=PARAMS,
    doc_md=__doc__,
    default_args={"owner": "llmops", "execution_timeout": dt.timedelta(minutes=30), **RETRIES},
)
def llmops_train():
    @task
    def resolve_inputs(*, triggering_asset_events=None) -> dict:
        """The data card to train on, and the DAG run's MLflow run (parent of every job's run):
        ``TrainingJobArgs``, the ``pretrain`` job's arguments."""
        from llmops.records.data import TokensEvent
        from llmops.records.training import TrainingJobArgs
        from llmops.registry.tracking import dag_run_parent
        from llmops.training.job import resolve_data_inputs

        context = get_current_context()
        params, cfg = context["params"], _cfg()
        card, retrain = params.get("data_card"), None
        if not card and triggering_asset_events:
            for event in triggering_asset_events.get(TOKENS, []):
                tokens = TokensEvent.load(event.extra, source="the triggering llmops://tokens event")
                card, retrain = tokens.data_card, tokens.retrain
        data = resolve_data_inputs(cfg, card)
        parent = dag_run_parent(cfg, context["dag"].dag_id, context["run_id"])
        card_path = data.data_card.path if data.data_card else None
        print(f"training on data card {card_path} (tokens {data.tokens}); MLflow run {parent}")
        base = params.get("base_model")
        if retrain and not base:
            print(f"retraining {retrain.model_uri} ({retrain.trigger}, llmops_retrain run {retrain.run_id}): "
                  f"{cfg.retrain.pretrain_steps} steps of continued pretraining, then {cfg.retrain.finetune_steps} "
                  f"of the served variant {cfg.finetune.variants[0].name!r} only")
        return TrainingJobArgs(data_card=card_path, mlflow_parent=parent, base_model=base,
                               init=retrain.model_uri if retrain and not base else None,
                               skip=f"base_model={base} given: fine-tuning only" if base else None).dump()

    inputs = resolve_inputs()
    pretrain = DeepSpeedTrainingOperator(
        task_id="pretrain", kind="pretrain", param_to_config=PARAM_TO_CONFIG, job_args=inputs,
        execution_timeout=dt.timedelta(hours=2), **TRAIN_RETRY)

    @task(trigger_rule="none_failed")
    def export_pretrained(inputs: dict) -> dict:
        """Consolidate the final checkpoint (ZeRO shards) into a Hugging Face directory (``TrainedModel``)."""
        from llmops.records.training import TrainedJob, TrainedModel, TrainingJobArgs
        from llmops.training.export import export_stage
        from llmops.training.pipeline import model_entry

        base_model = TrainingJobArgs.load(inputs, source="resolve_inputs' XCom").base_model
        if base_model:
            return TrainedModel(name="base", model=base_model, hash=None).dump()
        # Pulled here, not passed as an argument: when pretraining is skipped there is no
        # XCom, and resolving an argument would log a spurious "XCom not found" error.
        trained = TrainedJob.load(get_current_context()["ti"].xcom_pull(task_ids="pretrain"),
                                  source="pretrain's XCom")
        result = export_stage(_cfg(), Path(trained.run_dir))
        entry = model_entry(trained, result)
        print(f"pretrained model: {result.path} (validation loss {entry.first_val_loss:.3f} -> "
              f"{entry.final_val_loss:.3f})")
        return entry.dump()

    @task
    def plan_finetunes(inputs: dict, base: dict) -> list[dict]:
        """One fine-tuning job per configured variant, all from the same base (``TrainingJobArgs`` each)."""
        from llmops.records.training import TrainedModel, TrainingJobArgs

        args = TrainingJobArgs.load(inputs, source="resolve_inputs' XCom")
        base_dir = TrainedModel.load(base, source="export_pretrained's XCom").model
        variants = _cfg().finetune.variants
        if args.init:  # a retraining refreshes the model that serves, not every variant
            variants = variants[:1]
        return [TrainingJobArgs(variant=v.name, base=base_dir, data_card=args.data_card, retraining=bool(args.init),
                                mlflow_parent=args.mlflow_parent).dump() for v in variants]

    base = export_pretrained(inputs)
    pretrain >> base
    finetune = DeepSpeedTrainingOperator.partial(
        task_id="finetune", kind="finetune", param_to_config=PARAM_TO_CONFIG,
        execution_timeout=dt.timedelta(hours=2), max_active_tis_per_dagrun=_configured.finetune.parallel_jobs,
        **TRAIN_RETRY,
    ).expand(job_args=plan_finetunes(inputs, base))

    @task
    def export_finetuned(trained: dict) -> dict:
        """Merge LoRA adapters (if any) and write the variant's Hugging Face directory (``TrainedModel``)."""
        from llmops.records.training import TrainedJob
        from llmops.training.export import export_stage
        from llmops.training.pipeline import model_entry

        job = TrainedJob.load(trained, source="finetune's XCom")
        result = export_stage(_cfg(), Path(job.run_dir))
        entry = model_entry(job, result)
        print(f"{entry.name}: {result.path} (validation loss {entry.first_val_loss:.3f} -> "
              f"{entry.final_val_loss:.3f})")
        return entry.dump()

    @task(outlets=[MODEL])
    def publish(inputs: dict, pretrained: dict, exported: list[dict], *, outlet_events=None) -> dict:
        """Announce the fine-tuned models on ``llmops://model`` (``ModelEvent``); the first variant
        is the one to serve."""
        from llmops.records.events import ModelEvent, ModelVariant
        from llmops.records.training import TrainedModel, TrainingJobArgs, TrainingReport
        from llmops.registry.tracking import RunLogger, tracking_uri
        from llmops.training.pipeline import format_training_summary, write_training_summary

        cfg = _cfg()
        args = TrainingJobArgs.load(inputs, source="resolve_inputs' XCom")
        base = TrainedModel.load(pretrained, source="export_pretrained's XCom")
        # a slice: one XCom request for all mapped results
        variants = [TrainedModel.load(e, source="export_finetuned's XCom") for e in exported[:]]
        served_name = cfg.finetune.variants[0].name
        served = next(v for v in variants if v.name == served_name)
        summary = TrainingReport(pretrain=base if base.hash else None, finetune=variants, data_card=args.data_card,
                                 served_variant=served_name)
        report = write_training_summary(cfg.home, get_current_context()["run_id"], summary)
        print(format_training_summary(summary))
        print(f"report: {report}")
        extra = ModelEvent(path=served.model, hash=served.hash, variant=served_name,
                           mlflow_run_id=served.mlflow_run_id, data_card=args.data_card, base_model=base.model,
                           variants={v.name: ModelVariant(path=v.model, hash=v.hash) for v in variants}).dump()
        outlet_events[MODEL].extra = extra
        with RunLogger(args.mlflow_parent, tracking_uri(cfg)) as parent:  # ends the DAG run's MLflow run
            parent.log_artifact(report / TrainingReport.NAME)
            parent.set_tags({"llmops.served_variant": served_name, "llmops.model_path": served.model})
        return extra

    publish(inputs, base, export_finetuned.expand(trained=finetune.output))

llmops_train()
