"""
### llmops_monitor — is the served model's traffic drifting from what it was trained for?

Runs on `monitor.schedule` (default hourly; read when the DAG is parsed; a cron timetable
that does not run at once, so starting a stack starts no monitor run) and by hand with the
Params below.

`check` reads the served model's inference log (one record per request: token counts over
the corpus's top-K ids, bits per byte, lengths, language; never text) and Triton's metrics,
and compares the latest window with the reference: the champion's held-out questions plus
the first window of traffic after its deployment (so the reference resets with every new
champion). It prints `monitor: drift detected (…)`, `monitor: no drift (…)` or
`monitor: not enough data (n=…)`, writes `reports/llmops_monitor/<time>/` and logs an MLflow
run (`drift_*` metrics, tag `drift_verdict`). On drift only, `announce_drift` emits
`llmops://drift` with the report's path, the signals and the champion version; otherwise it
ends *skipped* and nothing downstream starts. Latency and failures are reported as service
alerts, never a reason to retrain. With nothing served the run ends *skipped*:
`nothing served, nothing to check`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task

from llmops_airflow.assets import DRIFT
from llmops_airflow.config import config_params, monitor_timetable, run_config
from llmops_airflow.errors import RETRIES

PARAM_TO_CONFIG = {"window": "monitor.window"}
PARAMS = {
    **config_params(PARAM_TO_CONFIG),
    "reference": Param(None, type=["null", "string"],
                       description="A JSON-lines file of questions (each with a `question`) to use as the held-out "
                                   "half of the reference (default: the served model's held-out Q&A pairs)."),
}


def _cfg():
    return run_config(PARAM_TO_CONFIG)


@dag(
    dag_id="llmops_monitor",
    schedule=monitor_timetable(),
    # No start_date on purpose: CronTriggerTimetable's run_immediately=False only holds for a
    # DAG without one; with a start_date (and catchup off) Airflow runs the latest past cron
    # time as soon as the DAG appears, i.e. on every fresh stack.
    catchup=False,
    max_active_runs=1,
    tags=["llmops", "monitoring"],
    params=PARAMS,
    doc_md=__doc__,
    default_args={"owner": "llmops", "execution_timeout": dt.timedelta(minutes=30), **RETRIES},
)
def llmops_monitor():
    @task
    def check() -> dict:
        """Run the drift check; the XCom is the ``DriftReport``."""
        from airflow.sdk.exceptions import AirflowSkipException

        from llmops.monitoring.check import NothingServed, run_check

        reference = get_current_context()["params"].get("reference")
        try:
            report = run_check(_cfg(), reference=reference, progress=print)
        except NothingServed as exc:
            print(f"monitor: {exc}")
            raise AirflowSkipException(str(exc)) from None
        for alert in report.service_alerts:
            print(f"monitor: service alert (not a reason to retrain): {alert}")
        print(f"monitor: {report.message}")
        return report.dump()

    @task(outlets=[DRIFT])
    def announce_drift(report: dict, *, outlet_events=None) -> dict:
        """Emit ``llmops://drift`` (a ``DriftEvent``) when the check found drift; else end skipped."""
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowSkipException

        from llmops.records.monitoring import DriftEvent, DriftReport

        checked = DriftReport.load(report, source="the check task's XCom")
        if checked.verdict != "drift":
            raise AirflowSkipException(f"{checked.verdict.replace('_', ' ')}: nothing to announce")
        event = DriftEvent(report=str(Path(checked.report_dir or "") / DriftReport.NAME), verdict=checked.verdict,
                           signals=checked.drifted_signals, model=checked.model, version=checked.version,
                           model_uri=checked.model_uri)
        outlet_events[DRIFT].extra = event.dump()
        print(f"announced llmops://drift for {checked.model} version {checked.version}: {checked.drifted_signals}")
        return event.dump()

    announce_drift(check())


llmops_monitor()
