"""A tiny crawl written by hand, in the crawler's format (``index.jsonl`` + WARC), so that
every data stage can run on fixed input in a second or two, on any machine.

The site: three articles with personal data (for redact) and prose sentences (for the
Q&A set), an exact copy and a print view of one of them (for dedup), a link list that
clean drops and a page without text that extract drops. URLs are fixed (no server, no
port), so document ids, and therefore every output, are the same everywhere.
"""

from __future__ import annotations

import hashlib
import json
from io import BytesIO
from pathlib import Path
from typing import Any

from llmops.config import LlmopsConfig, load_config

BASE = "http://tiny.example"


def _article(title: str, paragraphs: list[str], canonical: str | None = None) -> str:
    link = f'<link rel="canonical" href="{canonical}">' if canonical else ""
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (f"<html><head><title>{title}</title>{link}</head><body><nav><a href='/'>Home</a></nav>"
            f"<article><h1>{title}</h1>{body}</article><footer>Tiny Example Press</footer></body></html>")


HARBOUR = [
    "The old harbour was built in the eighteenth century to shelter fishing boats from the winter storms "
    "that sweep along the northern coast every year.",
    "Its stone walls are more than four metres thick, and the original mooring rings can still be seen on "
    "the eastern quay at low tide.",
    "For guided visits, write to Maria Jensen at maria.jensen@example.com or call 212-555-0134 during "
    "office hours on weekdays.",
    "The harbour master keeps a logbook of every ship that entered the basin since the records began, and "
    "the volumes are open to readers in the town library.",
]
LIGHTHOUSE = [
    "The lighthouse on the headland guided ships past the reef for almost two hundred years before an "
    "automatic beacon replaced its keepers.",
    "Its lamp burned whale oil at first, then paraffin, and finally electricity, which reached the headland "
    "only after the second world war.",
    "The last keeper, Thomas Berg, wrote in his diary that the stairs had one hundred and twelve steps and "
    "that he climbed them six times every night.",
    "Visitors can climb the tower on summer afternoons when the weather is calm and the wind is not too "
    "strong on the gallery.",
]
BAKERY = [
    "The bakery on the market square has baked rye bread in the same wood-fired oven since the town "
    "received its charter from the king.",
    "Every morning the bakers start at three o'clock, and the first loaves leave the oven before the "
    "fishermen walk down to the harbour.",
    "The recipe uses a sourdough starter that the family says is older than anyone living, and they keep a "
    "second jar of it in a neighbour's cellar.",
    "Orders for weddings and feasts are taken by Anna Lund, whose number 212-555-0199 is written on a card "
    "beside the till.",
]

PAGES: dict[str, str] = {
    "/articles/harbour": _article("The Old Harbour", HARBOUR),
    "/articles/harbour-copy": _article("The Old Harbour", HARBOUR),  # an exact copy
    "/articles/lighthouse": _article("The Lighthouse", LIGHTHOUSE),
    "/print/lighthouse": _article("The Lighthouse", LIGHTHOUSE + ["Printed from tiny.example."],
                                  canonical=f"{BASE}/articles/lighthouse"),  # a print view
    "/articles/bakery": _article("The Bakery", BAKERY),
    "/tags": "<html><body><ul>" + "".join(f"<li><a href='/t/{i}'>tag {i}</a></li>" for i in range(40))
             + "</ul></body></html>",
    "/empty": "<html><head><title>Nothing</title></head><body><div> </div></body></html>",
}

# Settings pinned for the fixture (the rest are the defaults): small enough to be fast,
# one process everywhere (spawning workers would cost more than the work).
SETTINGS: dict[str, Any] = {
    "tokenizer": {"vocab_size": 300, "min_frequency": 2, "validation_fraction": 0.3, "window": 16, "stride": 16,
                  "num_workers": 1},
    "pii": {"processes": 1},
    "qa": {"heldout_fraction": 0.3},
}


def fixture_config(home: Path, **sections: dict) -> LlmopsConfig:
    from llmops.config import with_overrides

    cfg = load_config(environ={}, overrides={"home": str(home), **SETTINGS})
    return with_overrides(cfg, sections) if sections else cfg


def write_crawl(out: Path, pages: dict[str, str] = PAGES, *, fetched_at: str = "2026-01-01T00:00:00.000Z",
                not_modified: bool = False, reverse: bool = False) -> dict[str, Any]:
    """``index.jsonl`` + ``crawl.warc.gz`` as ``llmops.data.scrape`` writes them.

    ``not_modified`` writes what a conditional re-crawl writes when every page answered
    304: the index says status 304, the WARC holds the earlier 200 response. ``reverse``
    stores the records in the opposite order (fetch order varies between crawls).
    """
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    from llmops.data.scrape import INDEX_FILE, WARC_FILE

    records = []
    with open(out / WARC_FILE, "wb") as fh:
        warc = WARCWriter(fh, gzip=True)
        for path in sorted(pages, reverse=reverse):
            url, payload = BASE + path, pages[path].encode()
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                                  ("Content-Length", str(len(payload)))], protocol="HTTP/1.1")
            extra = {"WARC-Date": fetched_at} | ({"WARC-Llmops-Not-Modified": "true"} if not_modified else {})
            record = warc.create_warc_record(url, "response", payload=BytesIO(payload), length=len(payload),
                                             http_headers=headers, warc_headers_dict=extra)
            offset = warc.out.tell()
            warc.write_record(record)
            records.append({
                "url": url, "status": 304 if not_modified else 200, "content_type": "text/html; charset=utf-8",
                "fetched_at": fetched_at, "etag": f'"{hashlib.sha256(payload).hexdigest()[:8]}"',
                "last_modified": None, "error": None, "ok": True, "final_url": url,
                "discovered_via": "sitemap" if reverse else "link", "depth": 1, "attempts": 1,
                "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "encoding": "utf-8",
                "not_modified": not_modified, "warc_offset": offset, "elapsed_ms": 1.0,
            })
    records.sort(key=lambda r: r["url"])
    with open(out / INDEX_FILE, "w") as fh:
        for record in records:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
    summary = {"seed_url": BASE + "/", "pages_ok": len(records), "pages_failed": 0, "failed_by_reason": {},
               "not_modified": len(records) if not_modified else 0}
    (out / "summary.json").write_text(json.dumps(summary))
    return summary


def crawl_stage(cfg: LlmopsConfig, crawl_id: str, pages: dict[str, str] = PAGES, **kwargs: Any):
    """A hand-written crawl registered as the ``scrape`` stage output of run ``crawl_id``."""
    from llmops.artifacts import build_stage
    from llmops.data.pipeline import crawl_digest

    return build_stage(cfg.home, "scrape", {"seed_url": BASE + "/", "sitemap_url": None, "crawl_id": crawl_id},
                       cfg.scrape.model_dump(mode="json"), lambda tmp: write_crawl(tmp, pages, **kwargs),
                       digest=crawl_digest)
