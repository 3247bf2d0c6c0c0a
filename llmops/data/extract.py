"""Extract: main text and metadata from crawled HTML, with trafilatura.

trafilatura removes navigation, ads, cookie banners and (with ``include_comments``
off) comment sections, and reads title/author/date from the page metadata. We only
add what it does not give us: the ``<link rel="canonical">`` target, which dedup
uses to keep the original of a mirrored or printed page.

Input: one shard of a crawl (``index.jsonl`` + WARC). Output: ``docs.parquet`` with
the document schema and ``dropped.jsonl`` with every page that produced no document
and why.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import urljoin, urlsplit

from llmops.config import ExtractConfig
from llmops.data import store
from llmops.records.crawl import ExtractDropped, ExtractSummary, IndexEntry

if TYPE_CHECKING:
    from trafilatura.settings import Document

log = logging.getLogger(__name__)


def shard_of(url: str, num_shards: int) -> int:
    """Stable shard assignment (crc32 is the same in every process, unlike ``hash``)."""
    return zlib.crc32(url.encode()) % num_shards


def doc_id(url: str) -> str:
    return store.short_hash(url)


def canonical_link(html: str, base_url: str) -> str | None:
    """The page's ``<link rel="canonical">`` target as an absolute URL, if any."""
    import lxml.html

    try:
        tree = lxml.html.fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return None
    for href in tree.xpath('//link[@rel="canonical"]/@href'):
        try:
            return urljoin(base_url, href.strip())
        except ValueError:  # e.g. "http://[bad/": a broken hint, not a broken page
            return None
    return None


@dataclass
class Extracted:
    """A page's document."""

    record: store.ExtractDoc
    reason: None = None


@dataclass
class NotExtracted:
    """Why a page gave no document (``no_text``, ``extract_error:<Type>``)."""

    reason: str
    record: None = None


def extract_page(index_record: IndexEntry, payload: bytes, cfg: ExtractConfig) -> Extracted | NotExtracted:
    """One crawled page -> one document row, or a reason why there is none."""
    import trafilatura

    from llmops.data.scrape import decode_html

    url = index_record.final_url or index_record.url
    try:
        html = decode_html(payload, index_record.encoding)
        # Without ``as_dict`` (deprecated) trafilatura returns a Document or None, never a dict.
        doc = cast("Document | None", trafilatura.bare_extraction(
            html,
            url=url,
            include_comments=cfg.include_comments,
            include_tables=cfg.include_tables,
            favor_precision=cfg.favor_precision,
            with_metadata=True,
        ))
        canonical = canonical_link(html, url)
    except Exception as exc:  # a malformed page must not stop the shard
        return NotExtracted(f"extract_error:{type(exc).__name__}")
    text = (doc.text if doc is not None else "") or ""
    if doc is None or len(text.strip()) < max(cfg.min_text_chars, 1):
        return NotExtracted("no_text")
    return Extracted(
        store.ExtractDoc(
            id=doc_id(index_record.url),
            url=index_record.url,
            canonical_url=canonical,
            title=doc.title,
            author=doc.author,
            date_published=doc.date,
            text=text,
            source=urlsplit(index_record.url).netloc,
            fetched_at=index_record.fetched_at,
            discovered_via=index_record.discovered_via,
            payload_sha256=index_record.sha256,
        )
    )


def iter_shard(crawl_dir: Path, shard: int, num_shards: int) -> Iterator[tuple[IndexEntry, bytes]]:
    from llmops.data.scrape import iter_ok_pages

    for record, payload in iter_ok_pages(crawl_dir):
        if shard_of(record.url, num_shards) == shard:
            yield record, payload


def run_extract(crawl_dir: Path, out_dir: Path, cfg: ExtractConfig, shard: int = 0, num_shards: int = 1,
                progress: bool = False) -> ExtractSummary:
    """Extract one shard of a crawl into ``out_dir/docs.parquet``; returns the summary."""
    from tqdm import tqdm

    rows: list[store.ExtractDoc] = []
    dropped: list[ExtractDropped] = []
    pages = iter_shard(Path(crawl_dir), shard, num_shards)
    for record, payload in tqdm(pages, desc=f"extract {shard}/{num_shards}", unit="page", disable=not progress):
        result = extract_page(record, payload, cfg)
        if isinstance(result, NotExtracted):
            dropped.append(ExtractDropped(id=doc_id(record.url), url=record.url, reason=result.reason))
            log.info("dropped %s: %s", record.url, result.reason)
        else:
            rows.append(result.record)
    store.write_docs(rows, out_dir / "docs.parquet", schema=store.EXTRACT_SCHEMA)
    store.write_dropped(dropped, out_dir / "dropped.jsonl")
    summary = ExtractSummary(shard=shard, num_shards=num_shards, pages_in=len(rows) + len(dropped),
                             docs_out=len(rows), dropped_by_reason=store.count_by(dropped, "reason"))
    summary.write(out_dir / ExtractSummary.NAME)
    return summary
