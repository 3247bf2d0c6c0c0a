"""
### llmops_rollback — serve an earlier version again, verified, by hand

Runs only when a person triggers it (UI, REST API, the LLMOps page's rollback action), so
every rollback is an audited DAG run with who asked for it. `to_version` (a registered
version of `llmops`, as text) picks the version to serve; left empty, it is the version the
champion replaced (the champion's `llmops.previous_champion` tag).

`plan` reads the registry only and refuses, failing at once with the reason in its log: no
champion (`has no champion: nothing to roll back`), a first champion with nothing before it,
`to_version` not a number, the champion itself (`is already the champion`), not registered
(`not in the registry`) or not passed the gate (`has gate_result=…`). → `rollback` does the
swap itself with the deploy code (`llmops.serving.deploy.rollback`, under the deployment lock
`llmops_deploy` also takes): stage the version, smoke-test it over HTTP and gRPC, swap it in
with no failed request, check live answers, then move MLflow `champion` to it. Rolling back
again goes one more step back; after a rollback to a chosen version, the next one returns to
the champion it replaced. It writes the deploy report (`reports/llmops_deploy/`, status
`rolled back`: the retraining cooldown and the monitor see the change) and announces
`llmops://champion` (the version Triton serves; no DAG is scheduled on it). It never
triggers `llmops_deploy`: that DAG's runs stay those of the registered challengers. If the
swap fails, the champion keeps serving and `champion` is unchanged; Triton not ready or the
lock held by a deployment are retried with backoff.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task

from llmops_airflow.assets import CHAMPION
from llmops_airflow.config import run_config
from llmops_airflow.errors import RETRIES

DAG_ID = "llmops_rollback"
PARAMS = {
    # Text, not an integer: the trigger form and the LLMOps page leave it empty for "the
    # version the champion replaced"; plan_rollback refuses anything but a version number.
    "to_version": Param(None, type=["null", "string"], pattern=r"^\s*([1-9][0-9]*)?\s*$",
                        description="Registered version of `llmops` to serve again (default, empty: the version "
                                    "the champion replaced). It must have passed the evaluation gate."),
}


def _cfg():
    return run_config({})


@dag(
    dag_id=DAG_ID,
    schedule=None,  # by hand only: a rollback is a person's decision
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["llmops", "serving"],
    params=PARAMS,
    doc_md=__doc__,
    # A refusal or a DeployFailed verdict fails at once; DeployBlocked / ServerUnavailable are retried.
    default_args={"owner": "llmops", "execution_timeout": dt.timedelta(minutes=30), **RETRIES},
)
def llmops_rollback():
    @task
    def plan() -> int:
        """The version to serve, or a refusal. The XCom is the version number, so a retried
        ``rollback`` serves that version and never takes a second step back."""
        from llmops.serving.deploy import plan_rollback

        cfg = _cfg()
        wanted = get_current_context()["params"].get("to_version")
        current, target = plan_rollback(cfg, wanted)
        why = f"to_version {target}" if wanted and str(wanted).strip() else "the version the champion replaced"
        print(f"rollback: {cfg.serving.model_name} version {current} -> {target} ({why})")
        return target

    @task(outlets=[CHAMPION])
    def rollback(target: int, *, outlet_events=None) -> dict:
        """Stage → smoke tests → swap → live check → ``champion`` moved; the deploy report and
        ``llmops://champion`` (``ChampionEvent``). The XCom is the ``DeployResult``."""
        from llmops.serving.deploy import report_served, rollback as rollback_to

        cfg = _cfg()
        result = rollback_to(cfg, to_version=target, progress=print)
        outlet_events[CHAMPION].extra = report_served(cfg, result, progress=print).dump()
        return result.dump()

    rollback(plan())


llmops_rollback()
