"""
### llmops_retrain — drift (or a week) → the data the champion has not seen → a gated retraining

Runs on `llmops://drift` (the monitor found drift) **or** on `retrain.schedule` (default
weekly, Monday 03:00 UTC; a cron timetable that does not run at once, so starting a stack
starts no retraining), and by hand with the Params below.

`guards`: nothing starts with no champion (`no champion yet: trigger llmops_data`), while a
run of `llmops_retrain`, `llmops_train`, `llmops_evaluate` or `llmops_deploy` is active
(`retrain in progress`), or within `retrain.cooldown` of the champion's deployment (drift and
scheduled runs; a person is not held back) → `scrape`: the conditional re-crawl (unchanged
pages answer 304) → `incremental_data`: extract, clean, dedup and redact (keyed stages: an
unchanged page reuses everything), then the documents no version along the champion's
`llmops.base_version` chain was trained on, a replay sample of the champion's documents
(`retrain.replay_fraction`), the champion's Q&A set plus the new pages' pairs, the
champion's tokenizer, token shards and an incremental data card; nothing new ends the run
(`no new data since data card … (champion vN)`) → `publish`: refuses data whose retraining
already failed the gate (`already failed the gate (run …)`, until new data comes or the
`clear_failed_gate` Param), then announces the shards on `llmops://tokens` with the champion
to continue from. `llmops_train` (continued pretraining from the champion's weights for
`retrain.pretrain_steps` steps, then the served variant fine-tuned on the old and new pairs),
`llmops_evaluate` (the gate, the champion re-evaluated on the same mixed set) and
`llmops_deploy` follow through their Assets. Every run's decision and reason is a line of
`$LLMOPS_HOME/retrain/decisions.jsonl`.
"""

from __future__ import annotations

import datetime as dt
from typing import NoReturn

from airflow.sdk import Param, dag, get_current_context, task

from llmops_airflow.assets import DRIFT, TOKENS
from llmops_airflow.config import config_params, retrain_schedule, run_config
from llmops_airflow.errors import RETRIES

DAG_ID = "llmops_retrain"
HANDS_OVER_TO = ("llmops_train", "llmops_evaluate", "llmops_deploy")
"""The DAGs a retraining runs through: while one of them is busy, a drift event starts nothing."""
SERVING_CHANGES = (*HANDS_OVER_TO, "llmops_rollback")
"""Busy with these, a retraining waits too: a rollback under way changes the champion it would start from."""

PARAM_TO_CONFIG = {"replay_fraction": "retrain.replay_fraction", "cooldown": "retrain.cooldown"}
PARAMS = {
    **config_params(PARAM_TO_CONFIG),
    "clear_failed_gate": Param(False, type="boolean",
                               description="Retrain even when a retraining on the same data failed the gate "
                                           "(after the gate or the data was looked at)."),
}


def _cfg():
    return run_config(PARAM_TO_CONFIG)


def _skip(cfg, reason: str, *, trigger: str, champion: str | None = None, drift_report: str | None = None,
          data_card: str | None = None, content: dict[str, str] | None = None) -> NoReturn:
    """Record the decision not to retrain, say it, and end the task (and the run) *skipped*."""
    from airflow.sdk.exceptions import AirflowSkipException

    from llmops.records.retrain import RetrainDecision
    from llmops.retrain.guards import record

    record(cfg, RetrainDecision(time=dt.datetime.now(dt.UTC), run_id=get_current_context()["run_id"],
                                trigger=trigger, outcome="skipped", reason=reason, champion_version=champion,
                                drift_report=drift_report, data_card=data_card, content=content))
    print(f"retrain: nothing starts: {reason}")
    raise AirflowSkipException(reason)


@dag(
    dag_id=DAG_ID,
    schedule=retrain_schedule(DRIFT),
    # No start_date on purpose (as llmops_monitor): with one, Airflow runs the latest past cron
    # time as soon as the DAG appears, i.e. on every fresh stack.
    catchup=False,
    max_active_runs=1,
    tags=["llmops", "retraining"],
    params=PARAMS,
    doc_md=__doc__,
    default_args={"owner": "llmops", "execution_timeout": dt.timedelta(minutes=60), **RETRIES},
)
def llmops_retrain():
    @task
    def guards(*, triggering_asset_events=None) -> dict:
        """No champion, a retraining in flight, the cooldown: end skipped with the reason. Else
        the ``RetrainPlan``: the champion to continue from and what triggered the run."""
        from llmops.records.monitoring import DriftEvent
        from llmops.retrain.guards import plan

        context = get_current_context()
        cfg, dag_run, ti = _cfg(), context["dag_run"], context["ti"]
        run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
        trigger = {"asset_triggered": "drift", "scheduled": "schedule"}.get(run_type, "manual")
        drift_report = None
        for event in (triggering_asset_events or {}).get(DRIFT, []):
            # An event posted through the REST API (a person reporting drift) carries from_rest_api.
            extra = {k: v for k, v in event.extra.items() if k != "from_rest_api"}
            drift_report = DriftEvent.load(extra, source="the triggering llmops://drift event").report
        states = ["queued", "running"]
        active = {dag_id: ti.get_dr_count(dag_id=dag_id, states=states) for dag_id in SERVING_CHANGES}
        # Running ones only: this run is one of them, and a queued one starts after it.
        active[DAG_ID] = ti.get_dr_count(dag_id=DAG_ID, states=["running"]) - 1
        print(f"retrain: {trigger} run; drift report {drift_report}; active runs {active}")
        decided = plan(cfg, trigger=trigger, run_id=context["run_id"], now=dag_run.run_after, active_runs=active,
                       drift_report=drift_report, clear_failed_gate=bool(context["params"]["clear_failed_gate"]))
        if isinstance(decided, str):
            _skip(cfg, decided, trigger=trigger, drift_report=drift_report)
        print(f"retrain: continuing from champion {decided.champion.model_uri} "
              f"(data card {decided.champion.data_card})")
        return decided.dump()

    @task(execution_timeout=dt.timedelta(minutes=60))
    def scrape(plan: dict) -> dict:
        """The conditional re-crawl of the seed site (If-None-Match / If-Modified-Since)."""
        from llmops.data.pipeline import scrape_stage
        from llmops.records.crawl import CrawlSummary
        from llmops.records.events import StageOutput

        cfg = _cfg()
        result = scrape_stage(cfg, cfg.data.seed_url, get_current_context()["run_id"],
                              sitemap_url=cfg.data.sitemap_url)
        s = CrawlSummary.load(result.summary, source=f"{result.path} summary")
        print(f"crawl: {s.pages_ok} ok ({s.not_modified or 0} not modified), {s.pages_failed} failed -> {result.path}")
        return StageOutput(path=str(result.path), hash=result.key).dump()

    @task(execution_timeout=dt.timedelta(minutes=60))
    def incremental_data(plan: dict, crawl: dict) -> dict:
        """The documents new to the champion (and its bases), a replay sample, the Q&A set, the
        shards and the incremental data card; skipped when nothing is new. The XCom is the
        ``TokensEvent`` to publish."""
        from llmops.artifacts import StageResult
        from llmops.records.events import StageOutput
        from llmops.records.retrain import RetrainPlan
        from llmops.retrain.incremental import prepare_increment, select_new
        from llmops.retrain.lineage import chain, registered_version

        cfg = _cfg()
        base = RetrainPlan.load(plan, source="guards' XCom").champion
        champion = registered_version(cfg, base.version)
        versions = chain(cfg, champion)
        crawled = StageResult.from_path(StageOutput.load(crawl, source="scrape's XCom").path)
        selection = select_new(cfg, crawled, versions)
        s = selection.summary
        print(f"increment: {s.new_documents} new of {s.corpus_documents} documents (known along versions "
              f"{', '.join(s.chain)}: {s.known_documents}); replay {s.replay_documents}")
        for url in s.new_pages:
            print(f"  new: {url}")
        if s.new_documents == 0:
            _skip(cfg, f"no new data since data card {champion.data_card} (champion v{champion.version})",
                  trigger=base.trigger, champion=base.version, drift_report=base.drift_report)
        data = prepare_increment(cfg, selection, base, champion, run_name=get_current_context()["run_id"])
        print(f"incremental data card: {data.card.path / 'data_card.md'}; Q&A pairs: {data.summary.base_qa_pairs} "
              f"kept + {data.summary.new_qa_pairs} new")
        return data.event.dump()

    @task(outlets=[TOKENS])
    def publish(plan: dict, event: dict, *, outlet_events=None) -> dict:
        """Announce the incremental shards on ``llmops://tokens`` (``llmops_train`` continues from
        the champion), unless a retraining on exactly this data failed the gate."""
        from llmops.records.data import TokensEvent
        from llmops.records.retrain import RetrainDecision, RetrainPlan
        from llmops.retrain.guards import failed_attempt, record

        cfg = _cfg()
        retrain = RetrainPlan.load(plan, source="guards' XCom")
        tokens = TokensEvent.load(event, source="incremental_data's XCom")
        base = retrain.champion
        failed = failed_attempt(cfg, tokens.content or {})
        if failed and not retrain.clear_failed_gate:
            _skip(cfg, failed.reason, trigger=base.trigger, champion=base.version, drift_report=base.drift_report,
                  data_card=tokens.data_card, content=tokens.content)
        reason = f"publishing llmops://tokens: data card {tokens.data_card}, continuing champion v{base.version}"
        if failed:
            reason += f" (cleared by hand: run {failed.decision.run_id} had failed the gate)"
        record(cfg, RetrainDecision(time=dt.datetime.now(dt.UTC), run_id=get_current_context()["run_id"],
                                    trigger=base.trigger, outcome="started", reason=reason,
                                    champion_version=base.version, drift_report=base.drift_report,
                                    data_card=tokens.data_card, content=tokens.content))
        print(f"retrain: {reason}")
        outlet_events[TOKENS].extra = tokens.dump()
        return tokens.dump()

    planned = guards()
    publish(planned, incremental_data(planned, scrape(planned)))


llmops_retrain()
