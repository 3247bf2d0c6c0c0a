"""What the crawl, extract and the demo site hand on: ``index.jsonl`` lines, the crawl and
extract summaries, the ``dropped.jsonl`` lines every data stage writes, and the demo
site's ground truth, access log and published sections.

Lines of a JSONL file (an index entry, a dropped record, an access-log line) and the
objects inside ``ground_truth.json`` are version-less :class:`Entry` models: a line has no
room for a ``schema_version`` without changing what content digests are taken over, and
unlike a :class:`~llmops.records.common.Ref` an entry keeps its null fields, because
today's readers (and the README) expect every key. The summaries are stage summaries
(:class:`~llmops.records.data.StageSummary`, written without a version); the ground
truth is a :class:`Record`.
"""

from __future__ import annotations

import os
from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from llmops.data.store import CleanDoc
from llmops.records.base import Record, RecordError
from llmops.records.data import StageSummary

T = TypeVar("T")


def read_lines(path: str | os.PathLike[str], adapter: TypeAdapter[T]) -> list[T]:
    """Every line of a JSONL file, validated: a renamed or missing field raises
    :class:`RecordError` naming the file, the line and the field."""
    with open(path, encoding="utf-8") as fh:
        return [_line(adapter, line, f"{os.fspath(path)}:{n}") for n, line in enumerate(fh, 1) if line.strip()]


def _line(adapter: TypeAdapter[T], line: str, source: str) -> T:
    try:
        return adapter.validate_json(line)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise RecordError(f"{source} does not validate: {errors}") from None

class Entry(BaseModel):
    """A version-less JSON object of these files: unknown fields refused, nulls written."""

    model_config = ConfigDict(extra="forbid")


# ---- the crawl (llmops.data.scrape) ------------------------------------------------


class IndexEntry(Entry):
    """One line of a crawl's ``index.jsonl``: one URL, fetched or not, with its reason.

    Filled in while the URL is fetched, so its fields start empty; the line is written
    with sorted keys, exactly as before records (the stage fixture's digests hold it).
    """

    url: str
    """The canonical URL (what was requested and matched against robots.txt)."""
    status: int | None = None
    """The last hop's HTTP status (None: never requested or no answer)."""
    content_type: str | None = None
    fetched_at: str | None = None
    """When the answer came (ISO 8601, UTC, milliseconds): volatile, not content."""
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None
    """The reason code of a failed URL (``robots_disallowed``, ``http_404``...: scrape's docstring)."""
    ok: bool = False
    final_url: str | None = None
    """Where the redirect chain ended (the URL itself without redirects)."""
    discovered_via: str
    """``seed``, ``sitemap`` or ``link``."""
    depth: int
    attempts: int = 0
    bytes: int = 0
    """Bytes received over the network (all hops and attempts), or the kept payload's size."""
    sha256: str | None = None
    """The kept payload's SHA-256, checked when it is read back from the WARC."""
    encoding: str | None = None
    """The charset the page declares, as a Python codec name."""
    not_modified: bool = False
    """Answered 304 to a conditional request: the payload was copied from the previous crawl."""
    warc_offset: int | None = None
    """File offset of the page's response record in ``crawl.warc.gz``."""
    elapsed_ms: float | None = None


INDEX_ENTRY = TypeAdapter(IndexEntry)


class CrawlSummary(StageSummary):
    """A crawl's ``summary.json``, also what :func:`llmops.data.scrape.crawl` returns."""

    seed_url: str
    urls_seen: int
    """Index records plus the URLs left over by ``max_pages``."""
    pages_ok: int
    pages_failed: int
    failed_by_reason: dict[str, int]
    not_modified: int
    bytes_downloaded: int
    elapsed_s: float
    pages_per_s: float
    offsite_links: int
    skipped_max_pages: int
    previous_crawl: str | None = None
    """The earlier crawl whose pages were re-requested conditionally (a bandwidth hint only)."""


# ---- extract (llmops.data.extract) ---------------------------------------------------


class ExtractSummary(StageSummary):
    """One extract shard's ``summary.json``."""

    shard: int
    num_shards: int
    pages_in: int
    docs_out: int
    dropped_by_reason: dict[str, int]


# ---- dropped.jsonl (every data stage) --------------------------------------------------


class Dropped(Entry):
    """What every line of a ``dropped.jsonl`` holds: a page or document no stage output
    keeps, and why. Each stage's record adds its own details."""

    id: str
    url: str
    stage: str
    reason: str


class ExtractDropped(Dropped):
    """A crawled page extract made no document of (``no_text``, ``extract_error:<Type>``)."""

    stage: Literal["extract"] = "extract"


class CleanDropped(Dropped):
    """A document a clean filter refused (``reason`` is the filter's name)."""

    stage: Literal["clean"] = "clean"
    detail: str | None
    """What the filter measured, in words."""
    document: CleanDoc
    """The whole normalised document, as clean measured it."""


class DedupDropped(Dropped):
    """A document removed as a duplicate of its cluster's representative."""

    stage: Literal["dedup"] = "dedup"
    duplicate_of: str
    """The representative's URL."""
    cluster_id: str
    similarity: float | None
    """The estimated Jaccard similarity (1.0 for an exact duplicate)."""


DroppedRecord = Annotated[ExtractDropped | CleanDropped | DedupDropped, Field(discriminator="stage")]
"""Any stage's dropped record, told apart by ``stage``."""

DROPPED = TypeAdapter(DroppedRecord)
"""Validates one ``dropped.jsonl`` line into its stage's record."""


# ---- the demo site (llmops.demo_site) ---------------------------------------------------


PageKind = Literal["index", "article", "mirror", "print", "fault", "private", "robots_only"]


class GroundTruthPage(Entry):
    """A page of the demo site and the text it plants (what extract should find)."""

    path: str
    kind: PageKind
    topic: str | None
    """The pydoc topic an article (or its mirror or print version) is made from; for an
    article of the ``library`` section, its module (``json``)."""
    title: str
    author: str | None
    date_published: str | None
    article_text: str
    article_sentences: list[str]


class PlantedDuplicate(Entry):
    path: str
    original: str
    kind: Literal["exact", "near"]


class PlantedPii(Entry):
    """A PII value or secret planted in a page (``where``: its body or its comments)."""

    page: str
    type: str
    """One of ``llmops.demo_site.PII_TYPES``."""
    value: str
    where: Literal["body", "comment"]


class ExpectedFault(Entry):
    path: str
    expect: str
    """``ok`` or the crawl's reason code for the page (``http_404``, ``timeout``...)."""


class GroundTruth(Record):
    """``ground_truth.json``: everything the demo site plants, to measure the stages against.

    Written by ``llmops demo-site serve --ground-truth`` into ``Layout.demo_site``; read by
    the evaluation (its PII values are the default leak canaries) and the tests.
    """

    NAME: ClassVar[str] = "ground_truth.json"

    seed: int
    brand: str
    pages: list[GroundTruthPage]
    duplicates: list[PlantedDuplicate]
    pii: list[PlantedPii]
    boilerplate: list[str]
    """Distinctive navigation, banner, ad and footer snippets: none may reach a document."""
    faults: list[ExpectedFault]
    disallowed: list[str]
    """Paths robots.txt keeps crawlers away from."""
    robots_disallow_prefixes: list[str]
    """Sections disallowed whole, with no ``Allow`` exception."""
    robots_rules: list[str]
    sitemap: list[str]


DemoSiteSection = Literal["library"]
"""A section the demo site publishes on demand, on top of its ``/docs/`` articles:
``library``, one article per standard-library module the shifted traffic asks about."""


class PublishedSection(Entry):
    name: DemoSiteSection
    published_at: AwareDatetime
    """When ``llmops demo-site publish`` added it."""


class PublishedSections(Record):
    """``published.json``: the sections the demo site serves, in ``Layout.demo_site_published``.

    Written by ``llmops demo-site publish``; read by ``llmops demo-site serve``, which starts
    with these sections and re-reads the file whenever it changes. No file: none published.
    """

    NAME: ClassVar[str] = "published.json"

    sections: list[PublishedSection] = []

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sections)


class AccessLogEntry(Entry):
    """One line of the demo site's ``access.jsonl``: a request as the server answered it."""

    path: str
    """The request target as sent (path and query)."""
    method: str
    status: int
    ts: float
    """Unix time of the answer."""


ACCESS_LOG_ENTRY = TypeAdapter(AccessLogEntry)
