"""Serving the demo site: robots.txt, the sitemap, conditional requests and the fault pages.

A stdlib ``ThreadingHTTPServer`` on a background thread, so tests and the demo start it in
process; ``llmops demo-site serve`` runs :func:`serve_forever`. Only ``robots.txt`` and
``sitemap.xml`` are made per request (their URLs are absolute, built from the ``Host``
header); every other answer is a page :func:`llmops.demo_site.build.build_site` made.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from llmops.config import DemoSiteConfig
from llmops.demo_site.build import ROBOTS_RULES, Page, Site, build_site, esc, modified_at, write_ground_truth
from llmops.records.crawl import ACCESS_LOG_ENTRY, AccessLogEntry, read_lines

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
    """A running demo site. Use as a context manager or call ``stop()``."""

    def __init__(self, cfg: DemoSiteConfig, site: Site, port: int,
                 access_log: Path | None = None) -> None:
        self.cfg = cfg
        self.site = site
        self.ground_truth = site.ground_truth
        self._pages = dict(site.pages)
        self._lock = threading.Lock()
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
    def requested_paths(self) -> list[str]:
        with self._lock:
            return list(self._requested)

    def update_page(self, path: str, html: str) -> None:  # shadows the module; API name
        """Replace a page's HTML; ETag changes with the body, Last-Modified moves a day on."""
        with self._lock:
            old = self._pages.get(path)
            base = old.last_modified if old and old.last_modified else modified_at(dt.date(2025, 1, 1))
            self._pages[path] = Page(html.encode(), last_modified=base + dt.timedelta(days=1))

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


def start_demo_site(cfg: DemoSiteConfig, port: int | None = None,
                    access_log: Path | None = None) -> DemoSiteServer:
    """Build the site and serve it from a background thread (port 0 picks a free one)."""
    return DemoSiteServer(cfg, build_site(cfg), cfg.port if port is None else port, access_log)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve_forever(cfg: DemoSiteConfig, port: int | None = None, access_log: Path | None = None,
                  ground_truth_out: Path | None = None) -> None:
    """Blocking entry point for ``llmops demo-site serve``; Ctrl-C (or SIGTERM, as sent
    by process managers) stops cleanly."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    server = start_demo_site(cfg, port=port, access_log=access_log)
    if ground_truth_out:
        write_ground_truth(server.site, Path(ground_truth_out))
    print(f"demo site serving at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        while server._thread.is_alive():
            server._thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
