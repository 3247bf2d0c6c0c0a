from llmops.config import DemoSiteConfig, ExtractConfig
from llmops.data.extract import canonical_link, extract_page, shard_of
from llmops.demo_site import build_site
from llmops.records.crawl import IndexEntry


def _record(path: str, encoding: str | None = None) -> IndexEntry:
    return IndexEntry(url=f"http://127.0.0.1:8765{path}", encoding=encoding, fetched_at="2026-01-01T00:00:00Z",
                      discovered_via="link", depth=1, ok=True, sha256="x")


def test_article_text_and_metadata_without_boilerplate():
    site = build_site(DemoSiteConfig())
    page = next(p for p in site.ground_truth.pages if p.kind == "article")
    out = extract_page(_record(page.path), site.pages[page.path].body, ExtractConfig())
    assert out.reason is None
    doc = out.record
    assert doc["title"] == page.title and doc["author"] == page.author
    assert doc["date_published"] == page.date_published
    assert doc["canonical_url"] == f"http://127.0.0.1:8765{page.path}"
    text = " ".join(doc["text"].split())
    assert all(" ".join(s.split()) in text for s in page.article_sentences)
    assert not any(" ".join(b.split()) in text for b in site.ground_truth.boilerplate if len(b) >= 20)


def test_windows_1252_page_is_decoded():
    site = build_site(DemoSiteConfig())
    out = extract_page(_record("/faults/latin1.html", "windows-1252"), site.pages["/faults/latin1.html"].body,
                       ExtractConfig())
    assert out.reason is None
    assert "é" in out.record["text"] and "\ufffd" not in out.record["text"]


def test_page_without_text_is_dropped_with_reason():
    out = extract_page(_record("/empty.html"), b"<html><head><title>t</title></head><body><div> </div></body></html>",
                       ExtractConfig())
    assert out.record is None and out.reason == "no_text"


def test_canonical_link_is_absolute():
    html = '<html><head><link rel="canonical" href="/docs/a.html"></head><body></body></html>'
    assert canonical_link(html, "http://h/print/a.html") == "http://h/docs/a.html"
    assert canonical_link("<html><body>x</body></html>", "http://h/") is None


def test_shards_partition_urls_stably():
    urls = [f"http://h/{i}" for i in range(200)]
    shards = [shard_of(u, 4) for u in urls]
    assert set(shards) == {0, 1, 2, 3}
    assert shards == [shard_of(u, 4) for u in urls]


def test_malformed_canonical_href_does_not_break_the_page():
    html = ('<html><head><link rel="canonical" href="http://[bad/"></head><body><article><p>'
            + "A sentence about the assert statement in Python programs. " * 5 + "</p></article></body></html>")
    assert canonical_link(html, "http://h/a.html") is None
    out = extract_page(_record("/a.html"), html.encode(), ExtractConfig())
    assert out.reason is None and out.record["canonical_url"] is None
