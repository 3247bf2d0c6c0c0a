"""
### llmops_data — from web pages to token shards, a Q&A set and a data card

`scrape` crawls the seed site (robots.txt, rate limits, retries, WARC output) →
`plan_shards` splits the crawl → `extract` and `clean` run once per shard (dynamic
task mapping) → `dedup` merges the shards and removes exact and near duplicates →
`report` writes the crawl-to-corpus summary → `redact` removes personal data
(Presidio) → `qa` builds the question/answer set and `tokenizer` trains (or reuses) a
byte-level BPE tokenizer → `encode` writes token-ID shards → `data_card` checks
contamination, writes the data card and publishes the shards (`llmops://tokens`, which
schedules `llmops_train`); `publish_corpus` and `publish_qa` announce `llmops://corpus`
and `llmops://qa`. Every Asset event's extra carries `path`, `hash` (the stage key) and
`content` (content digests). Reports: `$LLMOPS_HOME/reports/llmops_data/<run_id>/`.

The crawl is keyed by its run; every later stage output lives in
`$LLMOPS_HOME/artifacts/<stage>/<key>/`, keyed by the content of its inputs and its
settings, so a re-run on an unchanged site reuses every stage (`reused <stage> <key>`).
A publishing task announces its Asset only when the content differs from the last event
it published (for `llmops://tokens`: or when that last event never became a model, its
training having failed); otherwise it ends *skipped* (`no new data since data card …`),
the run still succeeds, and no training, evaluation or deployment starts. Once a champion
serves, `llmops://tokens` is announced only when the site holds documents or Q&A pairs that
neither the champion nor the versions it was retrained from were trained on (`no new data
since data card … (champion vN)`); retraining on new pages is `llmops_retrain`'s work.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import dag, get_current_context, task

from llmops_airflow.assets import CORPUS, MODEL, QA, TOKENS
from llmops_airflow.config import config_params, run_config
from llmops_airflow.errors import RETRIES

# Param name -> llmops config key: each Param is that configuration field (its type, bounds and
# description), null by default, meaning the configured value (llmops_airflow.config).
PARAM_TO_CONFIG = {
    "seed_url": "data.seed_url",
    "sitemap_url": "data.sitemap_url",
    "num_shards": "data.num_shards",
    "max_pages": "scrape.max_pages",
    "min_chars": "clean.min_chars",
    "min_words": "clean.min_words",
    "max_symbol_ratio": "clean.max_symbol_ratio",
    "languages": "clean.languages",
    "lowercase": "clean.lowercase",
    "dedup_threshold": "dedup.threshold",
    "pii_entities": "pii.entities",
    "pii_operator": "pii.operator",
    "vocab_size": "tokenizer.vocab_size",
    "tokenizer_reuse": "tokenizer.reuse",
    "window": "tokenizer.window",
    "stride": "tokenizer.stride",
}

PARAMS = config_params(PARAM_TO_CONFIG)


def _all(mapped_results) -> list:
    """Every result of a mapped task. A slice is one request; plain iteration probes past
    the end and makes the task SDK log a spurious 'XCom not found' error."""
    return list(mapped_results[:])


def _cfg():
    """The run's configuration; a bad setting fails the task at once (retrying cannot fix it)."""
    return run_config(PARAM_TO_CONFIG)


def _output(result) -> dict:
    """A stage's XCom: ``StageOutput`` as JSON (the UI shows it)."""
    from llmops.records.events import StageOutput

    return StageOutput(path=str(result.path), hash=result.key).dump()


def _stage(xcom):
    """The finished stage output an upstream task's XCom (``StageOutput``) names."""
    from llmops.artifacts import StageResult
    from llmops.records.events import StageOutput

    return StageResult.from_path(StageOutput.load(xcom, source="upstream XCom").path)


def _publish(asset, extra, inlet_events, outlet_events, cfg=None) -> dict:
    """Announce ``extra`` (a ``DataEvent`` record) on ``asset`` when its content differs from
    the asset's last event; otherwise end the task *skipped*: no event, so nothing
    downstream starts again."""
    from airflow.sdk.exceptions import AirflowSkipException

    from llmops.data.pipeline import publish_decision

    try:
        last = inlet_events[asset][-1].extra
    except (IndexError, KeyError):  # nothing published on this asset yet
        last = None
    decision = publish_decision(extra, last)
    if not decision.publish and asset == TOKENS and not _trained(decision.last_data_card, inlet_events):
        # Unchanged, but what was published last never became a model (training failed, or
        # the stack stopped before it ran): announce it again rather than never train it.
        print(f"{decision.reason}, but no llmops://model event was trained on data card "
              f"{decision.last_data_card}: publishing it again")
    elif not decision.publish:
        reason = decision.reason + (_serving(cfg or _cfg()) if asset == TOKENS else "")
        print(reason)
        raise AirflowSkipException(reason)
    print(f"publishing {asset.uri}: {decision.reason}")
    outlet_events[asset].extra = extra.dump()
    return extra.dump()


def _trained(data_card: str | None, inlet_events) -> bool:
    """Whether the newest ``llmops://model`` event was trained on ``data_card``."""
    from llmops.records.base import RecordError
    from llmops.records.events import ModelEvent

    try:
        model = ModelEvent.load(inlet_events[MODEL][-1].extra, source="the last llmops://model event")
    except (IndexError, KeyError):  # nothing trained yet
        return False
    except RecordError as exc:  # not one llmops_train published: which data it was trained on is unknown
        print(exc)
        return False
    return data_card is not None and model.data_card == data_card


def _serving(cfg) -> str:
    """`` (models:/llmops/N)``: what keeps serving when nothing new is published."""
    from llmops.registry.model_registry import CHAMPION, SERVED_MODEL, version_for

    try:
        version = version_for(cfg, SERVED_MODEL, CHAMPION)
    except Exception as exc:  # noqa: BLE001 - the registry is named for people; the decision stands
        return f" (champion unknown: {exc})"
    return f" (models:/{SERVED_MODEL}/{version})" if version else " (no champion yet)"


@dag(
    dag_id="llmops_data",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["llmops", "data"],
    params=PARAMS,
    doc_md=__doc__,
    default_args={"owner": "llmops", "execution_timeout": dt.timedelta(minutes=30), **RETRIES},
)
def llmops_data():
    @task(execution_timeout=dt.timedelta(minutes=60))
    def scrape() -> dict:
        """Crawl the seed site into WARC + index. Keyed by run id: a retry reuses a finished crawl."""
        from llmops.data.pipeline import scrape_stage
        from llmops.records.crawl import CrawlSummary

        cfg = _cfg()
        result = scrape_stage(cfg, cfg.data.seed_url, get_current_context()["run_id"],
                              sitemap_url=cfg.data.sitemap_url)
        s = CrawlSummary.load(result.summary, source=f"{result.path} summary")
        print(f"crawl {'reused' if result.reused else 'done'}: {s.pages_ok} ok, {s.pages_failed} failed "
              f"{s.failed_by_reason} -> {result.path}")
        return _output(result)

    @task
    def plan_shards(crawl: dict) -> list[dict]:
        """One extract/clean task per shard (pages are assigned by a stable URL hash)."""
        from llmops.records.events import ShardSpec, StageOutput

        path, n = StageOutput.load(crawl, source="scrape's XCom").path, _cfg().data.num_shards
        return [ShardSpec(crawl_path=path, shard=i, num_shards=n).dump() for i in range(n)]

    @task(max_active_tis_per_dagrun=8)
    def extract(spec: dict) -> dict:
        """Main text + metadata of one shard's pages (trafilatura)."""
        from llmops.data.pipeline import extract_stage
        from llmops.records.events import ShardSpec

        shard = ShardSpec.load(spec, source="plan_shards' XCom")
        result = extract_stage(_cfg(), Path(shard.crawl_path), shard.shard, shard.num_shards)
        print(f"extract shard {shard.shard}: {result.summary}")
        return _output(result)

    @task(max_active_tis_per_dagrun=8)
    def clean(extracted: dict) -> dict:
        """Normalise, split sentences, apply quality filters to one shard."""
        from llmops.data.pipeline import clean_stage

        result = clean_stage(_cfg(), _stage(extracted).path)
        print(f"clean: {result.summary}")
        return _output(result)

    @task
    def dedup(cleaned: list[dict]) -> dict:
        """Exact + near-duplicate removal over all shards."""
        from llmops.data.pipeline import dedup_stage

        result = dedup_stage(_cfg(), [_stage(c).path for c in _all(cleaned)])
        print(f"dedup: {result.summary}")
        return _output(result)

    @task
    def report(crawl: dict, extracted: list[dict], cleaned: list[dict], corpus: dict) -> dict:
        """Pages fetched/failed by reason, documents dropped by filter, duplicates removed (``DataReport``)."""
        from llmops.data.pipeline import build_report, format_report, write_report

        summary = build_report(_stage(crawl), [_stage(e) for e in _all(extracted)],
                               [_stage(c) for c in _all(cleaned)], _stage(corpus))
        out = write_report(_cfg().home, get_current_context()["run_id"], summary)
        print(format_report(summary))
        print(f"report: {out}")
        return summary.dump()

    @task(execution_timeout=dt.timedelta(minutes=60))
    def redact(corpus: dict) -> dict:
        """Presidio PII redaction; the redacted corpus is the one training and the Q&A set read."""
        from llmops.data.pipeline import redact_stage
        from llmops.records.data import RedactSummary

        result = redact_stage(_cfg(), _stage(corpus).path)
        s = RedactSummary.load(result.summary, source=f"{result.path} summary")
        print(f"redact: {s.pii_counts_by_type} ({s.docs} documents)")
        return _output(result)

    @task(inlets=[CORPUS], outlets=[CORPUS])
    def publish_corpus(redacted: dict, *, inlet_events=None, outlet_events=None) -> dict:
        """Announce the redacted corpus on ``llmops://corpus`` when its content is new (``CorpusEvent``)."""
        from llmops.data.pipeline import corpus_event_extra

        return _publish(CORPUS, corpus_event_extra(_stage(redacted)), inlet_events, outlet_events)

    @task
    def qa(redacted: dict) -> dict:
        """Question/answer pairs, split by page into fine-tuning and held-out sets."""
        from llmops.data.pipeline import qa_stage

        result = qa_stage(_cfg(), _stage(redacted).path)
        print(f"qa: {result.summary}")
        return _output(result)

    @task(inlets=[QA], outlets=[QA])
    def publish_qa(qa_set: dict, *, inlet_events=None, outlet_events=None) -> dict:
        """Announce the Q&A set on ``llmops://qa`` when its content is new (``QaEvent``)."""
        from llmops.data.pipeline import qa_event_extra

        return _publish(QA, qa_event_extra(_stage(qa_set)), inlet_events, outlet_events)

    @task
    def tokenizer(redacted: dict) -> dict:
        """Byte-level BPE tokenizer trained on the redacted corpus (or the one given to reuse)."""
        from llmops.data.pipeline import tokenizer_stage

        result = tokenizer_stage(_cfg(), _stage(redacted).path)
        print(f"tokenizer: {result.summary}")
        return _output(result)

    @task
    def encode(redacted: dict, tok: dict) -> dict:
        """Token-ID shards (uint16/uint32) with document boundaries, train/validation split."""
        from llmops.data.pipeline import encode_stage

        result = encode_stage(_cfg(), _stage(redacted).path, _stage(tok).path)
        print(f"encode: {result.summary}")
        return _output(result)

    @task(inlets=[TOKENS, MODEL], outlets=[TOKENS])
    def data_card(summary: dict, redacted: dict, qa_set: dict, tok: dict, tokens: dict, *,
                  inlet_events=None, outlet_events=None) -> str:
        """Contamination check and the data card; then publishes the shards (``llmops://tokens``,
        ``TokensEvent``) when the shards, the Q&A pairs or the tokenizer differ from the last
        published ones."""
        from airflow.sdk.exceptions import AirflowSkipException

        from llmops.data.pipeline import data_card_stage, tokens_event_extra, write_report
        from llmops.records.data import DataCardSummary, DataReport
        from llmops.retrain.lineage import nothing_new

        run_id = get_current_context()["run_id"]
        cfg = _cfg()
        report = DataReport.load(summary, source="report's XCom")
        stages = {name: _stage(xcom) for name, xcom in
                  {"redacted": redacted, "qa": qa_set, "tokenizer": tok, "tokens": tokens}.items()}
        result = data_card_stage(cfg, report, stages["redacted"], stages["qa"], stages["tokenizer"],
                                 stages["tokens"], run_name=run_id)
        out = write_report(cfg.home, run_id, report, data_card=result.path)
        print(f"data card: {result.path / 'data_card.md'} (report: {out})")
        card = DataCardSummary.load(result.summary, source=f"{result.path} summary")
        print(f"contamination: { {name: row.model_dump() for name, row in card.contamination.items()} }")
        extra = tokens_event_extra(stages["tokens"], stages["tokenizer"], stages["qa"], result)
        # Judged against what the champion (and the versions it continued from) was trained on,
        # not only the last event: after a retraining the last event is the increment's.
        known = nothing_new(cfg, stages["redacted"].path / "corpus.parquet", stages["qa"].path)
        if known:
            print(f"{known}: every document and Q&A pair was trained on; nothing is published")
            raise AirflowSkipException(known)
        _publish(TOKENS, extra, inlet_events, outlet_events, cfg=cfg)
        return str(result.path / "data_card.md")

    crawl = scrape()
    extracted = extract.expand(spec=plan_shards(crawl))
    cleaned = clean.expand(extracted=extracted)
    corpus = dedup(cleaned)
    summary = report(crawl, extracted, cleaned, corpus)
    redacted = redact(corpus)
    publish_corpus(redacted)
    qa_set = qa(redacted)
    publish_qa(qa_set)
    tok = tokenizer(redacted)
    tokens = encode(redacted, tok)
    data_card(summary, redacted, qa_set, tok, tokens)


llmops_data()
