"""The records of the crawl, extract and the demo site (``llmops.records.crawl``): each one
round-trips and refuses an unknown field, and files written before records were typed read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from llmops.config import DemoSiteConfig, ExtractConfig
from llmops.data import store
from llmops.data.extract import run_extract
from llmops.data.scrape import read_index
from llmops.demo_site import build_site
from llmops.records.base import Record, RecordError
from llmops.records.crawl import (
    DROPPED,
    INDEX_ENTRY,
    AccessLogEntry,
    CleanDropped,
    CrawlSummary,
    DedupDropped,
    ExpectedFault,
    ExtractDropped,
    ExtractSummary,
    GroundTruth,
    GroundTruthPage,
    IndexEntry,
    PlantedDuplicate,
    PlantedPii,
    read_lines,
)
from tests.stage_fixture import write_crawl

V0 = Path(__file__).parent / "records_v0"

PAGE = GroundTruthPage(path="/", kind="index", topic=None, title="Docs", author=None, date_published=None,
                       article_text="", article_sentences=[])
RECORDS: list[BaseModel] = [
    IndexEntry(url="http://h/", discovered_via="seed", depth=0),
    IndexEntry(url="http://h/a", status=200, content_type="text/html", fetched_at="2026-01-01T00:00:00.000Z",
               etag='"1"', ok=True, final_url="http://h/a", discovered_via="link", depth=1, attempts=1, bytes=10,
               sha256="ab", encoding="utf-8", warc_offset=42, elapsed_ms=1.5),
    CrawlSummary(seed_url="http://h/", urls_seen=2, pages_ok=1, pages_failed=1, failed_by_reason={"http_404": 1},
                 not_modified=0, bytes_downloaded=10, elapsed_s=0.1, pages_per_s=20.0, offsite_links=0,
                 skipped_max_pages=0, previous_crawl="/h/artifacts/scrape/1"),
    ExtractSummary(shard=0, num_shards=1, pages_in=2, docs_out=1, dropped_by_reason={"no_text": 1}),
    ExtractDropped(id="1", url="http://h/e", reason="no_text"),
    CleanDropped(id="2", url="http://h/c", reason="length", detail="3 words", document=store.CleanDoc(
        id="2", url="http://h/c", canonical_url=None, title="t", author=None, date_published=None, text="a b c",
        source="h", fetched_at=None, discovered_via="link", payload_sha256=None, n_chars=5, n_words=3,
        n_sentences=1, sentences=["a b c"], lang="en", lang_score=0.5)),
    DedupDropped(id="3", url="http://h/d", reason="near_duplicate", duplicate_of="http://h/a", cluster_id="1",
                 similarity=0.9),
    PAGE,
    PlantedDuplicate(path="/mirror/a", original="/a", kind="exact"),
    PlantedPii(page="/a", type="EMAIL_ADDRESS", value="a@b.example", where="comment"),
    ExpectedFault(path="/faults/slow.html", expect="timeout"),
    GroundTruth(seed=1, brand="Docs", pages=[PAGE], duplicates=[], pii=[], boilerplate=["Cookies"], faults=[],
                disallowed=["/private/"], robots_disallow_prefixes=["/private/"], robots_rules=["User-agent: *"],
                sitemap=["/a"]),
    AccessLogEntry(path="/a?x=1", method="GET", status=200, ts=1.5),
]


def _load(cls: type[BaseModel], data: dict) -> BaseModel:
    return cls.load(data) if issubclass(cls, Record) else cls.model_validate(data)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_record_round_trips_through_json(record: BaseModel) -> None:
    assert _load(type(record), json.loads(record.model_dump_json())) == record


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_record_refuses_an_unknown_field(record: BaseModel) -> None:
    with pytest.raises((RecordError, ValidationError), match="bogus"):
        _load(type(record), json.loads(record.model_dump_json()) | {"bogus": 1})


def test_dropped_lines_are_told_apart_by_stage() -> None:
    for record in RECORDS:
        if isinstance(record, ExtractDropped | CleanDropped | DedupDropped):
            assert DROPPED.validate_json(record.model_dump_json()) == record
    with pytest.raises(ValidationError):
        DROPPED.validate_python({"id": "1", "url": "u", "stage": "tokens", "reason": "x"})


def test_index_written_before_records_reads_and_rewrites_byte_for_byte() -> None:
    lines = (V0 / "scrape_index.jsonl").read_text().splitlines()
    entries = read_lines(V0 / "scrape_index.jsonl", INDEX_ENTRY)
    assert [json.dumps(e.model_dump(), sort_keys=True, ensure_ascii=False) for e in entries] == lines


def test_index_line_with_a_renamed_field_fails_naming_file_and_line(tmp_path: Path) -> None:
    write_crawl(tmp_path)
    index = tmp_path / "index.jsonl"
    lines = index.read_text().splitlines()
    lines[1] = lines[1].replace('"sha256"', '"sha_256"')
    index.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"index.jsonl:2 .*sha_256"):
        read_index(tmp_path)


def test_summaries_written_before_records_read() -> None:
    crawl = CrawlSummary.read(V0 / "scrape_summary.json")
    assert crawl.pages_ok == 104 and crawl.previous_crawl is None
    manifest = json.loads((V0 / "scrape_manifest.json").read_text())
    assert CrawlSummary.load(manifest["summary"]).dump() == manifest["summary"]
    assert ExtractSummary.read(V0 / "extract_summary.json").docs_out == 41


def test_dropped_files_written_before_records_read_and_rewrite_byte_for_byte(tmp_path: Path) -> None:
    for name in ("dedup_dropped.jsonl", "clean_dropped.jsonl"):
        records = store.read_dropped(V0 / name)
        store.write_dropped(records, tmp_path / name)
        assert (tmp_path / name).read_bytes() == (V0 / name).read_bytes()
    assert all(isinstance(r, DedupDropped) for r in store.read_dropped(V0 / "dedup_dropped.jsonl"))


def test_extract_writes_todays_summary_keys_and_dropped_lines(tmp_path: Path) -> None:
    crawl, out = tmp_path / "crawl", tmp_path / "extract"
    crawl.mkdir()
    out.mkdir()
    write_crawl(crawl)
    summary = run_extract(crawl, out, ExtractConfig())
    assert set(json.loads((out / "summary.json").read_text())) == {
        "shard", "num_shards", "pages_in", "docs_out", "dropped_by_reason"}
    assert ExtractSummary.read(out) == summary
    (dropped,) = store.read_dropped(out / "dropped.jsonl")
    assert isinstance(dropped, ExtractDropped) and dropped.url.endswith("/empty") and dropped.reason == "no_text"
    assert json.loads((out / "dropped.jsonl").read_text()) == {
        "id": dropped.id, "url": dropped.url, "stage": "extract", "reason": "no_text"}


def test_ground_truth_written_before_records_reads(tmp_path: Path) -> None:
    """What ``write_ground_truth`` wrote before records: the dict, no ``schema_version``."""
    site = build_site(DemoSiteConfig())
    today = site.ground_truth.model_dump(mode="json", exclude={"schema_version"})
    path = tmp_path / "ground_truth.json"
    path.write_text(json.dumps(today, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert GroundTruth.read(path) == site.ground_truth
    assert GroundTruth.read(tmp_path) == site.ground_truth  # the directory holding it


def test_ground_truth_with_a_renamed_field_fails_where_it_is_read(tmp_path: Path) -> None:
    stored = RECORDS[-2].model_dump(mode="json", exclude={"schema_version"})
    stored["pii_values"] = stored.pop("pii")
    (tmp_path / "ground_truth.json").write_text(json.dumps(stored))
    with pytest.raises(RecordError, match="pii"):
        GroundTruth.read(tmp_path)


def test_a_clean_dropped_document_missing_a_column_fails() -> None:
    line = json.loads(RECORDS[5].model_dump_json())
    del line["document"]["lang_score"]
    with pytest.raises(ValidationError, match="lang_score"):
        DROPPED.validate_python(line)
