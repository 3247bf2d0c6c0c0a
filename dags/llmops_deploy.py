"""
### llmops_deploy — verified, zero-downtime deployment to Triton Inference Server

Runs when `llmops_evaluate` registers a challenger (`llmops://challenger`), or by hand
with a `model_version` Param (any registered version of `llmops` that passed the gate;
that is also how you roll forward or back to a chosen version).

`wait_for_server` (sensor, reschedule mode: no worker slot held between pokes) waits up
to `server_wait_s` until the Triton server answers `/v2/health/ready` (start it with
`llmops serve start`) → `deploy`: download the version from the MLflow
registry, load it as `llmops_staging`, smoke-test it over HTTP and gRPC, unload
staging, then add the version to `llmops` and reload (the old version keeps serving
until the new one is ready; no request fails), check live answers come from the new
version, set MLflow alias `champion`, and announce `llmops://champion`. If staging or
the swap fails, the old version keeps serving, `champion` is unchanged and the task
fails with the reason (at once: a retry cannot mend a broken model). Triton not ready
or the deployment lock held by another deployment are transient: the task is retried
with exponential backoff.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task

from llmops_airflow.assets import CHALLENGER, CHAMPION
from llmops_airflow.config import run_config
from llmops_airflow.errors import RETRIES

MAX_SERVER_WAIT_S = 3600  # the sensor's own timeout: the Param cannot ask for more

PARAMS = {
    "model_version": Param(None, type=["null", "integer"], minimum=1,
                           description="Registered version of `llmops` to serve (default: the triggering "
                                       "challenger event's version, else the `challenger` alias)."),
    "server_wait_s": Param(300, type="integer", minimum=1, maximum=MAX_SERVER_WAIT_S,
                           description="How long the sensor waits for the Triton server to be ready."),
}


def _cfg():
    return run_config({})


@dag(
    dag_id="llmops_deploy",
    schedule=[CHALLENGER],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["llmops", "serving"],
    params=PARAMS,
    doc_md=__doc__,
    # A DeployFailed verdict fails at once; DeployBlocked / ServerUnavailable are retried.
    default_args={"owner": "llmops", "execution_timeout": dt.timedelta(minutes=30), **RETRIES},
)
def llmops_deploy():
    @task.sensor(poke_interval=10, timeout=MAX_SERVER_WAIT_S, mode="reschedule")
    def wait_for_server():
        """Poke `/v2/health/ready`; fails after `server_wait_s` with how to start the server."""
        from airflow.sdk import PokeReturnValue
        from airflow.sdk.exceptions import AirflowSensorTimeout

        from llmops.serving.server import TritonServer

        context = get_current_context()
        server = TritonServer(_cfg())
        if server.ready():
            return PokeReturnValue(is_done=True, xcom_value=server.http_url)
        # Each poke is a new start of the task (its start_date moves): the wait counts from
        # this try's first poke, which Airflow records with the first reschedule.
        ti = context["ti"]
        started = ti.get_first_reschedule_date(context) or ti.start_date
        waited = (dt.datetime.now(dt.UTC) - started).total_seconds()
        if waited > context["params"]["server_wait_s"]:
            # Final, not retried: the waiting was the retrying.
            raise AirflowSensorTimeout(f"Triton is not ready at {server.http_url} after {waited:.0f} s: start it "
                                       f"with `llmops serve start` (log: {server.log_path})")
        return PokeReturnValue(is_done=False)

    @task(outlets=[CHAMPION])
    def deploy(url: str, *, triggering_asset_events=None, outlet_events=None) -> dict:
        """Stage → smoke tests (HTTP + gRPC) → swap → live check → champion (``ChampionEvent``).
        The XCom is the ``DeployResult``."""
        from llmops.records.events import ChallengerEvent
        from llmops.serving.deploy import deploy as deploy_version, report_served

        cfg = _cfg()
        version = get_current_context()["params"].get("model_version")
        uri = f"models:/{cfg.serving.model_name}/{version}" if version else None
        if uri is None and triggering_asset_events:
            for event in triggering_asset_events.get(CHALLENGER, []):
                uri = ChallengerEvent.load(event.extra, source="the triggering llmops://challenger event").model_uri
        uri = uri or f"models:/{cfg.serving.model_name}@challenger"
        print(f"deploying {uri} to {url}")
        result = deploy_version(cfg, uri, progress=print)
        outlet_events[CHAMPION].extra = report_served(cfg, result, progress=print).dump()
        return result.dump()

    deploy(wait_for_server())


llmops_deploy()
