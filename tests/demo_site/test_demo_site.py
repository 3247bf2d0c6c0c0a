"""The demo site: determinism, planted ground truth, HTTP behaviour and extractability."""

from __future__ import annotations

import http.client
import io
import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trafilatura
from protego import Protego

from llmops.config import DedupConfig, DemoSiteConfig
from llmops.data.dedup import jaccard
from llmops.demo_site import (
    PII_TYPES,
    DemoSiteServer,
    Site,
    build_site,
    read_access_log,
    start_demo_site,
    write_ground_truth,
)
from llmops.demo_site.server import robots_txt
from llmops.records.crawl import GroundTruth

REPO = Path(__file__).resolve().parents[2]
SMALL_HUGE = 250_000  # keeps the test server light; the size is still checked exactly


@pytest.fixture(scope="module")
def site() -> Site:
    return build_site(DemoSiteConfig())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    log = tmp_path_factory.mktemp("demo") / "access.jsonl"
    cfg = DemoSiteConfig(slow_delay_s=1.0, huge_page_bytes=SMALL_HUGE)
    with start_demo_site(cfg, port=0, access_log=log) as srv:
        srv.access_log_path = log  # type: ignore[attr-defined]
        yield srv


def pages_of(site: Site, kind: str) -> list[dict[str, Any]]:
    return [p for p in site.ground_truth.pages if p.kind == kind]


def article_element(body: bytes) -> bytes:
    match = re.search(rb"<article>.*</article>", body, re.S)
    assert match, "page has no <article>"
    return match.group()


def get(srv: DemoSiteServer, path: str, headers: dict[str, str] | None = None,
        method: str = "GET", timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    """One request without following redirects or raising on 4xx/5xx."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def norm(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- build

def test_same_seed_same_site_and_other_seed_differs(site: Site) -> None:
    again = build_site(DemoSiteConfig())
    assert again.ground_truth == site.ground_truth
    assert {p: pg.body for p, pg in again.pages.items()} == {p: pg.body for p, pg in site.pages.items()}
    other = build_site(DemoSiteConfig(seed=7))
    assert other.ground_truth.pii != site.ground_truth.pii


def test_one_article_per_topic_with_metadata(site: Site) -> None:
    articles = pages_of(site, "article")
    assert len(articles) == 79
    for entry in articles:
        body = site.pages[entry.path].body.decode()
        assert f'<link rel="canonical" href="{entry.path}">' in body
        assert f'<meta property="article:published_time" content="{entry.date_published}">' in body
        assert re.search(r'<meta name="author" content="[^"]+">', body)
        assert f"By {entry.author} · {entry.date_published}" in entry.article_text
        assert "Contact the maintainer" in entry.article_text
        assert entry.article_sentences
        assert all(s in entry.article_text for s in entry.article_sentences)


def test_every_pii_type_in_bodies_and_comments(site: Site) -> None:
    pii = site.ground_truth.pii
    for where in ("body", "comment"):
        assert {r.type for r in pii if r.where == where} == set(PII_TYPES), where
    for r in pii:  # every recorded value is really on its page, in the right region
        body = site.pages[r.page].body.decode()
        html_value = r.value.replace("&", "&amp;").replace('"', "&quot;").replace("'", "&#x27;")
        region = body.split('<section class="comments"')
        target = region[0] if r.where == "body" else region[1]
        assert html_value in target, r


def test_phone_numbers_use_the_controlled_us_formats(site: Site) -> None:
    pattern = re.compile(r"^(\(\d{3}\) \d{3}-\d{4}|\d{3}-\d{3}-\d{4}|\d{3}\.\d{3}\.\d{4}"
                         r"|\+1 \d{3} \d{3} \d{4}|\+1-\d{3}-\d{3}-\d{4})$")
    phones = [r.value for r in site.ground_truth.pii if r.type == "PHONE_NUMBER"]
    assert phones and all(pattern.match(p) for p in phones)


def test_boilerplate_is_distinctive(site: Site) -> None:
    snippets = site.ground_truth.boilerplate
    corpus = "\n".join(p.article_text for p in site.ground_truth.pages)
    assert len(snippets) > 50
    assert not [s for s in snippets if s in corpus]
    index = site.pages["/"].body.decode()
    assert "Accept all" in index and "cookie policy" in index


def test_mirrors_are_exact_and_prints_near(site: Site) -> None:
    dups = site.ground_truth.duplicates
    kinds = Counter(d.kind for d in dups)
    assert kinds["exact"] >= 10 and kinds["near"] >= 8
    texts = {p.path: p.article_text for p in site.ground_truth.pages}
    for d in dups:
        dup, orig = site.pages[d.path].body, site.pages[d.original].body
        assert d.path.encode() in orig, "originals link their duplicates"
        if d.kind == "exact":
            assert article_element(dup) == article_element(orig)
            assert dup != orig and b'rel="canonical"' not in dup
            assert texts[d.path] == texts[d.original]
        else:
            assert f'<link rel="canonical" href="{d.original}">'.encode() in dup
            assert texts[d.path] != texts[d.original]
            # near by the dedup stage's own measure, at its shingle size
            assert jaccard(texts[d.path], texts[d.original], DedupConfig().shingle_words) > 0.8
    slugs = {d.original for d in dups}
    assert len(slugs) == len(dups), "each original has at most one duplicate"
    dup_pii = {r.page for r in site.ground_truth.pii}
    assert {d.path for d in dups} <= dup_pii


def test_index_links_articles_faults_and_private(site: Site) -> None:
    index = site.pages["/"].body.decode()
    links = set(re.findall(r'href="([^"#]+)"', index))
    gt = site.ground_truth
    assert {p.path for p in pages_of(site, "article")} <= links
    assert {f.path for f in gt.faults} <= links
    assert set(gt.disallowed) <= links


def test_ground_truth_disallowed_is_what_robots_txt_disallows(site: Site) -> None:
    robots = Protego.parse(robots_txt("http://127.0.0.1:8765").decode())
    blocked = {path for path in site.pages if not robots.can_fetch(path, "llmops-crawler/0.1")}
    assert blocked == set(site.ground_truth.disallowed)
    # each kind of rule is exercised: a prefix, "*", "$", and an Allow exception (the mirrors)
    assert {"/private/drafts.html", "/feeds/comments", "/feeds/articles.json", "/mirror/status.html"} <= blocked
    mirrors = {d.path for d in site.ground_truth.duplicates if d.path.startswith("/mirror/")}
    assert mirrors and not mirrors & blocked


def test_internal_links_resolve(site: Site) -> None:
    """No accidental dead links: a crawl should only meet the planted faults."""
    dead = set()
    for page in site.pages.values():
        if not page.content_type.startswith("text/html") or page.status != 200:
            continue
        for href in re.findall(rb'href="(/[^"]*)"', page.body):
            path = href.decode().split("#")[0].split("?")[0]
            if path not in site.pages:
                dead.add(path)
    assert dead == set()


def test_write_ground_truth_roundtrip(site: Site, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "gt.json"
    write_ground_truth(site, out)
    assert GroundTruth.read(out) == site.ground_truth
    stored = json.loads(out.read_text(encoding="utf-8"))
    assert set(stored) == {"schema_version", "seed", "brand", "pages", "duplicates", "pii", "boilerplate", "faults",
                           "disallowed", "robots_disallow_prefixes", "robots_rules", "sitemap"}
    assert set(stored["pages"][0]) == {"path", "kind", "topic", "title", "author", "date_published",
                                       "article_text", "article_sentences"}  # nulls kept
    assert "·" in out.read_text(encoding="utf-8")  # UTF-8, not escaped


# --------------------------------------------------------------------------- extraction

def test_trafilatura_keeps_article_and_drops_boilerplate(site: Site) -> None:
    gt = site.ground_truth
    sample = pages_of(site, "article")[::6] + pages_of(site, "mirror")[:2] + pages_of(site, "print")[:2]
    kept = total = pii_kept = pii_total = 0
    for entry in sample:
        html = site.pages[entry.path].body.decode()
        out = norm(trafilatura.extract(html, include_comments=False, include_tables=True) or "")
        total += len(entry.article_sentences)
        kept += sum(norm(s) in out for s in entry.article_sentences)
        mine = [r for r in gt.pii if r.page == entry.path]
        body_values = {r.value for r in mine if r.where == "body"}
        pii_total += len(body_values)
        pii_kept += sum(v in out for v in body_values)
        assert not [b for b in gt.boilerplate if b in out], entry.path
        comment_only = {r.value for r in mine if r.where == "comment"} - body_values
        assert not [v for v in comment_only if v in out], entry.path
    assert kept / total >= 0.95
    assert pii_kept / pii_total >= 0.95


# --------------------------------------------------------------------------- server

def test_robots_and_sitemap(server: DemoSiteServer) -> None:
    status, headers, body = get(server, "/robots.txt")
    assert status == 200 and headers["Content-Length"] == str(len(body))
    text = body.decode()
    assert "User-agent: *" in text and "Disallow: /private/" in text
    assert "Disallow: /*.json$" in text and "Allow: /mirror/docs/*.html$" in text
    assert f"Sitemap: {server.url}sitemap.xml" in text
    status, _, body = get(server, "/sitemap.xml")
    locs = re.findall(r"<loc>([^<]+)</loc>", body.decode())
    assert status == 200 and len(locs) == 79
    assert all(loc.startswith(server.url + "docs/") for loc in locs)
    assert len(re.findall(r"<lastmod>\d{4}-\d\d-\d\d</lastmod>", body.decode())) == 79


def test_conditional_requests_and_update_page(server: DemoSiteServer) -> None:
    path = "/docs/assert.html"
    status, headers, body = get(server, path)
    assert status == 200 and int(headers["Content-Length"]) == len(body)
    etag, modified = headers["ETag"], headers["Last-Modified"]
    assert etag.startswith('"') and modified.endswith("GMT")
    status, _, body = get(server, path, {"If-None-Match": etag})
    assert status == 304 and body == b""
    status, _, body = get(server, path, {"If-Modified-Since": modified})
    assert status == 304 and body == b""
    assert get(server, path, {"If-None-Match": '"stale"'})[0] == 200

    server.update_page(path, "<html><body><p>Rewritten.</p></body></html>")
    status, headers, body = get(server, path, {"If-None-Match": etag})
    assert status == 200 and body.endswith(b"</html>") and headers["ETag"] != etag
    assert get(server, path, {"If-Modified-Since": modified})[0] == 200


def test_head_has_length_but_no_body(server: DemoSiteServer) -> None:
    status, headers, body = get(server, "/docs/with.html", method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) > 1000 and body == b""


def test_fault_pages(server: DemoSiteServer) -> None:
    expected = {f.path: f.expect for f in server.ground_truth.faults}
    assert expected == {
        "/faults/missing.html": "http_404", "/faults/error.html": "http_500",
        "/faults/flaky.html": "ok", "/faults/slow.html": "timeout",
        "/faults/loop-a.html": "redirect_loop", "/faults/binary.html": "binary_content",
        "/faults/latin1.html": "ok", "/faults/huge.html": "too_large",
        "/faults/download.zip": "content_type",
    }
    assert get(server, "/faults/missing.html")[0] == 404
    assert get(server, "/no/such/page.html")[0] == 404
    assert [get(server, "/faults/error.html")[0] for _ in range(2)] == [500, 500]
    assert [get(server, "/faults/flaky.html")[0] for _ in range(3)] == [503, 200, 200]

    status, headers, _ = get(server, "/faults/loop-a.html")
    assert status == 302 and headers["Location"] == "/faults/loop-b.html"
    status, headers, _ = get(server, "/faults/loop-b.html")
    assert status == 302 and headers["Location"] == "/faults/loop-a.html"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + "faults/loop-a.html", timeout=2)
    assert err.value.code == 302

    status, headers, body = get(server, "/faults/binary.html")
    assert status == 200 and headers["Content-Type"] == "text/html"
    assert body.startswith(b"\x89PNG\r\n\x1a\n")

    status, headers, body = get(server, "/faults/latin1.html")
    assert headers["Content-Type"] == "text/html; charset=windows-1252"
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    text = body.decode("cp1252")
    assert all(ch in text for ch in "éü“”€")

    status, headers, body = get(server, "/faults/huge.html")
    assert status == 200 and int(headers["Content-Length"]) == len(body) == SMALL_HUGE
    assert body.rstrip().endswith(b"</html>")

    status, headers, body = get(server, "/faults/download.zip")
    assert headers["Content-Type"] == "application/zip"
    assert zipfile.ZipFile(io.BytesIO(body)).namelist()


def test_slow_page_times_out(server: DemoSiteServer) -> None:
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        urllib.request.urlopen(server.url + "faults/slow.html", timeout=0.3).read()


def test_requested_paths_and_access_log(server: DemoSiteServer) -> None:
    get(server, "/docs/if.html?utm_source=test")
    get(server, "/docs/if.html", method="HEAD")
    paths = server.requested_paths()
    assert paths[-2:] == ["/docs/if.html?utm_source=test", "/docs/if.html"]
    log_path: Path = server.access_log_path  # type: ignore[attr-defined]
    log = read_access_log(log_path)
    assert ("/docs/if.html", "HEAD", 200) in [(r.path, r.method, r.status) for r in log]
    assert all(isinstance(json.loads(line)["ts"], float) for line in log_path.read_text().splitlines())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_forever_stops_cleanly_on_signal(tmp_path: Path, sig: int) -> None:
    gt = tmp_path / "gt.json"
    code = ("from pathlib import Path; from llmops.config import DemoSiteConfig; "
            "from llmops.demo_site import serve_forever; "
            "serve_forever(DemoSiteConfig(huge_page_bytes=1000), port=0, "
            f"ground_truth_out=Path({str(gt)!r}))")
    # A shell that runs pytest in the background ignores SIGINT, and children inherit that;
    # restore the default so the child's Python installs its KeyboardInterrupt handler.
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group()  # type: ignore[union-attr]
        assert urllib.request.urlopen(url, timeout=2).status == 200
        assert GroundTruth.read(gt).seed == 1234
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
