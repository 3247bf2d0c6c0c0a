"""
### llmops_data — from web pages to a clean, deduplicated corpus

`scrape` crawls the seed site (robots.txt, rate limits, retries, WARC output) →
`plan_shards` splits the crawl → `extract` and `clean` run once per shard (dynamic
task mapping) → `dedup` merges the shards, removes exact and near duplicates and
publishes the corpus on the `llmops://corpus` Asset (extra: `path`, `hash`) →
`report` writes the run summary to `$LLMOPS_HOME/reports/llmops_data/<run_id>/`.

Every stage output lives in `$LLMOPS_HOME/artifacts/<stage>/<content-hash>/`; a
retry or a re-run with the same inputs and settings reuses it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from llmops_airflow.assets import CORPUS, event_extra
from llmops_airflow.config import config_from_params

from llmops.config import load_config

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
}

IO_RETRY = {"retries": 2, "retry_delay": dt.timedelta(seconds=5)}


def _all(mapped_results) -> list:
    """Every result of a mapped task. A slice is one request; plain iteration probes past
    the end and makes the task SDK log a spurious 'XCom not found' error."""
    return list(mapped_results[:])


def _cfg():
    return config_from_params(get_current_context()["params"], PARAM_TO_CONFIG)


@dag(
    dag_id="llmops_data",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["llmops", "data"],
    params=PARAMS,
    doc_md=__doc__,
    default_args={"owner": "llmops", "execution_timeout": dt.timedelta(minutes=30), **IO_RETRY},
)
def llmops_data():
    @task(retries=3, retry_delay=dt.timedelta(seconds=10), retry_exponential_backoff=True,
          max_retry_delay=dt.timedelta(minutes=5), execution_timeout=dt.timedelta(minutes=60))
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

    @task(outlets=[CORPUS])
    def dedup(cleaned: list[dict[str, Any]], *, outlet_events=None) -> dict[str, Any]:
        """Exact + near-duplicate removal over all shards; announces the corpus Asset."""
        from llmops.data.pipeline import dedup_stage

        result = dedup_stage(_cfg(), [c["path"] for c in _all(cleaned)])
        print(f"dedup: {result.summary}")
        extra = event_extra(str(result.path), result.key, file="corpus.parquet",
                            documents=result.summary["docs_out"])
        outlet_events[CORPUS].extra = extra
        return extra

    @task
    def report(crawl: dict[str, Any], extracted: list[dict[str, Any]], cleaned: list[dict[str, Any]],
               corpus: dict[str, Any]) -> str:
        """Pages fetched/failed by reason, documents dropped by filter, duplicates removed."""
        from llmops.artifacts import StageResult
        from llmops.data.pipeline import build_report, format_report, write_report

        context = get_current_context()
        load = StageResult.from_path
        summary = build_report(load(crawl["path"]), [load(e["path"]) for e in _all(extracted)],
                               [load(c["path"]) for c in _all(cleaned)], load(corpus["path"]))
        out = write_report(_cfg().home, context["run_id"], summary)
        text = format_report(summary)
        print(text)
        print(f"report: {out}")
        return text

    crawl = scrape()
    extracted = extract.expand(spec=plan_shards(crawl))
    cleaned = clean.expand(extracted=extracted)
    corpus = dedup(cleaned)
    report(crawl, extracted, cleaned, corpus)


llmops_data()
