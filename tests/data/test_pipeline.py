"""The data half end to end, in process, against the demo site and its ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from llmops.config import DemoSiteConfig, load_config
from llmops.data import pii, store
from llmops.data.extract import shard_of
from llmops.data.pipeline import clean_stage, dedup_stage, extract_stage, run_data_pipeline, scrape_stage
from llmops.data.scrape import read_index
from llmops.demo_site import start_demo_site
from llmops.records.crawl import INDEX_ENTRY, DedupDropped, read_lines

FAST_CRAWL = {"scrape": {"timeout_s": 1.0, "retries": 1, "backoff_s": 0.05, "rate_limit_per_host": 500.0}}


def _norm(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    cfg = load_config(environ={"LLMOPS_HOME": str(home)}, overrides=FAST_CRAWL)
    with start_demo_site(DemoSiteConfig(slow_delay_s=2.0), port=0) as site:
        report = run_data_pipeline(cfg, seed_url=site.url, crawl_id="test-run")
        again = run_data_pipeline(cfg, seed_url=site.url, crawl_id="test-run")
        requested = site.requested_paths()
        # Another run of the unchanged site (conditional requests: 304s), then one after an
        # article's text changed.
        recrawl = _first_half(cfg, site.url, "test-run-2")
        gt = site.ground_truth.dump()
        article = next(p for p in gt["pages"] if p["kind"] == "article")
        sentence = article["article_sentences"][0]
        html = site.site.pages[article["path"]].body.decode()
        site.update_page(article["path"], html.replace(sentence, sentence + " A sentence added later.", 1))
        edited = _first_half(cfg, site.url, "test-run-3")
    base = site.url.rstrip("/")
    corpus_dir = Path(report.corpus.path)
    corpus = store.read_docs(corpus_dir / "corpus.parquet", store.CorpusDoc)
    return {
        "report": report, "again": again, "gt": gt, "requested": requested, "base": base,
        "index": [r.model_dump() for r in read_index(Path(report.crawl.path))],
        "corpus": {d["url"].replace(base, ""): d for d in corpus},
        "removed": store.read_dropped(corpus_dir / "dropped.jsonl"),
        "first": _first_half(cfg, site.url, "test-run"), "recrawl": recrawl, "edited": edited,
        "edited_shard": shard_of(base + article["path"], cfg.data.num_shards),
    }


def _first_half(cfg, seed_url: str, crawl_id: str) -> dict:
    """The stage results of one crawl up to dedup (a finished crawl id is reused, not fetched)."""
    crawl = scrape_stage(cfg, seed_url, crawl_id)
    n = cfg.data.num_shards
    extracted = [extract_stage(cfg, crawl.path, i, n) for i in range(n)]
    cleaned = [clean_stage(cfg, e.path) for e in extracted]
    deduped = dedup_stage(cfg, [c.path for c in cleaned])
    return {"crawl": crawl, "extract": extracted, "clean": cleaned, "dedup": deduped}


def test_every_fault_is_in_the_index_with_its_reason(run):
    by_path = {r["url"].replace(run["base"], ""): r for r in run["index"]}
    for fault in run["gt"]["faults"]:
        record = by_path[fault["path"]]
        if fault["expect"] == "ok":
            assert record["ok"], fault
        else:
            assert record["error"] == fault["expect"], (fault, record["error"])
            assert not record["ok"]


def test_robots_disallowed_section_never_requested(run):
    prefixes = run["gt"]["robots_disallow_prefixes"]
    assert not [p for p in run["requested"] if any(p.startswith(pre) for pre in prefixes)]
    by_path = {r["url"].replace(run["base"], ""): r for r in run["index"]}
    for path in run["gt"]["disallowed"]:
        assert by_path[path]["error"] == "robots_disallowed"


def test_planted_duplicates_removed_and_originals_kept(run):
    removed = {r.url.replace(run["base"], ""): r for r in run["removed"] if isinstance(r, DedupDropped)}
    assert len(removed) == len(run["removed"])
    for dup in run["gt"]["duplicates"]:
        assert dup["path"] in removed, dup
        assert removed[dup["path"]].duplicate_of.replace(run["base"], "") == dup["original"]
        assert removed[dup["path"]].reason == ("exact_duplicate" if dup["kind"] == "exact" else "near_duplicate")
        assert dup["original"] in run["corpus"], dup
    planted = {d["path"] for d in run["gt"]["duplicates"]}
    assert set(removed) == planted  # nothing else was taken for a duplicate


def test_all_articles_reach_the_corpus(run):
    articles = {p["path"] for p in run["gt"]["pages"] if p["kind"] == "article"}
    assert articles <= set(run["corpus"])


def test_boilerplate_and_comments_are_not_in_the_text(run):
    texts = [_norm(d["text"]) for d in run["corpus"].values()]
    snippets = [_norm(b) for b in run["gt"]["boilerplate"] if len(b) >= 20]
    assert len(snippets) > 50
    leaked = [s for s in snippets if any(s in t for t in texts)]
    assert leaked == []


def test_article_body_pii_is_still_there(run):
    body = [p for p in run["gt"]["pii"] if p["where"] == "body" and p["page"] in run["corpus"]]
    assert {p["type"] for p in body} >= {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "CREDIT_CARD",
                                         "IP_ADDRESS", "LOCATION", "SECRET"}
    missing = [p for p in body if _norm(p["value"]) not in _norm(run["corpus"][p["page"]]["text"])]
    assert missing == []
    comment_only = {p["value"] for p in run["gt"]["pii"] if p["where"] == "comment"} - {p["value"] for p in body}
    texts = " ".join(_norm(d["text"]) for d in run["corpus"].values())
    assert [v for v in comment_only if len(v) > 8 and _norm(v) in texts] == []


def test_rerun_with_same_inputs_reuses_every_stage(run):
    assert not run["report"].crawl.reused and not run["report"].dedup.reused
    again = run["again"]
    assert again.crawl.reused and again.extract.reused and again.clean.reused
    assert again.dedup.reused
    assert again.corpus == run["report"].corpus


def test_a_second_crawl_of_the_unchanged_site_reuses_every_stage_after_it(run):
    first, second = run["first"], run["recrawl"]
    assert not second["crawl"].reused and second["crawl"].key != first["crawl"].key  # a new observation...
    assert second["crawl"].summary["not_modified"] > 0  # ...answered with 304s
    assert second["crawl"].content_hash == first["crawl"].content_hash  # ...of the same content
    for stage in ("extract", "clean"):
        assert [r.key for r in second[stage]] == [r.key for r in first[stage]], stage
        assert all(r.reused for r in second[stage]), stage
    assert second["dedup"].key == first["dedup"].key and second["dedup"].reused
    assert second["dedup"].path == Path(run["report"].corpus.path)


def test_a_changed_page_changes_the_keys_of_what_it_reaches(run):
    first, edited, shard = run["first"], run["edited"], run["edited_shard"]
    assert edited["crawl"].content_hash != first["crawl"].content_hash
    for stage in ("extract", "clean"):
        changed = [i for i, (a, b) in enumerate(zip(first[stage], edited[stage], strict=True)) if a.key != b.key]
        assert changed == [shard], stage  # the other shards are reused
        assert not edited[stage][shard].reused
    assert edited["dedup"].key != first["dedup"].key and not edited["dedup"].reused


def test_corpus_schema_and_report(run):
    doc = next(iter(run["corpus"].values()))
    assert set(store.CORPUS_SCHEMA.names) == set(doc)
    report = run["report"]
    assert report.crawl.pages_failed == sum(report.crawl.failed_by_reason.values())
    json.dumps(report.dump())  # the report is plain JSON


def test_crawl_that_fetches_nothing_fails_and_publishes_nothing(tmp_path):
    from llmops.data.pipeline import CrawlFailed, scrape_stage

    cfg = load_config(environ={"LLMOPS_HOME": str(tmp_path)},
                      overrides={"scrape": {"timeout_s": 0.5, "retries": 0}})
    with pytest.raises(CrawlFailed, match="connection_error|robots_unavailable") as exc:
        scrape_stage(cfg, "http://127.0.0.1:1/", "run-1")
    kept = tmp_path / "logs" / "failed-crawls" / "run-1-index.jsonl"
    assert str(kept) in str(exc.value)
    assert read_lines(kept, INDEX_ENTRY)[0].url == "http://127.0.0.1:1/"  # the reasons are kept
    assert list((tmp_path / "artifacts" / "scrape").iterdir()) == []  # no half-written .tmp either


def test_crawl_of_a_missing_seed_is_refused_for_good(tmp_path):
    """Retrying cannot fix a seed that answers 404: the error is permanent (the task fails at once)."""
    import functools
    import http.server
    import threading

    from llmops.data.pipeline import CrawlRefused
    from llmops.errors import is_transient

    empty = tmp_path / "www"
    empty.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(empty))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = load_config(environ={"LLMOPS_HOME": str(tmp_path / "home")}, overrides={"scrape": {"retries": 0}})
    try:
        with pytest.raises(CrawlRefused, match="http_404") as exc:
            scrape_stage(cfg, f"http://127.0.0.1:{server.server_port}/missing.html", "run-1")
    finally:
        server.shutdown()
    assert is_transient(exc.value) is False


def test_row_types_declare_todays_parquet_schemas():
    """The schemas are derived from the row TypedDicts; a changed column would change every
    file's bytes, so they are pinned here as declared before the rows were typed."""
    extract = [("id", pa.string()), ("url", pa.string()), ("canonical_url", pa.string()), ("title", pa.string()),
               ("author", pa.string()), ("date_published", pa.string()), ("text", pa.string()),
               ("source", pa.string()), ("fetched_at", pa.string()), ("discovered_via", pa.string()),
               ("payload_sha256", pa.string())]
    clean = extract + [("n_chars", pa.int32()), ("n_words", pa.int32()), ("n_sentences", pa.int32()),
                       ("sentences", pa.list_(pa.string())), ("lang", pa.string()), ("lang_score", pa.float32())]
    corpus = clean + [("text_sha256", pa.string()), ("dup_cluster", pa.string()), ("dup_count", pa.int32())]
    redacted = corpus + [("pii_counts", pa.string())]
    for schema, fields in [(store.EXTRACT_SCHEMA, extract), (store.CLEAN_SCHEMA, clean),
                           (store.CORPUS_SCHEMA, corpus), (store.REDACTED_SCHEMA, redacted)]:
        assert schema.equals(pa.schema(fields), check_metadata=True)
    assert pii.REDACTED_SCHEMA.equals(store.REDACTED_SCHEMA)


def test_reading_a_table_as_a_row_it_lacks_columns_of_fails(tmp_path):
    from llmops.records.base import RecordError

    row = store.ExtractDoc(id="1", url="http://h/", canonical_url=None, title=None, author=None,
                           date_published=None, text="t", source="h", fetched_at=None, discovered_via="seed",
                           payload_sha256=None)
    store.write_docs([row], tmp_path / "docs.parquet", store.EXTRACT_SCHEMA)
    assert store.read_docs(tmp_path / "docs.parquet") == [row]
    with pytest.raises(RecordError, match="docs.parquet is not a table of CleanDoc: column n_chars is missing"):
        store.read_docs(tmp_path / "docs.parquet", store.CleanDoc)
