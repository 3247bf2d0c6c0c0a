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
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from llmops_airflow.assets import CHALLENGER, MODEL, event_extra
from llmops_airflow.config import run_config
from llmops_airflow.errors import RETRIES

PARAM_TO_CONFIG = {"max_questions": "evaluation.max_questions"}

PARAMS = {
    "model_path": Param(None, type=["null", "string"],
                        description="Model directory to evaluate (default: the triggering event's served variant)."),
    "variant": Param(None, type=["null", "string"],
                     description="Variant name; the served one registers as `llmops`, others as `llmops-<variant>`."),
    "max_questions": Param(None, type=["null", "integer"], minimum=1,
                           description="Evaluate generation on the first N held-out pairs only."),
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
    def evaluate(*, triggering_asset_events=None) -> dict[str, Any]:
        """All metrics of the model and of the champion on the same data; MLflow run + report."""
        from airflow.sdk.exceptions import AirflowSkipException

        from llmops.evaluation.evaluate import EvaluationInputError, evaluate_candidate, registered_as
        from llmops.registry.model_registry import registered_name
        from llmops.registry.tracking import dag_run_parent

        context = get_current_context()
        params, cfg = context["params"], _cfg()
        path, variant = params.get("model_path"), params.get("variant")
        if not path and triggering_asset_events:
            for event in triggering_asset_events.get(MODEL, []):
                path, variant = event.extra.get("path"), event.extra.get("variant")
        if not path:
            raise EvaluationInputError("no model to evaluate: trigger with the model_path Param, or let "
                                       "llmops_train's llmops://model event start this DAG")
        served = cfg.finetune.variants[0].name
        variant = variant or served
        # Checked before the DAG run's MLflow run is opened: a known model leaves no trace.
        registered = registered_as(cfg, path, name=registered_name(variant, served))
        if registered:
            raise AirflowSkipException(f"{path}: already registered as {registered}: nothing is evaluated, "
                                       f"registered or announced")
        parent = dag_run_parent(cfg, context["dag"].dag_id, context["run_id"])
        result = evaluate_candidate(cfg, path, variant=variant, served_variant=served, parent_run_id=parent)
        for key, value in result["metrics"].items():
            print(f"{key}: {value}")
        print(f"report: {result['report']}")
        return result

    @task
    def gate(evaluation: dict[str, Any]) -> dict[str, Any]:
        """Floors and regression against the champion; a failure (permanent) lists every failed check."""
        from llmops.evaluation.evaluate import require_gate_passed

        print(evaluation["gate_message"])
        for check in evaluation["gate"]["checks"]:
            print(f"  {'ok  ' if check['passed'] else 'FAIL'} {check['name']}: {check['value']} "
                  f"(threshold {check['threshold']}, champion {check['champion']})")
        require_gate_passed(evaluation)
        return evaluation

    @task(outlets=[CHALLENGER])
    def register(evaluation: dict[str, Any], *, outlet_events=None) -> dict[str, Any]:
        """Register the version (HF directory + model card) with alias `challenger`."""
        from llmops.evaluation.evaluate import register_candidate

        result = register_candidate(_cfg(), evaluation)
        print(f"registered {result['model_uri']} as challenger (report: {result['report']})")
        outlet_events[CHALLENGER].extra = event_extra(evaluation["model_dir"], result["version"],
                                                      model_uri=result["model_uri"], version=result["version"],
                                                      name=result["name"], report=result["report"])
        return result

    register(gate(evaluate()))


llmops_evaluate()
