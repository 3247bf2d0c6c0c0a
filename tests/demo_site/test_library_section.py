"""The demo site's ``library`` section: built from docstrings, published on demand, served at once."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from llmops.cli import main
from llmops.config import CleanConfig, DemoSiteConfig, ExtractConfig
from llmops.data.clean import clean_document
from llmops.data.extract import Extracted, extract_page
from llmops.data.qa import make_pairs, questions_for
from llmops.data.store import RedactedDoc
from llmops.demo_site import (
    DemoSiteServer,
    Site,
    build_site,
    publish_section,
    published_sections,
    section_paths,
    start_demo_site,
)
from llmops.demo_site.library import library_modules, library_pages
from llmops.layout import Layout
from llmops.monitoring.traffic import TASKS
from llmops.records.base import RecordError
from llmops.records.crawl import GroundTruth, IndexEntry, PublishedSections

REPO = Path(__file__).resolve().parents[2]
CFG = DemoSiteConfig(slow_delay_s=1.0, huge_page_bytes=10_000)


@pytest.fixture(scope="module")
def base() -> Site:
    return build_site(CFG)


@pytest.fixture(scope="module")
def published() -> Site:
    return build_site(CFG, sections=["library"])


def library_entries(site: Site) -> list:
    return [p for p in site.ground_truth.pages if p.path.startswith("/library/")]


def get(srv: DemoSiteServer, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def sitemap_paths(srv: DemoSiteServer) -> list[str]:
    body = get(srv, "/sitemap.xml")[2].decode()
    return [re.sub(r"^http://[^/]+", "", loc) for loc in re.findall(r"<loc>([^<]+)</loc>", body)]


def index_links(srv: DemoSiteServer) -> set[str]:
    return set(re.findall(r'href="(/[^"#]*)"', get(srv, "/")[2].decode()))


# --------------------------------------------------------------------------- building

def test_the_section_covers_the_modules_the_shifted_traffic_asks_about() -> None:
    assert library_modules() == tuple(module for module, _ in TASKS)
    assert [p.module for p in library_pages()] == list(library_modules())  # every one imports here
    assert section_paths("library") == [f"/library/{m}.html" for m in library_modules()]
    assert "/library/urllib.parse.html" in section_paths("library")


def test_without_sections_the_site_is_the_base_and_publishing_changes_only_the_index(base: Site,
                                                                                     published: Site) -> None:
    assert base.sections == () and published.sections == ("library",)
    assert not [p for p in base.pages if p.startswith("/library/")]
    assert base.ground_truth.sitemap == [p.path for p in base.ground_truth.pages if p.path.startswith("/docs/")]
    assert "/library/" not in base.pages["/"].body.decode()
    # every base page keeps its bytes and headers; only the index gains the section's links
    changed = [p for p, page in base.pages.items() if published.pages[p] != page]
    assert changed == ["/"]
    assert set(published.pages) == set(base.pages) | set(section_paths("library"))
    base_gt, pub_gt = base.ground_truth, published.ground_truth
    assert pub_gt.pages[:len(base_gt.pages)] == base_gt.pages
    assert (pub_gt.pii, pub_gt.duplicates, pub_gt.boilerplate, pub_gt.faults) == (
        base_gt.pii, base_gt.duplicates, base_gt.boilerplate, base_gt.faults)
    assert pub_gt.sitemap == base_gt.sitemap + section_paths("library")
    assert build_site(CFG, ["library"]).pages.keys() == published.pages.keys()
    assert {p: pg.body for p, pg in build_site(CFG, ["library"]).pages.items()} == {
        p: pg.body for p, pg in published.pages.items()}


def test_library_pages_are_articles_titled_by_module_and_newer_than_every_doc(published: Site) -> None:
    entries = library_entries(published)
    assert [e.path for e in entries] == section_paths("library")
    newest_doc = max(pg.last_modified for p, pg in published.pages.items()
                     if p.startswith("/docs/") and pg.last_modified)
    index = published.pages["/"].body.decode()
    for entry in entries:
        module = entry.path.removeprefix("/library/").removesuffix(".html")
        page = published.pages[entry.path]
        body = page.body.decode()
        assert entry.kind == "article" and entry.topic == module and entry.title == f"The {module} module"
        assert f"<h1>The {module} module</h1>" in body and f'<link rel="canonical" href="{entry.path}">' in body
        assert 'class="cookie-banner"' in body and 'class="site-footer"' in body  # the articles' chrome
        assert page.last_modified and page.last_modified > newest_doc
        assert f'href="{entry.path}"' in index
        assert len(entry.article_text.split()) >= 60 and entry.article_sentences
    assert published.pages["/"].last_modified == published.pages[entries[0].path].last_modified
    assert questions_for("The json module") == ["What is the json module?", "Tell me about the json module."]
    assert not [r for r in published.ground_truth.pii if r.page.startswith("/library/")]
    text = "\n".join(e.article_text for e in entries)
    assert not re.search(r"[\w.]+@[\w-]+\.\w+|Copyright|\bby [A-Z]\.", text), "no one's name or address"


def test_library_pages_survive_extract_and_clean_and_give_qa_pairs(published: Site) -> None:
    boilerplate = published.ground_truth.boilerplate
    for entry in library_entries(published):
        record = IndexEntry(url=f"http://127.0.0.1:8765{entry.path}", encoding="utf-8",
                            fetched_at="2026-01-01T00:00:00Z", discovered_via="link", depth=1, ok=True, sha256="x")
        extracted = extract_page(record, published.pages[entry.path].body, ExtractConfig())
        assert isinstance(extracted, Extracted), entry.path
        doc = extracted.record
        assert doc["title"] == entry.title
        text = " ".join(doc["text"].split())
        assert all(" ".join(s.split()) in text for s in entry.article_sentences), entry.path
        assert not [b for b in boilerplate if b in doc["text"]], entry.path
        cleaned = clean_document(doc, CleanConfig())
        assert cleaned.reason is None, (entry.path, cleaned.reason, cleaned.detail)
        redacted: RedactedDoc = {**cleaned.doc, "text_sha256": "", "dup_cluster": "", "dup_count": 1,
                                 "pii_counts": "{}"}
        pairs = make_pairs(redacted)
        assert [p.question for p in pairs] == questions_for(entry.title), entry.path
        assert all(p.answer in entry.article_text for p in pairs)


# --------------------------------------------------------------------------- publishing

def test_publishing_twice_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path))
    path = Layout(tmp_path).demo_site_published
    assert published_sections(path) == ()
    assert main(["demo-site", "publish", "library"]) == 0
    first = capsys.readouterr().out
    assert f"published library: {len(section_paths('library'))} pages" in first
    stored = path.read_bytes()
    assert PublishedSections.read(path).names == ("library",)
    assert main(["demo-site", "publish", "library"]) == 0
    assert "already published" in capsys.readouterr().out
    assert path.read_bytes() == stored
    entry, newly = publish_section(path, "library")
    assert not newly and entry == PublishedSections.read(path).sections[0]


def test_an_unknown_section_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path))
    assert main(["demo-site", "publish", "blog"]) == 1
    assert "unknown demo-site section 'blog': the known sections are library" in capsys.readouterr().err
    assert not Layout(tmp_path).demo_site_published.exists()
    with pytest.raises(ValueError, match="known sections are library"):
        build_site(CFG, ["library", "blog"])
    hand_edited = tmp_path / "published.json"
    hand_edited.write_text(json.dumps({"sections": [{"name": "blog", "published_at": "2026-01-01T00:00:00Z"}]}))
    with pytest.raises(RecordError, match="'library'"):
        start_demo_site(CFG, port=0, published=hand_edited)


def test_publish_help_explains_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo-site", "publish", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 0
    assert "published.json" in out and "library" in out and "twice" in out


# --------------------------------------------------------------------------- serving

def test_a_running_site_serves_a_section_published_after_it_started(tmp_path: Path) -> None:
    state = tmp_path / "demo_site" / "published.json"
    with start_demo_site(CFG, port=0, published=state) as server:
        assert get(server, "/library/json.html")[0] == 404
        assert len(sitemap_paths(server)) == 79
        server.update_page("/docs/assert.html", "<html><body><p>Edited by hand.</p></body></html>")

        publish_section(state, "library")
        status, headers, body = get(server, "/library/json.html")
        assert status == 200 and b"<h1>The json module</h1>" in body and headers["Last-Modified"].endswith("GMT")
        assert set(section_paths("library")) <= index_links(server)
        assert sitemap_paths(server)[79:] == section_paths("library")
        assert server.ground_truth.sitemap[79:] == section_paths("library")
        assert get(server, "/docs/assert.html")[2] == b"<html><body><p>Edited by hand.</p></body></html>"

        state.unlink()  # no file: nothing published
        assert get(server, "/library/json.html")[0] == 404
        assert not set(section_paths("library")) & index_links(server)


def test_a_restarted_site_serves_the_same_pages(tmp_path: Path) -> None:
    state = tmp_path / "published.json"
    publish_section(state, "library")
    bodies = []
    for _ in range(2):
        with start_demo_site(CFG, port=0, published=state) as server:
            assert server.site.sections == ("library",)
            bodies.append({path: get(server, path)[2] for path in ["/", *section_paths("library")]})
            bodies[-1]["sitemap"] = "\n".join(sitemap_paths(server)).encode()  # its URLs name the port
    assert bodies[0] == bodies[1]
    assert all(b"<h1>The " in body for path, body in bodies[0].items() if path.startswith("/library/"))


def test_demo_site_serve_follows_the_homes_published_state_and_rewrites_the_ground_truth(tmp_path: Path) -> None:
    """The command the embedded stack runs: no --published, so the home's file is followed."""
    gt = tmp_path / "gt.json"
    env = {"LLMOPS_HOME": str(tmp_path), "PATH": "/usr/bin", "LLMOPS_DEMO_SITE__HUGE_PAGE_BYTES": "10000"}
    proc = subprocess.Popen([sys.executable, "-m", "llmops.cli", "demo-site", "serve", "--port", "0",
                             "--ground-truth", str(gt)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group()  # type: ignore[union-attr]
        assert not [p for p in GroundTruth.read(gt).sitemap if p.startswith("/library/")]

        publish_section(Layout(tmp_path).demo_site_published, "library")
        assert urllib.request.urlopen(url + "library/json.html", timeout=5).status == 200
        deadline = time.monotonic() + 5
        while GroundTruth.read(gt).sitemap[79:] != section_paths("library") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert GroundTruth.read(gt).sitemap[79:] == section_paths("library")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
