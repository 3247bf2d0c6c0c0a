"""Tests of the crawler against a tiny local http.server site (and the demo site when present)."""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator

from llmops.config import ScrapeConfig
from llmops.data import scrape
from llmops.data.scrape import (
    canonicalize_url,
    crawl,
    decode_html,
    detect_encoding,
    extract_links,
    iter_ok_pages,
    looks_binary,
    parse_sitemap,
    read_index,
)
from llmops.records.crawl import IndexEntry

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
LATIN1_HTML = "<html><body><p>Café crème – 20 €</p></body></html>".encode("cp1252")


# ----------------------------------------------------------------- pure functions


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("HTTP://Example.COM:80/a/./b/../c?b=2&a=1#frag", "http://example.com/a/c?a=1&b=2"),
        ("https://example.com:443", "https://example.com/"),
        ("https://example.com:8443/x/", "https://example.com:8443/x/"),
        ("http://example.com/a/b/..", "http://example.com/a/"),
        ("http://example.com/../../x", "http://example.com/x"),
        ("http://example.com/a b", "http://example.com/a%20b"),
        ("http://example.com/?z=&a=1&&a=0", "http://example.com/?a=0&a=1&z="),
        ("http://example.com/%7euser/%2fx", "http://example.com/~user/%2Fx"),  # unreserved decoded
        ("http://example.com/?q=a%20b&flag", "http://example.com/?flag=&q=a+b"),
        ("http://[::1]:80/x", "http://[::1]/x"),
        ("http://Bücher.example/café", "http://xn--bcher-kva.example/caf%C3%A9"),
    ],
)
def test_canonicalize_url(raw: str, canonical: str) -> None:
    assert canonicalize_url(raw) == canonical
    assert canonicalize_url(canonical) == canonical  # idempotent


@pytest.mark.parametrize("bad", ["/relative/path", "mailto:", "http://example.com:99999/", "http:///nohost",
                                 "http://[bad/"])
def test_canonicalize_url_rejects_unusable_urls(bad: str) -> None:
    with pytest.raises(ValueError):
        canonicalize_url(bad)


def test_decode_html_handles_legacy_and_broken_encodings() -> None:
    assert "Café crème – 20 €" in decode_html(LATIN1_HTML, "windows-1252")
    # Servers say latin-1 but mean cp1252 (the euro sign and the dash are not latin-1).
    assert "– 20 €" in decode_html(LATIN1_HTML, "iso-8859-1")
    assert decode_html("naïve".encode(), None) == "naïve"
    assert decode_html(b"ok \xff\xfe!", "utf-8") == "ok \ufffd\ufffd!"
    assert decode_html(b"x", "no-such-charset") == "x"
    assert decode_html(b"x", "rot13") == "x"
    assert decode_html("\ufeffbom".encode(), "windows-1252") == "bom"
    assert decode_html(LATIN1_HTML, "cp1252") == LATIN1_HTML.decode("cp1252")  # as detect_encoding records it


def test_detect_encoding_prefers_header_then_meta() -> None:
    # Python codec names, as browsers read the labels: ISO-8859-1 means windows-1252
    assert detect_encoding("text/html; charset=Windows-1252", b"<meta charset=utf-8>") == "cp1252"
    assert detect_encoding("text/html", b'<head><meta charset="ISO-8859-1">') == "cp1252"
    http_equiv = b'<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
    assert detect_encoding(None, http_equiv) == "utf-8"
    assert detect_encoding("text/html", b"<html>no declaration</html>") is None
    assert detect_encoding("text/html; charset=bogus", b"") is None
    assert detect_encoding("text/html; charset=rot13", b"<meta charset=utf-8>") == "utf-8"  # not a charset


def test_looks_binary() -> None:
    assert looks_binary(PNG)
    assert looks_binary(b"<html>\x00</html>")
    assert looks_binary(bytes(range(1, 32)) * 10)
    assert not looks_binary("<html><body>Grüße\n\tTabs</body></html>".encode())
    assert not looks_binary(b"")


def test_parse_sitemap_urlset_index_and_gzip() -> None:
    urlset = (b'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
              b"<url><loc> http://h/a </loc></url><url><loc>http://h/b</loc></url></urlset>")
    assert parse_sitemap(urlset) == (["http://h/a", "http://h/b"], [])
    assert parse_sitemap(gzip.compress(urlset)) == (["http://h/a", "http://h/b"], [])
    index = b"<sitemapindex><sitemap><loc>http://h/s2.xml</loc></sitemap></sitemapindex>"
    assert parse_sitemap(index) == ([], ["http://h/s2.xml"])
    assert parse_sitemap(b"not xml at all") == ([], [])


def test_extract_links_survives_malformed_base_and_hrefs() -> None:
    page = b'<html><head><base href="http://[bad/"></head><body><a href="/a">a</a>' \
           b'<a href="http://[broken/x">x</a><a href="b">b</a></body></html>'
    # the unusable <base> is ignored (links resolve against the page), the bad href dropped
    assert extract_links(page, None, "http://h/dir/page") == ["http://h/a", "http://h/dir/b"]


# ------------------------------------------------------------------ fixture site


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/html; charset=utf-8"})
    delay_s: float = 0.0
    send_length: bool = True


Route = Callable[["Handler"], Reply]


class Site:
    """A stdlib HTTP server whose pages are Python callables; it logs every request."""

    def __init__(self, routes: dict[str, Route | Reply]) -> None:
        self.routes = routes
        self.log: list[tuple[float, str, dict[str, str]]] = []
        self.counts: dict[str, int] = {}
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (Handler,), {"site": self}))
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def requested(self) -> list[str]:
        return [path for _, path, _ in self.log]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Handler(BaseHTTPRequestHandler):
    site: Site

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        site = self.site
        with site.lock:
            site.log.append((time.monotonic(), self.path, dict(self.headers)))
            site.counts[self.path] = site.counts.get(self.path, 0) + 1
            site.inflight += 1
            site.max_inflight = max(site.max_inflight, site.inflight)
        try:
            route = site.routes.get(self.path, Reply(404, b"<html>not found</html>"))
            reply = route(self) if callable(route) else route
            time.sleep(reply.delay_s)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.send_length:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the crawler hung up (size limit, timeout): expected
        finally:
            with site.lock:
                site.inflight -= 1


def html(*links: str, title: str = "page") -> bytes:
    anchors = "".join(f'<a href="{href}">{href}</a>' for href in links)
    return f"<html><head><title>{title}</title></head><body>{anchors}</body></html>".encode()


def flaky(first_status: int) -> Route:
    """Fails with ``first_status`` on the first request, then serves a page."""

    def route(handler: Handler) -> Reply:
        if handler.site.counts[handler.path] == 1:
            return Reply(first_status, b"try again")
        return Reply(200, html(title="flaky"))

    return route


def cached(etag: str, body: bytes, last_modified: str = "Mon, 01 Jan 2024 00:00:00 GMT") -> Route:
    """A page with validators that answers 304 when the client's validator matches."""

    def route(handler: Handler) -> Reply:
        headers = {"Content-Type": "text/html", "ETag": etag, "Last-Modified": last_modified}
        if handler.headers.get("If-None-Match") == etag:
            return Reply(304, b"", headers)
        return Reply(200, body, headers)

    return route


def redirect(to: str) -> Reply:
    return Reply(302, b"", {"Location": to})


ROBOTS = b"User-agent: *\nDisallow: /private/\n\nUser-agent: otherbot\nDisallow: /\n"
SITEMAP = (b'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
           b"<url><loc>{origin}/from-sitemap</loc></url><url><loc>{origin}/</loc></url></urlset>")
INDEX_LINKS = [
    "/flaky", "/always-500", "/missing", "/loop-a", "/chain/0", "/huge", "/huge-chunked", "/slow",
    "/file.zip", "/image.html", "/latin1", "/cached", "/private/secret", "/redir-private",
    "/same#frag", "./same", "http://offsite.invalid/x", "mailto:a@b.c", "/same?b=2&a=1",
    "/bad-location", "/ftp-location", "/bad-base",
]


def fixture_routes(origin: str) -> dict[str, Route | Reply]:
    routes: dict[str, Route | Reply] = {
        "/robots.txt": Reply(200, ROBOTS, {"Content-Type": "text/plain"}),
        # robots.txt and sitemaps follow redirects; a sitemap index points to a gzipped sitemap
        "/sitemap.xml": Reply(301, b"", {"Location": "/sitemap-index.xml"}),
        "/sitemap-index.xml": Reply(200, f"<sitemapindex><sitemap><loc>{origin}/pages.xml.gz</loc></sitemap>"
                                         "</sitemapindex>".encode(), {"Content-Type": "text/xml"}),
        "/pages.xml.gz": Reply(200, gzip.compress(SITEMAP.replace(b"{origin}", origin.encode())),
                               {"Content-Type": "application/gzip"}),
        "/": Reply(200, html(*INDEX_LINKS, title="home")),
        "/from-sitemap": Reply(200, html("/deeper")),
        "/deeper": Reply(200, html()),
        "/same": Reply(200, html()),
        "/same?a=1&b=2": Reply(200, html()),
        "/flaky": flaky(503),
        "/always-500": Reply(500, b"boom"),
        "/missing": Reply(404, b"gone"),
        "/loop-a": redirect("/loop-b"),
        "/loop-b": redirect("/loop-a"),
        "/huge": Reply(200, b"<html>" + b"x" * 50_000),
        "/huge-chunked": Reply(200, b"<html>" + b"x" * 50_000, send_length=False),
        "/slow": Reply(200, html(), delay_s=1.0),
        "/file.zip": Reply(200, b"PK\x03\x04zip", {"Content-Type": "application/zip"}),
        "/image.html": Reply(200, PNG),
        "/latin1": Reply(200, LATIN1_HTML, {"Content-Type": "text/html; charset=windows-1252"}),
        "/cached": cached('"v1"', html(title="cached")),
        "/private/secret": Reply(200, html()),
        "/redir-private": redirect("/private/secret"),
        "/bad-location": redirect("http://[bad/"),  # urljoin raises ValueError on it
        "/ftp-location": redirect("ftp://127.0.0.1/file"),
        # a malformed <base href> used to raise out of the link extraction and end the crawl
        "/bad-base": Reply(200, b'<html><head><base href="http://[bad/"></head><body>'
                                b'<a href="/after-bad-base">next</a></body></html>'),
        "/after-bad-base": Reply(200, html()),
    }
    for i in range(7):
        routes[f"/chain/{i}"] = redirect(f"/chain/{i + 1}")
    return routes


FAST = dict(timeout_s=0.4, retries=2, backoff_s=0.01, max_bytes=20_000, rate_limit_per_host=500.0)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    server = Site({})
    server.routes.update(fixture_routes(server.url.rstrip("/")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def crawled(site: Site, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, dict]]:
    """One crawl of the fixture site shared by the assertions below (it takes ~1.5 s)."""
    out = tmp_path_factory.mktemp("crawl")
    summary = crawl(site.url, out, ScrapeConfig(**FAST))
    return out, summary, {r.url: r for r in read_index(out)}


def _rec(site: Site, index: dict[str, IndexEntry], path: str) -> IndexEntry:
    return index[site.url.rstrip("/") + path]


@pytest.mark.parametrize(
    ("path", "reason", "attempts"),
    [
        ("/always-500", "http_500", 3),
        ("/missing", "http_404", 1),
        ("/loop-a", "redirect_loop", 2),
        ("/chain/0", "too_many_redirects", 6),
        ("/huge", "too_large", 1),
        ("/huge-chunked", "too_large", 1),
        ("/slow", "timeout", 3),
        ("/file.zip", "content_type", 1),
        ("/image.html", "binary_content", 1),
        ("/private/secret", "robots_disallowed", 0),
        ("/redir-private", "robots_disallowed", 1),
        ("/bad-location", "bad_redirect", 1),  # not a connection_error, and not retried
        ("/ftp-location", "bad_redirect", 1),
    ],
)
def test_failures_are_recorded_with_reason(crawled, site: Site, path: str, reason: str, attempts: int) -> None:
    _, _, index = crawled
    record = _rec(site, index, path)
    assert (record.error, record.ok, record.attempts) == (reason, False, attempts)
    assert record.warc_offset is None and record.sha256 is None


def test_retry_on_503_recovers(crawled, site: Site) -> None:
    record = _rec(site, crawled[2], "/flaky")
    assert record.ok and record.status == 200 and record.attempts == 2 and record.error is None


def test_robots_disallowed_urls_are_never_requested(crawled, site: Site) -> None:
    assert not [p for p in site.requested() if p.startswith("/private/")]
    assert site.counts["/robots.txt"] == 1


def test_discovery_canonicalisation_and_scope(crawled, site: Site) -> None:
    _, summary, index = crawled
    assert _rec(site, index, "/").discovered_via == "seed"
    assert _rec(site, index, "/from-sitemap").discovered_via == "sitemap"
    assert _rec(site, index, "/deeper").depth == 1
    assert _rec(site, index, "/same").discovered_via == "link"
    assert _rec(site, index, "/same?a=1&b=2").ok
    assert site.counts["/same"] == 1  # "/same#frag" and "./same" are the same page
    assert summary.offsite_links == 1
    assert not any("offsite" in url or url.startswith("mailto") for url in index)


def test_malformed_base_href_does_not_stop_the_crawl(crawled, site: Site) -> None:
    index = crawled[2]
    assert _rec(site, index, "/bad-base").ok
    after = _rec(site, index, "/after-bad-base")  # its link resolved against the page itself
    assert after.ok and after.depth == 2


def test_redirect_records_final_url(crawled, site: Site) -> None:
    record = _rec(site, crawled[2], "/loop-a")
    assert record.final_url == site.url + "loop-b"
    assert record.status == 302


def test_encoding_is_recorded_and_payload_round_trips(crawled, site: Site) -> None:
    out, _, index = crawled
    record = _rec(site, index, "/latin1")
    assert record.ok and record.encoding == "cp1252"
    payloads = {r.url: p for r, p in iter_ok_pages(out)}
    assert payloads[record.url] == LATIN1_HTML
    assert "Café crème – 20 €" in decode_html(payloads[record.url], record.encoding)


def test_index_schema_and_summary(crawled) -> None:
    out, summary, index = crawled
    records = read_index(out)
    assert [r.url for r in records] == sorted(index)
    keys = {"url", "status", "content_type", "fetched_at", "etag", "last_modified", "error", "ok",
            "final_url", "discovered_via", "depth", "attempts", "bytes", "sha256", "encoding",
            "not_modified", "warc_offset", "elapsed_ms"}
    lines = (out / "index.jsonl").read_text().splitlines()
    assert all(set(json.loads(line)) == keys for line in lines)  # the README's index keys, no more
    assert lines == [json.dumps(r.model_dump(), sort_keys=True, ensure_ascii=False) for r in records]
    assert all(r.ok == (r.error is None) for r in records)
    ok = [r for r in records if r.ok]
    assert summary.pages_ok == len(ok)
    assert summary.pages_ok + summary.pages_failed == summary.urls_seen == len(records)
    assert summary.failed_by_reason["robots_disallowed"] == 2
    assert summary.bytes_downloaded >= sum(r.bytes for r in ok)
    assert summary.pages_per_s > 0 and summary.skipped_max_pages == 0
    assert (out / "summary.json").exists()
    assert all(r.fetched_at.endswith("Z") for r in records if r.attempts)


def test_warc_has_warcinfo_and_request_response_pairs(crawled) -> None:
    out, summary, _ = crawled
    with open(out / "crawl.warc.gz", "rb") as fh:
        types = [rec.rec_type for rec in ArchiveIterator(fh)]
    assert types[0] == "warcinfo"
    assert types.count("response") == types.count("request") == summary.pages_ok


def test_max_pages_budget(site: Site, tmp_path: Path) -> None:
    summary = crawl(site.url, tmp_path, ScrapeConfig(**FAST, max_pages=3))
    requested = [r for r in read_index(tmp_path) if r.attempts]
    assert len(requested) == 3
    assert summary.skipped_max_pages > 0
    assert summary.urls_seen == len(read_index(tmp_path)) + summary.skipped_max_pages


def test_conditional_recrawl_reuses_unchanged_pages(tmp_path: Path) -> None:
    pages = {"/": html("/a", "/b"), "/a": html(title="a"), "/b": html(title="b")}
    versions = {"/": "1", "/a": "1", "/b": "1"}

    def page(path: str) -> Route:
        def route(handler: Handler) -> Reply:
            return cached(f'"{versions[path]}"', pages[path])(handler)
        return route

    site = Site({path: page(path) for path in pages})
    try:
        first, second = tmp_path / "first", tmp_path / "second"
        first.mkdir(), second.mkdir()
        crawl(site.url, first, ScrapeConfig(**FAST))
        pages["/b"], versions["/b"] = html(title="b, second edition"), "2"
        n_before = len(site.log)
        summary = crawl(site.url, second, ScrapeConfig(**FAST), previous=first)
        sent = {path: h.get("If-None-Match") for _, path, h in site.log[n_before:] if path in pages}
        assert sent == {"/": '"1"', "/a": '"1"', "/b": '"1"'}
    finally:
        site.stop()
    index = {r.url.rsplit("/", 1)[1]: r for r in read_index(second)}
    assert index[""].not_modified and index["a"].not_modified and index[""].ok
    assert index[""].status == 304
    assert not index["b"].not_modified and index["b"].etag == '"2"'
    assert summary.not_modified == 2
    payloads = {r.url.rsplit("/", 1)[1]: p for r, p in iter_ok_pages(second)}
    assert payloads == {"": pages["/"], "a": pages["/a"], "b": html(title="b, second edition")}


def test_politeness_rate_limit_and_concurrency(tmp_path: Path) -> None:
    links = [f"/p{i}" for i in range(8)]
    routes: dict[str, Route | Reply] = {"/": Reply(200, html(*links))}
    routes.update({link: Reply(200, html(), delay_s=0.05) for link in links})
    site = Site(routes)
    try:
        crawl(site.url, tmp_path, ScrapeConfig(**{**FAST, "rate_limit_per_host": 40.0},
                                               concurrency_per_host=2))
    finally:
        site.stop()
    times = [t for t, path, _ in site.log if path.startswith("/p")]
    gaps = [b - a for a, b in pairwise(times)]
    assert min(gaps) >= 0.02  # 40 req/s -> 25 ms apart, minus scheduling jitter
    assert site.max_inflight <= 2


def test_robots_crawl_delay_is_honoured(tmp_path: Path) -> None:
    routes: dict[str, Route | Reply] = {
        "/robots.txt": Reply(200, b"User-agent: *\nCrawl-delay: 0.2\n", {"Content-Type": "text/plain"}),
        "/": Reply(200, html("/a", "/b")), "/a": Reply(200, html()), "/b": Reply(200, html()),
    }
    site = Site(routes)
    try:
        crawl(site.url, tmp_path, ScrapeConfig(**FAST))
    finally:
        site.stop()
    times = [t for t, path, _ in site.log if path != "/robots.txt"]
    assert all(b - a >= 0.18 for a, b in pairwise(times))


def test_robots_for_other_user_agent_blocks_everything(site: Site, tmp_path: Path) -> None:
    before = len(site.log)
    summary = crawl(site.url, tmp_path, ScrapeConfig(**FAST, user_agent="otherbot"))
    assert [p for _, p, _ in site.log[before:]] == ["/robots.txt"]
    assert summary.failed_by_reason == {"robots_disallowed": 1}


def test_crawl_works_inside_a_running_event_loop(site: Site, tmp_path: Path) -> None:
    import asyncio

    async def caller() -> dict:
        return crawl(site.url, tmp_path, ScrapeConfig(**FAST, max_pages=1))

    assert asyncio.run(caller()).pages_ok == 1


# ------------------------------------------------------------ demo site (integration)


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from llmops.config import DemoSiteConfig
    from llmops.demo_site import start_demo_site

    access_log = tmp_path_factory.mktemp("demo-site") / "access.jsonl"
    with start_demo_site(DemoSiteConfig(slow_delay_s=1.5), port=0, access_log=access_log) as server:
        server.access_log_path = access_log
        yield server


def test_demo_site_crawl_and_conditional_recrawl(demo_site, tmp_path: Path) -> None:
    from llmops.config import DemoSiteConfig
    from llmops.demo_site import read_access_log

    huge = DemoSiteConfig().huge_page_bytes
    cfg = ScrapeConfig(timeout_s=0.5, retries=1, backoff_s=0.05, max_bytes=huge // 3)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    summary = crawl(demo_site.url, first, cfg)
    origin = demo_site.url.rstrip("/")
    index = {r.url.removeprefix(origin): r for r in read_index(first)}

    truth = demo_site.ground_truth
    for fault in truth.faults:
        record = index[fault.path]
        expected_error = None if fault.expect == "ok" else fault.expect
        assert (record.error, record.ok) == (expected_error, expected_error is None), fault
    assert index["/faults/latin1.html"].encoding in ("windows-1252", "cp1252", "iso-8859-1", "latin-1")
    for path in truth.disallowed:  # by a prefix, "*" or "$" rule
        assert (index[path].error, index[path].attempts) == ("robots_disallowed", 0)
    logged = [entry.path for entry in read_access_log(demo_site.access_log_path)]
    assert not set(logged) & set(truth.disallowed)  # the site's access log: never requested
    assert all(index[d.path].ok for d in truth.duplicates)  # mirrors: the Allow exception
    assert summary.pages_ok == 104 and summary.failed_by_reason["robots_disallowed"] == 5
    docs = [r for path, r in index.items() if path.startswith("/docs/")]
    assert len(docs) == 79 and all(r.ok for r in docs)
    assert summary.pages_ok == sum(r.ok for r in index.values())

    changed = min(path for path in index if path.startswith("/docs/"))
    new_html = "<html><head><title>Changed</title></head><body><p>A new edition.</p></body></html>"
    demo_site.update_page(changed, new_html)
    summary2 = crawl(demo_site.url, second, cfg, previous=first)
    index2 = {r.url.removeprefix(origin): r for r in read_index(second)}
    assert index2[changed].ok and not index2[changed].not_modified
    assert summary2.not_modified == summary.pages_ok - 1  # all but the changed page
    assert all(index2[p].not_modified for p, r in index.items() if r.ok and p != changed)
    payloads = {r.url.removeprefix(origin): p for r, p in iter_ok_pages(second)}
    assert payloads[changed] == new_html.encode()
    assert summary2.bytes_downloaded < summary.bytes_downloaded / 10


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_host_is_robots_unavailable(tmp_path: Path) -> None:
    # robots.txt cannot be fetched (after the retries): the whole host is off limits
    summary = crawl(f"http://127.0.0.1:{_closed_port()}/", tmp_path, ScrapeConfig(**FAST), progress=True)
    (record,) = read_index(tmp_path)
    assert (record.error, record.attempts) == ("robots_unavailable", 0)
    assert summary.failed_by_reason == {"robots_unavailable": 1}


def test_unreachable_host_is_a_connection_error_without_robots(tmp_path: Path) -> None:
    summary = crawl(f"http://127.0.0.1:{_closed_port()}/", tmp_path,
                    ScrapeConfig(**FAST, respect_robots=False))
    (record,) = read_index(tmp_path)
    assert (record.error, record.attempts) == ("connection_error", 3)
    assert summary.failed_by_reason == {"connection_error": 1}


# ------------------------------------------------------------ review fixes


@pytest.mark.parametrize("seed", ["ftp://127.0.0.1/", "file:///etc/passwd", "127.0.0.1/", "http:///nohost"])
def test_crawl_rejects_seeds_that_are_not_http_urls(seed: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http"):
        crawl(seed, tmp_path, ScrapeConfig(**FAST))
    assert list(tmp_path.iterdir()) == []  # nothing started


def test_unexpected_exception_costs_one_url_not_the_crawl(tmp_path: Path, monkeypatch, caplog) -> None:
    site = Site({"/": Reply(200, html("/boom", "/fine")), "/boom": Reply(200, html("/lost")),
                 "/fine": Reply(200, html())})
    real = scrape.extract_links

    def buggy(payload: bytes, encoding: str | None, base_url: str) -> list[str]:
        if base_url.endswith("/boom"):
            raise RuntimeError("a bug")
        return real(payload, encoding, base_url)

    monkeypatch.setattr(scrape, "extract_links", buggy)
    try:
        summary = crawl(site.url, tmp_path, ScrapeConfig(**FAST))
    finally:
        site.stop()
    index = {r.url.removeprefix(site.url.rstrip("/")): r for r in read_index(tmp_path)}
    assert set(index) == {"/", "/boom", "/fine"}
    boom = index["/boom"]
    assert (boom.error, boom.ok, boom.warc_offset, boom.sha256) == ("internal:RuntimeError", False,
                                                                                None, None)
    assert boom.attempts == 1 and index["/fine"].ok and index["/"].ok
    assert summary.failed_by_reason == {"internal:RuntimeError": 1}
    logged = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert logged and "/boom" in logged[0].getMessage()
    with open(tmp_path / "crawl.warc.gz", "rb") as fh:  # no orphan response for the failed page
        assert [r.rec_type for r in ArchiveIterator(fh)].count("response") == 2


@pytest.fixture
def two_sites() -> Iterator[tuple[Site, Site]]:
    """Two hosts as far as the crawler is concerned: same IP, different ports."""
    home, other = Site({}), Site({})
    yield home, other
    home.stop()
    other.stop()


def test_offsite_redirect_is_not_followed_with_same_host_only(two_sites, tmp_path: Path) -> None:
    home, other = two_sites
    other.routes.update({"/page": Reply(200, html(title="off-site content"))})
    home.routes.update({"/": Reply(200, html("/go")), "/go": redirect(other.url + "page")})
    summary = crawl(home.url, tmp_path, ScrapeConfig(**FAST))
    record = {r.url: r for r in read_index(tmp_path)}[home.url + "go"]
    assert (record.error, record.ok, record.status, record.attempts) == ("offsite_redirect", False,
                                                                                   302, 1)
    assert record.final_url == home.url + "go" and record.warc_offset is None
    assert other.log == []  # not the page, not even its robots.txt
    assert summary.failed_by_reason == {"offsite_redirect": 1}
    assert summary.offsite_links == 1  # the redirect target

    # without same_host_only the redirect is followed
    out = tmp_path / "anywhere"
    out.mkdir()
    crawl(home.url, out, ScrapeConfig(**FAST, same_host_only=False))
    record = {r.url: r for r in read_index(out)}[home.url + "go"]
    assert record.ok and record.final_url == other.url + "page"


def test_page_reached_by_redirect_is_not_fetched_again(tmp_path: Path) -> None:
    # /moved -> /dest at depth 1; /dest links to itself, so without the redirect chain in
    # the seen set it would be admitted at depth 2 and stored a second time
    site = Site({"/": Reply(200, html("/moved")), "/moved": redirect("/dest"),
                 "/dest": Reply(200, html("/dest", "/moved", "/"))})
    try:
        summary = crawl(site.url, tmp_path, ScrapeConfig(**FAST))
    finally:
        site.stop()
    assert site.counts["/dest"] == 1 and site.counts["/moved"] == 1
    records = read_index(tmp_path)
    assert [r.url for r in records] == [site.url, site.url + "moved"]
    assert records[1].ok and records[1].final_url == site.url + "dest"
    assert summary.pages_ok == 2


def test_sitemaps_on_other_hosts_are_skipped_with_same_host_only(two_sites, tmp_path: Path) -> None:
    home, other = two_sites
    h, o = home.url.rstrip("/"), other.url.rstrip("/")

    def urlset(*urls: str) -> Reply:
        locs = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
        return Reply(200, f"<urlset>{locs}</urlset>".encode(), {"Content-Type": "text/xml"})

    robots = f"User-agent: *\nAllow: /\nSitemap: {o}/listed.xml\nSitemap: {h}/index.xml\n".encode()
    home.routes.update({
        "/robots.txt": Reply(200, robots, {"Content-Type": "text/plain"}),
        "/sitemap.xml": redirect(f"{o}/redirected.xml"),
        "/index.xml": Reply(200, f"<sitemapindex><sitemap><loc>{o}/nested.xml</loc></sitemap>"
                                 f"<sitemap><loc>{h}/local.xml</loc></sitemap></sitemapindex>".encode(),
                            {"Content-Type": "text/xml"}),
        "/local.xml": urlset(f"{h}/from-local"),
        "/": Reply(200, html()), "/from-local": Reply(200, html()),
    })
    for name in ("listed", "redirected", "nested"):
        other.routes[f"/{name}.xml"] = urlset(f"{h}/from-{name}")
    summary = crawl(home.url, tmp_path, ScrapeConfig(**FAST))
    assert other.log == []
    assert [r.url for r in read_index(tmp_path)] == [home.url, f"{h}/from-local"]
    assert summary.offsite_links == 3

    out = tmp_path / "anywhere"
    out.mkdir()
    crawl(home.url, out, ScrapeConfig(**FAST, same_host_only=False))
    assert {"/listed.xml", "/redirected.xml", "/nested.xml"} <= set(other.requested())
    assert {f"{h}/from-{n}" for n in ("local", "listed", "redirected", "nested")} <= {
        r.url for r in read_index(out)}


@pytest.mark.parametrize(("robots_status", "expected"), [
    (500, "robots_unavailable"), (503, "robots_unavailable"),
    (404, None), (410, None), (401, "robots_disallowed"),
])
def test_robots_txt_status_decides_the_host(robots_status: int, expected: str | None, tmp_path: Path) -> None:
    site = Site({"/robots.txt": Reply(robots_status, b"nope", {"Content-Type": "text/plain"}),
                 "/": Reply(200, html("/a")), "/a": Reply(200, html())})
    try:
        summary = crawl(site.url, tmp_path, ScrapeConfig(**FAST))
    finally:
        site.stop()
    records = read_index(tmp_path)
    if expected is None:  # 4xx: no robots.txt, everything allowed
        assert [r.ok for r in records] == [True, True]
        return
    assert [(r.url, r.error, r.attempts) for r in records] == [(site.url, expected, 0)]
    assert set(site.requested()) == {"/robots.txt"}  # nothing else, not even the sitemap
    retried = 1 + FAST["retries"] if robots_status >= 500 else 1
    assert site.counts["/robots.txt"] == retried
    assert summary.failed_by_reason == {expected: 1}


def test_robots_txt_that_recovers_on_retry_is_used(tmp_path: Path) -> None:
    def robots(handler: Handler) -> Reply:
        if handler.site.counts["/robots.txt"] == 1:
            return Reply(503, b"busy")
        return Reply(200, b"User-agent: *\nDisallow: /a\n", {"Content-Type": "text/plain"})

    site = Site({"/robots.txt": robots, "/": Reply(200, html("/a")), "/a": Reply(200, html())})
    try:
        crawl(site.url, tmp_path, ScrapeConfig(**FAST))
    finally:
        site.stop()
    assert [(r.ok, r.error) for r in read_index(tmp_path)] == [(True, None), (False, "robots_disallowed")]


# Rules a prefix-only parser (urllib.robotparser) gets wrong: "*" and "$" (it ignores them,
# so it fetches what they forbid) and longest-match precedence (it takes the first rule that
# matches, so the Allow exception written after its Disallow would lose).
RFC9309_ROBOTS = b"""\
User-agent: *
Disallow: /*/comments
Disallow: /*.json$
Disallow: /*sort=
Disallow: /archive/
Allow: /archive/*.html$
"""
# link as written on the page -> (URL as requested and recorded, allowed by the rules above)
RFC9309_LINKS = {
    "/post/1": ("/post/1", True),
    "/post/1/comments": ("/post/1/comments", False),  # "*" spans a path segment
    "/post/%63omments": ("/post/comments", False),  # percent-encoding is normalised first
    "/data.json": ("/data.json", False),  # "$" anchors the end of the URL...
    "/data.json?page=2": ("/data.json?page=2", True),  # ...and the URL includes its query
    "/data.jsonl": ("/data.jsonl", True),
    "/list?sort=new&a=1": ("/list?a=1&sort=new", False),  # rules see the query, as requested (sorted)
    "/list?a=1": ("/list?a=1", True),
    "/archive/2019.txt": ("/archive/2019.txt", False),
    "/archive/2019.html": ("/archive/2019.html", True),  # the longer Allow wins over Disallow: /archive/
    "/archive/x/../../post/2": ("/post/2", True),  # matched after dot segments resolve, as requested
}


def test_robots_wildcards_end_anchors_and_allow_exceptions(tmp_path: Path) -> None:
    routes: dict[str, Route | Reply] = {
        "/robots.txt": Reply(200, RFC9309_ROBOTS, {"Content-Type": "text/plain"}),
        "/": Reply(200, html(*RFC9309_LINKS)),
    }
    routes.update({path: Reply(200, html()) for path, _ in RFC9309_LINKS.values()})
    site = Site(routes)
    try:
        summary = crawl(site.url, tmp_path, ScrapeConfig(**FAST))
    finally:
        site.stop()
    index = {r.url.removeprefix(site.url.rstrip("/")): r for r in read_index(tmp_path)}
    allowed = {path for path, ok in RFC9309_LINKS.values() if ok}
    disallowed = {path for path, ok in RFC9309_LINKS.values() if not ok}
    assert set(index) == {"/"} | allowed | disallowed
    for path in disallowed:
        assert (index[path].error, index[path].attempts) == ("robots_disallowed", 0), path
    assert all(index[path].ok for path in allowed)
    # the site's access log: every allowed URL once, nothing disallowed in any spelling
    assert sorted(site.requested()) == sorted({"/robots.txt", "/sitemap.xml", "/"} | allowed)
    assert summary.failed_by_reason == {"robots_disallowed": len(disallowed)}


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "-1", "soon"])
def test_invalid_crawl_delays_are_ignored(value: str, tmp_path: Path) -> None:
    routes: dict[str, Route | Reply] = {
        "/robots.txt": Reply(200, f"User-agent: *\nCrawl-delay: {value}\n".encode(), {"Content-Type": "text/plain"}),
        "/": Reply(200, html("/a")), "/a": Reply(200, html()),
    }
    site = Site(routes)
    started = time.monotonic()
    try:
        summary = crawl(site.url, tmp_path, ScrapeConfig(**FAST))
    finally:
        site.stop()
    assert summary.pages_ok == 2
    assert time.monotonic() - started < 5  # neither forever nor the 30 s cap


def test_crawl_delay_of_our_own_group_wins_over_the_default(tmp_path: Path) -> None:
    # the group naming our product token applies, not "*" (whose delay would take 20 s)
    robots = b"User-agent: *\nCrawl-delay: 10\n\nUser-agent: llmops-crawler\nCrawl-delay: 0.15\nAllow: /\n"
    routes: dict[str, Route | Reply] = {
        "/robots.txt": Reply(200, robots, {"Content-Type": "text/plain"}),
        "/": Reply(200, html("/a", "/b")), "/a": Reply(200, html()), "/b": Reply(200, html()),
    }
    site = Site(routes)
    try:
        summary = crawl(site.url, tmp_path, ScrapeConfig(**FAST, user_agent="llmops-crawler/0.1 (+https://x.test)"))
    finally:
        site.stop()
    assert summary.pages_ok == 3
    times = [t for t, path, _ in site.log if path != "/robots.txt"]
    assert all(0.13 <= b - a < 5 for a, b in pairwise(times))


def test_huge_crawl_delay_is_capped(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(scrape, "MAX_CRAWL_DELAY_S", 0.15)  # the real cap (30 s) is too slow for a test
    routes: dict[str, Route | Reply] = {
        "/robots.txt": Reply(200, b"User-agent: *\nCrawl-delay: 86400\n", {"Content-Type": "text/plain"}),
        "/": Reply(200, html("/a", "/b")), "/a": Reply(200, html()), "/b": Reply(200, html()),
    }
    site = Site(routes)
    started = time.monotonic()
    try:
        summary = crawl(site.url, tmp_path, ScrapeConfig(**FAST))
    finally:
        site.stop()
    assert summary.pages_ok == 3
    assert time.monotonic() - started < 30  # not 86400 s per page: the cap applied
    times = [t for t, path, _ in site.log if path != "/robots.txt"]
    assert all(b - a >= 0.13 for a, b in pairwise(times))  # the capped delay is still obeyed
    assert any("capped" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_default_crawl_delay_cap_is_documented() -> None:
    assert scrape.MAX_CRAWL_DELAY_S == 30.0
    assert "MAX_CRAWL_DELAY_S" in (scrape.__doc__ or "")


def test_module_docstring_lists_every_reason_code() -> None:
    documented = set(re.findall(r"^    ([a-z_]+(?:<\w+>|:<\w+>)?)\s{2,}", scrape.__doc__ or "", re.MULTILINE))
    assert documented == {
        "robots_disallowed", "robots_unavailable", "http_<status>", "timeout", "connection_error",
        "too_large", "content_type", "binary_content", "redirect_loop", "too_many_redirects",
        "offsite_redirect", "bad_redirect", "internal:<Type>",
    }
