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
the run still succeeds, and no training, evaluation or deployment starts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from llmops.config import load_config
from llmops_airflow.assets import CORPUS, MODEL, QA, TOKENS
from llmops_airflow.config import run_config
from llmops_airflow.errors import RETRIES

# Param name -> llmops config key. Params override the YAML/env configuration for one run.
PARAM_TO_CONFIG = {
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

_defaults = load_config()  # pydantic + YAML only: cheap enough for parse time

PARAMS = {
    "seed_url": Param(_defaults.data.seed_url, type="string", pattern=r"^https?://",
                      description="Where the crawl starts; the crawl stays on this host."),
    "sitemap_url": Param(_defaults.data.sitemap_url, type=["null", "string"],
                         description="Optional sitemap URL (default: <seed origin>/sitemap.xml)."),
    "max_pages": Param(_defaults.scrape.max_pages, type="integer", minimum=1,
                       description="Upper bound on pages requested."),
    "num_shards": Param(_defaults.data.num_shards, type="integer", minimum=1, maximum=64,
                        description="Mapped extract/clean tasks the crawl is split into."),
    "min_chars": Param(_defaults.clean.min_chars, type="integer", minimum=0,
                       description="Quality filter: minimum document length in characters."),
    "min_words": Param(_defaults.clean.min_words, type="integer", minimum=0,
                       description="Quality filter: minimum document length in words."),
    "max_symbol_ratio": Param(_defaults.clean.max_symbol_ratio, type="number", minimum=0, maximum=1,
                              description="Quality filter: maximum share of symbol characters."),
    "languages": Param(_defaults.clean.languages, type="array", items={"type": "string"},
                       description="Quality filter: accepted languages (ISO 639-1); empty accepts all."),
    "lowercase": Param(_defaults.clean.lowercase, type="boolean", description="Lowercase the text."),
    "dedup_threshold": Param(_defaults.dedup.threshold, type="number", exclusiveMinimum=0, exclusiveMaximum=1,
                             description="Near-duplicate Jaccard threshold (MinHash LSH)."),
    "pii_entities": Param(_defaults.pii.entities, type="array", items={"type": "string"},
                          description="Presidio entity types to redact."),
    "pii_operator": Param(_defaults.pii.operator, type="string", enum=["replace", "mask", "hash", "pseudonymize"],
                          description="How PII is redacted: <TYPE> placeholder, mask, salted hash or surrogates."),
    "vocab_size": Param(_defaults.tokenizer.vocab_size, type="integer", minimum=256,
                        description="BPE vocabulary size (ignored when a tokenizer is reused)."),
    "tokenizer_reuse": Param(_defaults.tokenizer.reuse, type=["null", "string"],
                             description="Path of a tokenizer.json (or its directory) to reuse instead of training."),
    "window": Param(_defaults.tokenizer.window, type="integer", minimum=2,
                    description="Training window in tokens (recorded in the shards' meta.json)."),
    "stride": Param(_defaults.tokenizer.stride, type="integer", minimum=1,
                    description="Step between training windows."),
}

def _all(mapped_results) -> list:
    """Every result of a mapped task. A slice is one request; plain iteration probes past
    the end and makes the task SDK log a spurious 'XCom not found' error."""
    return list(mapped_results[:])


def _cfg():
    """The run's configuration; a bad setting fails the task at once (retrying cannot fix it)."""
    return run_config(PARAM_TO_CONFIG)


def _publish(asset, extra: dict[str, Any], inlet_events, outlet_events, cfg=None) -> dict[str, Any]:
    """Announce ``extra`` on ``asset`` when its content differs from the asset's last event;
    otherwise end the task *skipped*: no event, so nothing downstream starts again."""
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
    outlet_events[asset].extra = extra
    return extra


def _trained(data_card: str | None, inlet_events) -> bool:
    """Whether the newest ``llmops://model`` event was trained on ``data_card``."""
    try:
        model = inlet_events[MODEL][-1].extra or {}
    except (IndexError, KeyError):  # nothing trained yet
        return False
    return data_card is not None and model.get("data_card") == data_card


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
    def scrape() -> dict[str, Any]:
        """Crawl the seed site into WARC + index. Keyed by run id: a retry reuses a finished crawl."""
        from llmops.data.pipeline import scrape_stage

        context = get_current_context()
        cfg = _cfg()
        result = scrape_stage(cfg, context["params"]["seed_url"], context["run_id"],
                              sitemap_url=cfg.data.sitemap_url)
        s = result.summary
        print(f"crawl {'reused' if result.reused else 'done'}: {s['pages_ok']} ok, {s['pages_failed']} failed "
              f"{s['failed_by_reason']} -> {result.path}")
        return {"path": str(result.path), "hash": result.key}

    @task
    def plan_shards(crawl: dict[str, Any]) -> list[dict[str, Any]]:
        """One extract/clean task per shard (pages are assigned by a stable URL hash)."""
        n = _cfg().data.num_shards
        return [{"crawl_path": crawl["path"], "shard": i, "num_shards": n} for i in range(n)]

    @task(max_active_tis_per_dagrun=8)
    def extract(spec: dict[str, Any]) -> dict[str, Any]:
        """Main text + metadata of one shard's pages (trafilatura)."""
        from llmops.data.pipeline import extract_stage

        result = extract_stage(_cfg(), spec["crawl_path"], spec["shard"], spec["num_shards"])
        print(f"extract shard {spec['shard']}: {result.summary}")
        return {"path": str(result.path), "hash": result.key}

    @task(max_active_tis_per_dagrun=8)
    def clean(extracted: dict[str, Any]) -> dict[str, Any]:
        """Normalise, split sentences, apply quality filters to one shard."""
        from llmops.data.pipeline import clean_stage

        result = clean_stage(_cfg(), extracted["path"])
        print(f"clean: {result.summary}")
        return {"path": str(result.path), "hash": result.key}

    @task
    def dedup(cleaned: list[dict[str, Any]]) -> dict[str, Any]:
        """Exact + near-duplicate removal over all shards."""
        from llmops.data.pipeline import dedup_stage

        result = dedup_stage(_cfg(), [c["path"] for c in _all(cleaned)])
        print(f"dedup: {result.summary}")
        return {"path": str(result.path), "hash": result.key}

    @task
    def report(crawl: dict[str, Any], extracted: list[dict[str, Any]], cleaned: list[dict[str, Any]],
               corpus: dict[str, Any]) -> dict[str, Any]:
        """Pages fetched/failed by reason, documents dropped by filter, duplicates removed."""
        from llmops.artifacts import StageResult
        from llmops.data.pipeline import build_report, format_report, write_report

        context = get_current_context()
        load = StageResult.from_path
        summary = build_report(load(crawl["path"]), [load(e["path"]) for e in _all(extracted)],
                               [load(c["path"]) for c in _all(cleaned)], load(corpus["path"]))
        out = write_report(_cfg().home, context["run_id"], summary)
        print(format_report(summary))
        print(f"report: {out}")
        return summary

    @task(execution_timeout=dt.timedelta(minutes=60))
    def redact(corpus: dict[str, Any]) -> dict[str, Any]:
        """Presidio PII redaction; the redacted corpus is the one training and the Q&A set read."""
        from llmops.data.pipeline import redact_stage

        result = redact_stage(_cfg(), corpus["path"])
        print(f"redact: {result.summary.get('pii_counts_by_type')} ({result.summary.get('docs')} documents)")
        return {"path": str(result.path), "hash": result.key}

    @task(inlets=[CORPUS], outlets=[CORPUS])
    def publish_corpus(redacted: dict[str, Any], *, inlet_events=None, outlet_events=None) -> dict[str, Any]:
        """Announce the redacted corpus on ``llmops://corpus`` when its content is new."""
        from llmops.artifacts import StageResult
        from llmops.data.pipeline import corpus_event_extra

        return _publish(CORPUS, corpus_event_extra(StageResult.from_path(redacted["path"])), inlet_events,
                        outlet_events)

    @task
    def qa(redacted: dict[str, Any]) -> dict[str, Any]:
        """Question/answer pairs, split by page into fine-tuning and held-out sets."""
        from llmops.data.pipeline import qa_stage

        result = qa_stage(_cfg(), redacted["path"])
        print(f"qa: {result.summary}")
        return {"path": str(result.path), "hash": result.key}

    @task(inlets=[QA], outlets=[QA])
    def publish_qa(qa_set: dict[str, Any], *, inlet_events=None, outlet_events=None) -> dict[str, Any]:
        """Announce the Q&A set on ``llmops://qa`` when its content is new."""
        from llmops.artifacts import StageResult
        from llmops.data.pipeline import qa_event_extra

        return _publish(QA, qa_event_extra(StageResult.from_path(qa_set["path"])), inlet_events, outlet_events)

    @task
    def tokenizer(redacted: dict[str, Any]) -> dict[str, Any]:
        """Byte-level BPE tokenizer trained on the redacted corpus (or the one given to reuse)."""
        from llmops.data.pipeline import tokenizer_stage

        result = tokenizer_stage(_cfg(), redacted["path"])
        print(f"tokenizer: {result.summary}")
        return {"path": str(result.path), "hash": result.key}

    @task
    def encode(redacted: dict[str, Any], tok: dict[str, Any]) -> dict[str, Any]:
        """Token-ID shards (uint16/uint32) with document boundaries, train/validation split."""
        from llmops.data.pipeline import encode_stage

        result = encode_stage(_cfg(), redacted["path"], tok["path"])
        print(f"encode: {result.summary}")
        return {"path": str(result.path), "hash": result.key}

    @task(inlets=[TOKENS, MODEL], outlets=[TOKENS])
    def data_card(summary: dict[str, Any], redacted: dict[str, Any], qa_set: dict[str, Any],
                  tok: dict[str, Any], tokens: dict[str, Any], *, inlet_events=None, outlet_events=None) -> str:
        """Contamination check and the data card; then publishes the shards (``llmops://tokens``)
        when the shards, the Q&A pairs or the tokenizer differ from the last published ones."""
        from llmops.artifacts import StageResult
        from llmops.data.pipeline import data_card_stage, tokens_event_extra, write_report

        context = get_current_context()
        cfg = _cfg()
        load = StageResult.from_path
        stages = {name: load(ref["path"]) for name, ref in
                  {"redacted": redacted, "qa": qa_set, "tokenizer": tok, "tokens": tokens}.items()}
        result = data_card_stage(cfg, summary, stages["redacted"], stages["qa"], stages["tokenizer"],
                                 stages["tokens"], run_name=context["run_id"])
        out = write_report(cfg.home, context["run_id"], summary, data_card=result.path)
        print(f"data card: {result.path / 'data_card.md'} (report: {out})")
        print(f"contamination: {result.summary['contamination']}")
        extra = tokens_event_extra(stages["tokens"], stages["tokenizer"], stages["qa"], result)
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
