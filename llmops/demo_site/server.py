"""Serving the demo site: robots.txt, the sitemap, conditional requests and the fault pages.

A stdlib ``ThreadingHTTPServer`` on a background thread, so tests and the demo start it in
process; ``llmops demo-site serve`` runs :func:`serve_forever`. Only ``robots.txt`` and
``sitemap.xml`` are made per request (their URLs are absolute, built from the ``Host``
header); every other answer is a page :func:`llmops.demo_site.build.build_site` made.

Sections are published while the site runs: ``llmops demo-site publish`` records them in
``published.json`` (:func:`publish_section`), and a server given that file
(``published=``) notices the change on its next request, by one ``stat``, and rebuilds
(:meth:`DemoSiteServer.refresh`). A restarted server starts from the same file.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from llmops.config import DemoSiteConfig
from llmops.demo_site.build import (
    ROBOTS_RULES,
    Page,
    Site,
    build_site,
    esc,
    known_sections,
    modified_at,
    write_ground_truth,
)
from llmops.records.base import RecordError
from llmops.records.crawl import (
    ACCESS_LOG_ENTRY,
    AccessLogEntry,
    PublishedSection,
    PublishedSections,
    read_lines,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- dynamic resources

def http_date(when: dt.datetime) -> str:
    return email.utils.format_datetime(when.astimezone(dt.UTC), usegmt=True)


def robots_txt(origin: str) -> bytes:
    rules = "\n".join(ROBOTS_RULES)
    return f"# robots.txt\n{rules}\n\nSitemap: {origin}/sitemap.xml\n".encode()


def sitemap_xml(origin: str, site: Site, pages: dict[str, Page]) -> bytes:
    urls = []
    for path in site.ground_truth.sitemap:
        page = pages.get(path)
        lastmod = page.last_modified.date().isoformat() if page and page.last_modified else ""
        urls.append(f"  <url><loc>{esc(origin + path)}</loc><lastmod>{lastmod}</lastmod></url>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
            + "\n".join(urls) + "\n</urlset>\n").encode()


def not_modified(page: Page, headers: Any) -> bool:
    """RFC 9110 precedence: If-None-Match, when present, decides alone."""
    inm = headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or page.etag in tags
    ims = headers.get("If-Modified-Since")
    if ims and page.last_modified:
        try:
            since = email.utils.parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        return page.last_modified.replace(microsecond=0) <= since
    return False


# --------------------------------------------------------------------------- published sections

#: What :func:`_stamp` says of ``published.json``: inode, mtime and size (a publish replaces
#: the file, so the inode alone changes even within one mtime tick), or None when absent.
Stamp = tuple[int, int, int] | None
_NEVER_READ: Stamp = (-1, -1, -1)


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def published_sections(path: Path) -> tuple[str, ...]:
    """The sections ``published.json`` at ``path`` lists (in :data:`~llmops.demo_site.build.SECTIONS`
    order, as ``Site.sections`` holds them); none without a file."""
    if not Path(path).exists():
        return ()
    return known_sections(PublishedSections.read(path).names)


def publish_section(path: Path, section: str, now: dt.datetime | None = None) -> tuple[PublishedSection, bool]:
    """Add ``section`` to ``published.json`` at ``path`` (parents created): its entry, and
    whether this call published it (False: it already was, and the file is left alone)."""
    path = Path(path)
    known_sections([section])  # the error lists the known sections
    state = PublishedSections.read(path) if path.exists() else PublishedSections()
    for entry in state.sections:
        if entry.name == section:
            return entry, False
    entry = PublishedSection.model_validate({"name": section, "published_at": now or dt.datetime.now(dt.UTC)})
    path.parent.mkdir(parents=True, exist_ok=True)
    PublishedSections(sections=[*state.sections, entry]).write(path)
    return entry, True


# --------------------------------------------------------------------------- the server

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "DemoSite/1.0"
    server: _HTTPServer

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self.server.demo._handle(self, head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self.server.demo._handle(self, head=True)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence stderr; the optional JSON access log is the record."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    demo: DemoSiteServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (timeouts on the slow page) are expected, not errors."""


class DemoSiteServer:
    """A running demo site. Use as a context manager or call ``stop()``.

    With ``published`` (a ``published.json`` path, which need not exist yet) it serves the
    sections that file lists, following it while it runs (:meth:`refresh`).
    """

    def __init__(self, cfg: DemoSiteConfig, site: Site, port: int,
                 access_log: Path | None = None, published: Path | None = None) -> None:
        self.cfg = cfg
        self.site = site
        self.ground_truth = site.ground_truth
        self._pages = dict(site.pages)
        self._lock = threading.Lock()
        self._edited: set[str] = set()  # paths update_page changed: a rebuild keeps them
        self._published = Path(published) if published else None
        self._published_stamp = _NEVER_READ
        self._rebuild_lock = threading.Lock()  # one rebuild at a time; requests wait for it
        self.refresh()
        self._requested: list[str] = []
        self._hits: dict[str, int] = {}
        self._stopping = threading.Event()
        self._access_log = Path(access_log) if access_log else None
        self._httpd = _HTTPServer((cfg.host, port), _Handler)
        self._httpd.demo = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://{cfg.host}:{self.port}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"demo-site-{self.port}", daemon=True)
        self._thread.start()

    # --- public API
    def refresh(self) -> bool:
        """Serve the sections ``published.json`` lists, if the file changed since the last look
        (one ``stat`` when it did not); returns whether the pages were rebuilt.

        A rebuild replaces every page with the new build's, except those :meth:`update_page`
        edited, which keep their edit while the server runs, and drops the pages of a section
        no longer published (they answer 404 like any missing page). A file that does not
        validate is logged and ignored: the site goes on serving what it served.
        """
        if self._published is None:
            return False
        stamp = _stamp(self._published)
        if stamp == self._published_stamp:
            return False
        with self._rebuild_lock:
            if stamp == self._published_stamp:  # another request's refresh got here first
                return False
            self._published_stamp = stamp  # taken before reading: a later write is seen next time
            try:
                sections = published_sections(self._published)
            except (RecordError, ValueError) as exc:
                log.warning("demo site: ignoring %s (%s); still serving sections %s", self._published, exc,
                            list(self.site.sections))
                return False
            if sections == self.site.sections:
                return False
            site = build_site(self.cfg, sections)
            with self._lock:
                for path in self._pages.keys() - site.pages.keys() - self._edited:
                    del self._pages[path]
                self._pages.update({path: page for path, page in site.pages.items() if path not in self._edited})
                self.site, self.ground_truth = site, site.ground_truth
            return True

    def requested_paths(self) -> list[str]:
        with self._lock:
            return list(self._requested)

    def update_page(self, path: str, html: str) -> None:  # shadows the module; API name
        """Replace a page's HTML; ETag changes with the body, Last-Modified moves a day on."""
        with self._lock:
            old = self._pages.get(path)
            base = old.last_modified if old and old.last_modified else modified_at(dt.date(2025, 1, 1))
            self._pages[path] = Page(html.encode(), last_modified=base + dt.timedelta(days=1))
            self._edited.add(path)

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> DemoSiteServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- request handling
    def _handle(self, req: _Handler, head: bool) -> None:
        with self._lock:
            self._requested.append(req.path)
        self.refresh()
        path = unquote(urlsplit(req.path).path) or "/"
        try:
            self._respond(req, path, head)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            req.close_connection = True

    def _respond(self, req: _Handler, path: str, head: bool) -> int:
        origin = "http://" + (req.headers.get("Host") or f"{self.cfg.host}:{self.port}")
        if path == "/robots.txt":
            return self._send(req, 200, robots_txt(origin), "text/plain; charset=utf-8", {}, head)
        if path == "/sitemap.xml":
            with self._lock:
                pages = dict(self._pages)
            return self._send(req, 200, sitemap_xml(origin, self.site, pages),
                              "application/xml; charset=utf-8", {}, head)
        with self._lock:
            page = self._pages.get(path)
            hits = self._hits[path] = self._hits.get(path, 0) + 1
        if page is None:
            page = self._pages["/faults/missing.html"]
        if page.delay_s:
            self._stopping.wait(page.delay_s)
        if hits <= page.fail_first:
            body = b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>\n"
            return self._send(req, 503, body, "text/html; charset=utf-8", {}, head)
        headers = dict(page.headers)
        if page.cacheable and page.last_modified is not None:  # the second test only narrows the type
            headers["ETag"] = page.etag
            headers["Last-Modified"] = http_date(page.last_modified)
            if not_modified(page, req.headers):
                return self._send(req, 304, None, None, headers, head)
        return self._send(req, page.status, page.body, page.content_type, headers, head)

    def _send(self, req: _Handler, status: int, body: bytes | None, ctype: str | None,
              headers: dict[str, str], head: bool) -> int:
        """Write one response. A 304 carries no body and, per RFC 9110, no Content-Length.
        The access log is written first, so it is complete once the client has its answer."""
        self._log(req.path, req.command, status)
        req.send_response(status)
        if ctype:
            req.send_header("Content-Type", ctype)
        if body is not None:
            req.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            req.send_header(name, value)
        req.end_headers()
        if body and not head:
            req.wfile.write(body)
        return status

    def _log(self, path: str, method: str, status: int) -> None:
        if not self._access_log:
            return
        line = json.dumps(AccessLogEntry(path=path, method=method, status=status, ts=time.time()).model_dump())
        with self._lock, open(self._access_log, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def read_access_log(path: Path) -> list[AccessLogEntry]:
    """The requests a demo site logged to ``path`` (``access_log``), in the order answered."""
    return read_lines(path, ACCESS_LOG_ENTRY)


def start_demo_site(cfg: DemoSiteConfig, port: int | None = None, access_log: Path | None = None,
                    published: Path | None = None) -> DemoSiteServer:
    """Build the site and serve it from a background thread (port 0 picks a free one); with
    ``published``, the sections that file lists, following it (:meth:`DemoSiteServer.refresh`).
    A ``published.json`` that does not validate is an error here, before anything is served."""
    site = build_site(cfg, published_sections(published) if published else ())
    return DemoSiteServer(cfg, site, cfg.port if port is None else port, access_log, published)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve_forever(cfg: DemoSiteConfig, port: int | None = None, access_log: Path | None = None,
                  ground_truth_out: Path | None = None, published: Path | None = None) -> None:
    """Blocking entry point for ``llmops demo-site serve``; Ctrl-C (or SIGTERM, as sent
    by process managers) stops cleanly.

    With ``published`` the site follows that ``published.json``; the ground truth at
    ``ground_truth_out`` is written at start and again within half a second of a change
    to the published sections, whether or not a request came in meanwhile."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    server = start_demo_site(cfg, port=port, access_log=access_log, published=published)
    written = server.site
    if ground_truth_out:
        write_ground_truth(written, Path(ground_truth_out))
    print(f"demo site serving at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        while server._thread.is_alive():
            server.refresh()
            if ground_truth_out and (site := server.site) is not written:
                write_ground_truth(site, Path(ground_truth_out))
                written = site
            server._thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
