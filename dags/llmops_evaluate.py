"""
### llmops_evaluate — evaluation gate and MLflow registry

Runs when `llmops_train` publishes fine-tuned models (`llmops://model`), or by hand
with a `model_path` Param. `evaluate` measures the served variant on its evaluation
set (perplexity, bits per byte, BLEU, ROUGE, exact match, diversity, PII canary leak
rate, behavioural cases, latency), re-evaluates the current `champion` on the same
data, and logs metrics, report and model card to MLflow → `gate` fails the run
(at once: a verdict is permanent) with every failed check and its numbers → `register`
registers the model version with alias `challenger` and announces it on
`llmops://challenger` (extra: model URI, version). A failed gate deploys nothing: the
champion keeps serving, and the failed evaluation is still in MLflow
(`gate_result=failed`) with its report.

One model, one version: a model whose content (`content_sha256` of its weights, configs
and tokenizer) is registered already is not evaluated again. `evaluate` ends *skipped*
with `already registered as models:/llmops/N`, so do `gate` and `register`: the run
succeeds and announces nothing.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import Param, dag, get_current_context, task

from llmops_airflow.assets import CHALLENGER, MODEL
from llmops_airflow.config import config_params, run_config
from llmops_airflow.errors import RETRIES

# Param name -> llmops config key (llmops_airflow.config: null keeps the configured value).
PARAM_TO_CONFIG = {"max_questions": "evaluation.max_questions"}

PARAMS = {
    "model_path": Param(None, type=["null", "string"],
                        description="Model directory to evaluate (default: the triggering event's served variant)."),
    "variant": Param(None, type=["null", "string"],
                     description="Variant name; the served one registers as `llmops`, others as `llmops-<variant>`."),
    **config_params(PARAM_TO_CONFIG),
}


def _cfg():
    return run_config(PARAM_TO_CONFIG)


@dag(
    dag_id="llmops_evaluate",
    schedule=[MODEL],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["llmops", "evaluation"],
    params=PARAMS,
    doc_md=__doc__,
    default_args={"owner": "llmops", "execution_timeout": dt.timedelta(minutes=60), **RETRIES},
)
def llmops_evaluate():
    @task
    def evaluate(*, triggering_asset_events=None) -> dict:
        """All metrics of the model and of the champion on the same data; MLflow run + report
        (``CandidateEvaluation``)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from llmops.evaluation.evaluate import EvaluationInputError, evaluate_candidate, registered_as
        from llmops.records.evaluation import AlreadyRegistered
        from llmops.records.events import ModelEvent
        from llmops.registry.model_registry import registered_name
        from llmops.registry.tracking import dag_run_parent

        context = get_current_context()
        params, cfg = context["params"], _cfg()
        path, variant = params.get("model_path"), params.get("variant")
        if not path and triggering_asset_events:
            for event in triggering_asset_events.get(MODEL, []):
                model = ModelEvent.load(event.extra, source="the triggering llmops://model event")
                path, variant = model.path, model.variant
        if not path:
            raise EvaluationInputError("no model to evaluate: trigger with the model_path Param, or let "
                                       "llmops_train's llmops://model event start this DAG")
        served = cfg.finetune.variants[0].name
        variant = variant or served
        # Checked before the DAG run's MLflow run is opened: a known model leaves no trace.
        registered = registered_as(cfg, Path(path), name=registered_name(variant, served))
        if registered:
            raise AirflowSkipException(f"{path}: already registered as {registered}: nothing is evaluated, "
                                       f"registered or announced")
        parent = dag_run_parent(cfg, context["dag"].dag_id, context["run_id"])
        result = evaluate_candidate(cfg, Path(path), variant=variant, served_variant=served, parent_run_id=parent)
        if isinstance(result, AlreadyRegistered):  # registered by another run meanwhile
            raise AirflowSkipException(f"{result.message}: nothing is registered or announced")
        for key, value in result.metrics.model_dump(exclude_none=True).items():
            print(f"{key}: {value}")
        print(f"report: {result.report}")
        return result.dump()

    @task
    def gate(evaluation: dict) -> dict:
        """Floors and regression against the champion; a failure (permanent) lists every failed check."""
        from llmops.evaluation.evaluate import require_gate_passed
        from llmops.records.evaluation import CandidateEvaluation

        result = CandidateEvaluation.load(evaluation, source="evaluate's XCom")
        print(result.gate_message)
        for check in result.gate.checks:
            print(f"  {'ok  ' if check.passed else 'FAIL'} {check.name}: {check.value} "
                  f"(threshold {check.threshold}, champion {check.champion})")
        require_gate_passed(result)
        return evaluation

    @task(outlets=[CHALLENGER])
    def register(evaluation: dict, *, outlet_events=None) -> dict:
        """Register the version (HF directory + model card) with alias `challenger`; announce it
        on ``llmops://challenger`` (``ChallengerEvent``). The XCom is the ``RegisteredVersion``."""
        from llmops.evaluation.evaluate import register_candidate
        from llmops.records.evaluation import CandidateEvaluation
        from llmops.records.events import ChallengerEvent

        candidate = CandidateEvaluation.load(evaluation, source="gate's XCom")
        result = register_candidate(_cfg(), candidate)
        print(f"registered {result.model_uri} as challenger (report: {result.report})")
        outlet_events[CHALLENGER].extra = ChallengerEvent(
            path=candidate.model_dir, hash=result.version, model_uri=result.model_uri, version=result.version,
            name=result.name, report=result.report).dump()
        return result.dump()

    register(gate(evaluate()))

llmops_evaluate()
