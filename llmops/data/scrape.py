"""``llmops scrape``: a polite asynchronous HTTP crawler that writes a WARC plus an index.

Output of one crawl (``out_dir``, filled in place; the caller renames it into place):

    crawl.warc.gz   warcinfo + one response and one request record per kept page
    index.jsonl     one record per URL (ok or not, with a reason code), sorted by url
    summary.json    counts, bytes, throughput (also returned by :func:`crawl`)

Politeness comes first. robots.txt is fetched before any page of a host and obeyed as
RFC 9309 says, parsed by protego (Scrapy's parser): ``*`` and ``$`` in patterns, the
longest matching rule wins and ``Allow`` wins a tie, matched against the URL's path and
query exactly as the crawler will request it (its canonical form, see
:func:`canonicalize_url`). Disallowed URLs are recorded but never requested. What a
parser cannot decide is decided here: a robots.txt that cannot be read because of a 5xx
answer or an unreachable host (after retries) puts the whole host off limits
(RFC 9309 section 2.3.1.4); 401/403 are read as "everything disallowed" (stricter than
the RFC, which allows all: a site that refuses us its rules would refuse the pages
too); any other 4xx means no rules; robots.txt redirects are followed to any host, up to
``max_redirects`` hops. Each host gets a bounded number of simultaneous connections and a
minimum interval between requests (robots.txt ``Crawl-delay``, fractional seconds
allowed, wins when it is slower, up to :data:`MAX_CRAWL_DELAY_S`), and only 5xx
answers, timeouts and connection errors are retried, with exponential backoff. With
``same_host_only`` nothing on another host is requested: not links, not redirect
targets, not sitemaps.

Reason codes (``error`` of a failed index record, ``failed_by_reason`` in the summary):

    robots_disallowed   robots.txt disallows the URL (or a redirect target); never requested
    robots_unavailable  the host's robots.txt answered 5xx, timed out or could not be
                        connected to (after retries): every URL of the host, never requested
    http_<status>       a 4xx/5xx answer (5xx after retries), a 3xx without ``Location``,
                        or a 304 that was not asked for (``http_304``)
    timeout             no complete answer within ``timeout_s`` (after retries)
    connection_error    connection refused/reset, DNS failure, a URL the HTTP client
                        rejects... (after retries)
    too_large           body over ``max_bytes`` (Content-Length or bytes received)
    content_type        media type not in ``allowed_content_types``
    binary_content      a body labelled as text that is really binary
    redirect_loop       a redirect chain came back to a URL it had already visited
    too_many_redirects  more than ``max_redirects`` hops
    offsite_redirect    with ``same_host_only``, a redirect to another host (not followed;
                        the target counts in ``offsite_links``)
    bad_redirect        a ``Location`` that is malformed or not http(s) (not retried)
    internal:<Type>     a bug: an unexpected exception of that type while handling the
                        URL, logged with its traceback; the rest of the crawl goes on

The crawl proceeds breadth first, one depth level at a time, and every level is
sorted before the ``max_pages`` budget is handed out. That costs a little
parallelism at level boundaries but makes the set of requested URLs independent
of network timing: the same site gives the same index.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import gzip
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp
import w3lib.url
from protego import Protego
from w3lib.encoding import (
    html_body_declared_encoding,
    html_to_unicode,
    http_content_type_encoding,
    read_bom,
    resolve_encoding,
)
from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter
from yarl import URL

import llmops
from llmops.config import ScrapeConfig
from llmops.records.crawl import INDEX_ENTRY, CrawlSummary, IndexEntry, read_lines

log = logging.getLogger(__name__)

WARC_FILE = "crawl.warc.gz"
INDEX_FILE = "index.jsonl"
SUMMARY_FILE = "summary.json"

#: Failures worth another attempt: the server or the network may recover; a 4xx will not.
RETRYABLE_TIMEOUT = "timeout"
RETRYABLE_CONNECTION = "connection_error"

_CHUNK = 64 * 1024
_SNIFF_BYTES = 1024
#: Share of control characters in the first KB above which "text" is treated as binary.
_MAX_CONTROL_SHARE = 0.1
_BINARY_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"\xff\xd8\xff", b"%PDF-",
    b"PK\x03\x04", b"\x1f\x8b", b"RIFF", b"\x00\x00\x01\x00", b"\x7fELF",
)
_MAX_SITEMAPS = 50
#: Longest robots.txt ``Crawl-delay`` obeyed, in seconds; larger values are capped (with a
#: warning), because one request a day (``Crawl-delay: 86400``) would stall the crawl for
#: good. Non-finite values (``inf``, ``nan``) are invalid and ignored like unparseable ones.
MAX_CRAWL_DELAY_S = 30.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WARC_STRIPPED_HEADERS = {"content-encoding", "transfer-encoding", "content-length"}


# --------------------------------------------------------------------------- URLs
#
# URLs and charsets go through w3lib, Scrapy's URL and encoding helpers, rather than code of
# our own: it follows the URL living standard and the WHATWG encoding rules browsers use,
# and is kept up by the people who run Scrapy against the whole web. The alternatives
# were weighed: courlan (trafilatura's) also strips tracking parameters and filters URLs
# by heuristics, decisions a crawler should not take without saying so; charset-normalizer
# guesses a charset from the bytes, which is for pages that declare none, while a browser,
# and this crawler, decode what the page declares.


def canonicalize_url(url: str) -> str:
    """One spelling per resource, so the crawl never fetches the same page twice.

    w3lib's ``canonicalize_url`` lowercases scheme and host (IDNA for non-ASCII hosts),
    normalises percent-encoding, resolves ``.``/``..`` segments, sorts the query's
    ``key=value`` pairs and drops the fragment. On top of that a default port goes
    (w3lib keeps ``:80``, but ``http://h:80/`` is ``http://h/``). The canonical URL is
    what is requested, recorded and matched against robots.txt. Raises ``ValueError`` for
    URLs without scheme or host, or with an invalid port.
    """
    canonical = w3lib.url.canonicalize_url(url.strip())  # ValueError: bad port or IPv6 literal
    parts = urlsplit(canonical)
    if not parts.scheme or not parts.hostname:
        raise ValueError(f"not an absolute URL: {url!r}")
    if parts.port is not None and _DEFAULT_PORTS.get(parts.scheme) == parts.port:
        canonical = urlunsplit(parts._replace(netloc=parts.netloc.rpartition(":")[0]))
    return canonical


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _is_http(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


# --------------------------------------------------------------------- bodies


def _text_codec(label: str | None) -> str | None:
    """A charset label -> the Python codec a browser would decode it with, or None if unknown.

    w3lib's ``resolve_encoding`` applies the WHATWG label table (``latin-1`` and ``ascii``
    mean windows-1252, since servers mislabel cp1252 text that way). It also resolves
    Python's non-text codecs (``rot13``, ``base64``), which cannot decode a page; those
    count as unknown here.
    """
    codec = resolve_encoding(label) if label else None
    if codec is None:
        return None
    try:
        b"-".decode(codec, "replace")  # LookupError if not a text encoding (b"" skips the lookup)
    except LookupError:
        return None
    return codec


def detect_encoding(content_type: str | None, payload: bytes) -> str | None:
    """The charset a page declares, as a Python codec name, or None.

    The Content-Type header's wins, else a ``<meta>`` tag's (or an XML declaration's);
    labels are read as browsers read them (``iso-8859-1`` gives ``cp1252``).
    """
    for label in (http_content_type_encoding(content_type), html_body_declared_encoding(payload)):
        codec = _text_codec(label)
        if codec:
            return codec
    return None


def decode_html(payload: bytes, encoding: str | None) -> str:
    """Bytes of a page -> text, the way a browser decodes it (w3lib's ``html_to_unicode``).

    A byte-order mark wins; then ``encoding`` (what :func:`detect_encoding` recorded);
    then a ``<meta>`` declaration; else UTF-8. Undecodable bytes are replaced, never raised.
    """
    codec = _text_codec(encoding)
    return html_to_unicode(f"text/html; charset={codec}" if codec else None, payload)[1]


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def looks_binary(payload: bytes) -> bool:
    """True when a body that claims to be text is really binary (an image, an archive...).

    Servers mislabel files; trying to extract text from a PNG wastes work downstream
    and pollutes the corpus with mojibake, so such bodies are refused here.
    """
    head = payload[:_SNIFF_BYTES]
    if not head or read_bom(head)[0]:
        return False
    if head.startswith(_BINARY_SIGNATURES) or b"\x00" in head:
        return True
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return control / len(head) > _MAX_CONTROL_SHARE


def extract_links(payload: bytes, encoding: str | None, base_url: str) -> list[str]:
    """Absolute URLs of the ``<a href>`` links of a page (``<base href>`` respected)."""
    import lxml.etree
    import lxml.html

    try:
        doc = lxml.html.document_fromstring(decode_html(payload, encoding))
    except (ValueError, lxml.etree.ParserError):
        return []
    base = next((b.strip() for b in doc.xpath("//base/@href") if b.strip()), None)
    if base:
        with contextlib.suppress(ValueError):  # e.g. "http://[bad/": an unusable <base> is ignored
            base_url = urljoin(base_url, base)
    links = []
    for href in doc.xpath("//a/@href"):
        try:
            links.append(urljoin(base_url, href.strip()))
        except ValueError:
            continue
    return links


def parse_sitemap(payload: bytes) -> tuple[list[str], list[str]]:
    """A sitemap (optionally gzipped) -> (page URLs, nested sitemap URLs)."""
    import lxml.etree

    if payload.startswith(b"\x1f\x8b"):
        try:
            payload = gzip.decompress(payload)
        except (OSError, EOFError):
            return [], []
    parser = lxml.etree.XMLParser(resolve_entities=False, no_network=True, recover=True)
    try:
        root = lxml.etree.fromstring(payload, parser=parser)
    except lxml.etree.XMLSyntaxError:
        return [], []
    if root is None:
        return [], []
    locs = [s.strip() for s in root.xpath("//*[local-name()='loc']/text()") if s.strip()]
    if lxml.etree.QName(root).localname == "sitemapindex":
        return [], locs
    return locs, []


# ---------------------------------------------------------------------- hosts


class HostState:
    """Per-host politeness: a connection semaphore, a request interval and robots rules."""

    def __init__(self, cfg: ScrapeConfig) -> None:
        self.slots = asyncio.Semaphore(cfg.concurrency_per_host)
        self.interval = 1.0 / cfg.rate_limit_per_host
        self._next_at = 0.0
        self.robots: Protego | None = None  # None: no rules, everything allowed
        self.robots_unavailable = False  # robots.txt unreadable (5xx, unreachable): nothing allowed
        self.robots_ready = asyncio.Event()
        self.robots_task: asyncio.Task[None] | None = None  # held so it is not garbage-collected

    async def pace(self) -> None:
        """Wait for this host's next request slot (a simple fixed-interval limiter).

        Called while holding a connection slot, so requests that queued on the
        semaphore cannot burst out together once it frees up.
        """
        now = time.monotonic()
        start = max(self._next_at, now)
        self._next_at = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


# ------------------------------------------------------------------- fetching


@dataclass
class Hop:
    """One HTTP request/response exchange (a redirect chain is several hops)."""

    url: str
    status: int | None = None
    reason_phrase: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    bytes_read: int = 0
    location: str | None = None
    error: str | None = None

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def retryable(self) -> bool:
        return self.error in (RETRYABLE_TIMEOUT, RETRYABLE_CONNECTION) or (
            self.status is not None and self.status >= 500
        )


@dataclass(order=True)
class Task:
    """A URL waiting to be fetched, with how it was found."""

    url: str
    discovered_via: str = field(compare=False)
    depth: int = field(compare=False)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _empty_record(task: Task) -> IndexEntry:
    return IndexEntry(url=task.url, discovered_via=task.discovered_via, depth=task.depth)


class Crawler:
    """State of one crawl: the HTTP session, per-host politeness, the WARC and the index."""

    def __init__(self, cfg: ScrapeConfig, session: aiohttp.ClientSession, warc: WARCWriter,
                 previous: Path | None, frontier: Frontier) -> None:
        self.cfg = cfg
        self.frontier = frontier  # scope (seed host) and the URLs already seen
        self.session = session
        self.warc = warc
        self.hosts: dict[str, HostState] = {}
        self.previous_dir = previous
        self.previous = {r.url: r for r in read_index(previous) if r.ok} if previous else {}
        self.bytes_downloaded = 0

    # -- politeness --------------------------------------------------------

    def host(self, url: str) -> HostState:
        origin = _origin(url)
        if origin not in self.hosts:
            state = self.hosts[origin] = HostState(self.cfg)
            state.robots_task = asyncio.create_task(self._load_robots(origin, state))
        return self.hosts[origin]

    async def _load_robots(self, origin: str, state: HostState) -> None:
        """Fetch and parse ``/robots.txt`` once per host.

        Following RFC 9309 section 2.3.1: a missing file (any 4xx but 401/403, or a
        redirect chain that leads nowhere) means no rules; an unreachable one (a 5xx
        answer, a timeout or a connection error, after the retries) means complete
        disallow: every URL of the host is recorded as ``robots_unavailable`` and none
        is requested. 401/403 mean everything is disallowed, as ``urllib.robotparser``
        and crawlers before the RFC read them. Redirects of robots.txt are followed to
        any host, as the RFC allows. protego parses the rules, picks the group of our
        product token (else ``*``) and reads a fractional ``Crawl-delay``, ignoring
        negative and non-finite ones.
        """
        try:
            if not self.cfg.respect_robots:
                return
            hop = await self.get_resource(origin + "/robots.txt")
            if hop.status in (401, 403):
                state.robots = Protego.parse("User-agent: *\nDisallow: /\n")
            elif hop.status == 200 and hop.error is None:
                # RFC 9309 section 2.3: UTF-8; a byte-order mark would hide the first line's field
                state.robots = Protego.parse(hop.body.decode("utf-8-sig", errors="replace"))
                delay = state.robots.crawl_delay(self.cfg.user_agent)
                if delay and delay > MAX_CRAWL_DELAY_S:
                    log.warning("robots.txt of %s asks for Crawl-delay %gs: capped at %gs",
                                origin, delay, MAX_CRAWL_DELAY_S)
                    delay = MAX_CRAWL_DELAY_S
                if delay:
                    state.interval = max(state.interval, delay)
            elif (hop.status is not None and hop.status >= 500) or hop.error in (
                    RETRYABLE_TIMEOUT, RETRYABLE_CONNECTION):
                state.robots_unavailable = True
                log.warning("robots.txt of %s unavailable (%s): not crawling this host",
                            origin, hop.error or f"http_{hop.status}")
            elif hop.error and not hop.error.startswith("http_4"):
                log.warning("robots.txt of %s unusable (%s): crawling without rules", origin, hop.error)
        finally:
            state.robots_ready.set()

    async def blocked(self, url: str) -> str | None:
        """Why robots.txt forbids ``url`` (``robots_disallowed``/``robots_unavailable``), or None."""
        if not self.cfg.respect_robots:
            return None
        state = self.host(url)
        await state.robots_ready.wait()
        if state.robots_unavailable:
            return "robots_unavailable"
        # url is canonical, i.e. exactly what would be requested; protego matches its
        # path and query (RFC 9309 section 2.2.2), percent-encoding normalised on both sides
        if state.robots is None or state.robots.can_fetch(url, self.cfg.user_agent):
            return None
        return "robots_disallowed"

    async def robots_sitemaps(self, url: str) -> list[str]:
        """The ``Sitemap:`` URLs of the host's robots.txt."""
        state = self.host(url)
        await state.robots_ready.wait()
        return list(state.robots.sitemaps) if state.robots else []

    # -- one request -------------------------------------------------------

    async def get_resource(self, url: str, *, netloc: str | None = None) -> Hop:
        """GET robots.txt or a sitemap, following a few redirects (http -> https is common).

        These are not pages: no content-type or binary checks and no index record.
        With ``netloc``, a redirect to another host is not followed: the hop comes back
        with error ``offsite_redirect`` (its ``location`` says where it pointed).
        """
        for _ in range(self.cfg.max_redirects + 1):
            hop, _ = await self.request(url, check_body=False)
            if hop.location is None or not _is_http(hop.location):
                return hop
            try:
                target = canonicalize_url(hop.location)
            except ValueError:
                hop.error = "bad_redirect"
                return hop
            if netloc is not None and urlsplit(target).netloc != netloc:
                hop.error = "offsite_redirect"
                hop.location = target
                return hop
            url = target
        hop.error = hop.error or "too_many_redirects"
        return hop

    async def request(self, url: str, headers: dict[str, str] | None = None, *,
                      check_body: bool) -> tuple[Hop, int]:
        """GET one URL (no redirects followed), retrying with exponential backoff.

        Returns the last hop and the number of attempts made. Only transient
        failures (5xx, timeouts, connection errors) are retried: a 4xx is the
        server's considered answer and asking again would only add load.
        """
        state = self.host(url)
        attempt = 0
        while True:
            attempt += 1
            async with state.slots:
                await state.pace()
                hop = await self._request_once(url, headers or {}, check_body=check_body)
            if not hop.retryable or attempt > self.cfg.retries:
                return hop, attempt
            delay = self.cfg.backoff_s * 2 ** (attempt - 1)
            log.debug("retrying %s in %.2fs after %s", url, delay, hop.error)
            await asyncio.sleep(delay)

    async def _request_once(self, url: str, headers: dict[str, str], *, check_body: bool) -> Hop:
        """One exchange, classified; the body is read only for usable 2xx answers."""
        hop = Hop(url)
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        try:
            # encoded=True: yarl would otherwise re-quote the URL, and the request would no
            # longer be the canonical URL that robots.txt was checked against
            async with self.session.get(URL(url, encoded=True), headers=headers, allow_redirects=False,
                                        timeout=timeout) as resp:
                hop.status, hop.reason_phrase = resp.status, resp.reason or ""
                hop.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
                hop.request_headers = list(resp.request_info.headers.items())
                await self._classify(resp, hop, check_body)
        except TimeoutError:  # aiohttp's timeouts subclass it; checked before ClientError
            hop.error = RETRYABLE_TIMEOUT
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # ValueError: URL yarl rejects
            log.debug("connection error on %s: %r", url, exc)
            hop.error = RETRYABLE_CONNECTION
        self.bytes_downloaded += hop.bytes_read
        return hop

    async def _classify(self, resp: aiohttp.ClientResponse, hop: Hop, check_body: bool) -> None:
        """Set the hop's redirect target or error; read the body only when it can be kept.

        Cheap checks (status, media type, Content-Length) come before the download so
        refused responses cost no bandwidth.
        """
        status = resp.status
        if 300 <= status < 400 and status != 304 and resp.headers.get("Location"):
            try:
                hop.location = urljoin(hop.url, resp.headers["Location"])
            except ValueError:  # "http://[bad/": the server's answer is final, no retry
                hop.error = "bad_redirect"
            return
        if status == 304:
            return
        if not 200 <= status < 300:
            hop.error = f"http_{status}"
            return
        content_type = resp.headers.get("Content-Type")
        allowed = {t.lower() for t in self.cfg.allowed_content_types}
        if check_body and _media_type(content_type) not in allowed:
            hop.error = "content_type"
            return
        if (resp.content_length or 0) > self.cfg.max_bytes:
            hop.error = "too_large"
            return
        body = await self._read_limited(resp, hop)
        if body is None:
            hop.error = "too_large"
        elif check_body and looks_binary(body):
            hop.error = "binary_content"
        else:
            hop.body = body

    async def _read_limited(self, resp: aiohttp.ClientResponse, hop: Hop) -> bytes | None:
        """Stream the body, giving up as soon as it passes ``max_bytes``.

        Content-Length may be absent or wrong (chunked or compressed bodies), so the
        limit is enforced on the bytes actually received, not only on the header.
        """
        chunks: list[bytes] = []
        async for chunk in resp.content.iter_chunked(_CHUNK):
            hop.bytes_read += len(chunk)
            if hop.bytes_read > self.cfg.max_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    # -- one page ------------------------------------------------------------

    async def fetch_page(self, task: Task) -> tuple[IndexEntry, list[str]]:
        """Fetch one URL following redirects by hand; returns its index record and links.

        Redirects are followed manually (``allow_redirects=False``) because aiohttp's
        own handling only counts hops: here every hop is checked against robots.txt
        and the crawl's scope, a URL seen twice in one chain is reported as a loop,
        not as a long chain, and every URL a chain reaches is marked seen so a page
        reached by redirect is not fetched a second time when a link points to it.

        Never raises (cancellation aside): an unexpected exception is a bug in this
        module, but it must cost one URL, not the crawl, so it becomes the record's
        ``internal:<ExceptionType>`` error, logged with its traceback.
        """
        record = _empty_record(task)
        try:
            return await self._fetch_page(task, record)
        except Exception as exc:
            log.error("internal error while crawling %s", task.url, exc_info=True)
            failed = record.model_copy(update={"ok": False, "error": f"internal:{type(exc).__name__}",
                                               "sha256": None, "warc_offset": None, "encoding": None,
                                               "not_modified": False})
            return failed, []

    async def _fetch_page(self, task: Task, record: IndexEntry) -> tuple[IndexEntry, list[str]]:
        started = time.monotonic()
        previous = self.previous.get(task.url)
        chain = [task.url]
        hop: Hop | None = None
        reused: tuple[bytes, StatusAndHeaders] | None = None
        while True:
            url = chain[-1]
            blocked = await self.blocked(url)
            if blocked:
                record.error = blocked
                break
            conditional = self._conditional_headers(previous, url)
            hop, attempts = await self.request(url, conditional, check_body=True)
            record.attempts += attempts
            record.bytes += hop.bytes_read
            if hop.status == 304 and conditional:
                reused = self._copy_previous(previous, url) if previous else None
                if reused is None:  # old payload unreadable: ask again without validators
                    previous = None
                    continue
                break
            if hop.status == 304:
                record.error = "http_304"  # not asked for: nothing to keep
                break
            if hop.location is None:
                break
            error = self._redirect_error(chain, hop)
            if error:
                record.error = error
                break
            chain.append(canonicalize_url(hop.location))
            self.frontier.seen.add(chain[-1])
        record.final_url = chain[-1]
        record.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        if hop is None:
            return record, []
        record.fetched_at = _now_iso()
        self._fill_from_hop(record, hop)
        if record.error is not None:
            return record, []
        return self._finish(record, hop, previous, reused)

    def _conditional_headers(self, previous: IndexEntry | None, url: str) -> dict[str, str]:
        """Validators from the previous crawl, sent only to the URL they belong to."""
        if not previous or (previous.final_url or previous.url) != url:
            return {}
        headers = {}
        if previous.etag:
            headers["If-None-Match"] = previous.etag
        if previous.last_modified:
            headers["If-Modified-Since"] = previous.last_modified
        return headers

    def _redirect_error(self, chain: list[str], hop: Hop) -> str | None:
        """Why a redirect is not followed (unusable target, off site, loop, too long), or None."""
        assert hop.location is not None
        try:
            target = canonicalize_url(hop.location)
        except ValueError:
            return "bad_redirect"
        if not _is_http(target):
            return "bad_redirect"
        if self.frontier.same_host_only and urlsplit(target).netloc != self.frontier.seed_netloc:
            self.frontier.offsite.add(target)
            return "offsite_redirect"
        if target in chain:
            return "redirect_loop"
        if len(chain) > self.cfg.max_redirects:
            return "too_many_redirects"
        return None

    @staticmethod
    def _fill_from_hop(record: IndexEntry, hop: Hop) -> None:
        record.status = hop.status
        record.content_type = hop.header("Content-Type")
        record.etag = hop.header("ETag")
        record.last_modified = hop.header("Last-Modified")
        if record.error is None and hop.error:
            record.error = hop.error

    def _finish(self, record: IndexEntry, hop: Hop, previous: IndexEntry | None,
                reused: tuple[bytes, StatusAndHeaders] | None) -> tuple[IndexEntry, list[str]]:
        """A usable answer: store it in the WARC, fill the record, collect links."""
        if reused is not None and previous is not None:
            payload, http_headers = reused
            record.not_modified = True
            record.content_type = http_headers.get_header("Content-Type")
            record.etag = record.etag or previous.etag
            record.last_modified = record.last_modified or previous.last_modified
        else:
            payload, http_headers = hop.body, self._response_headers(hop)
        record.ok = True
        record.bytes = len(payload)
        record.sha256 = hashlib.sha256(payload).hexdigest()
        record.encoding = detect_encoding(record.content_type, payload)
        # Links first: should parsing fail, no orphan response is left in the WARC.
        links = extract_links(payload, record.encoding, hop.url) if self.cfg.follow_links else []
        record.warc_offset = self._write_warc(hop, http_headers, payload, record)
        return record, links

    def _copy_previous(self, previous: IndexEntry, url: str) -> tuple[bytes, StatusAndHeaders] | None:
        """The previous crawl's payload and response headers, or None if unreadable."""
        assert self.previous_dir is not None
        if previous.warc_offset is None:  # not an ok record: nothing was stored
            return None
        try:
            with open(self.previous_dir / WARC_FILE, "rb") as fh:
                fh.seek(previous.warc_offset)
                old = next(iter(ArchiveIterator(fh)))
                payload = old.content_stream().read()
                headers = old.http_headers
        except (OSError, StopIteration, KeyError, TypeError, ValueError) as exc:
            log.warning("cannot reuse the previous payload of %s: %r", url, exc)
            return None
        if headers is None or hashlib.sha256(payload).hexdigest() != previous.sha256:
            log.warning("the previous payload of %s does not match its index record", url)
            return None
        return payload, headers

    @staticmethod
    def _response_headers(hop: Hop) -> StatusAndHeaders:
        """Response headers as stored: the payload is kept decoded, so its encodings go."""
        headers = [(k, v) for k, v in hop.headers if k.lower() not in _WARC_STRIPPED_HEADERS]
        headers.append(("Content-Length", str(len(hop.body))))
        return StatusAndHeaders(f"{hop.status} {hop.reason_phrase}".strip(), headers, protocol="HTTP/1.1")

    def _write_warc(self, hop: Hop, http_headers: StatusAndHeaders, payload: bytes,
                    record: IndexEntry) -> int:
        """Write response + request records; returns the response record's file offset.

        Runs without awaiting, so records of concurrent fetches never interleave.
        """
        date = record.fetched_at
        extra = {"WARC-Date": date}
        if record.not_modified:
            extra["WARC-Llmops-Not-Modified"] = "true"
        response = self.warc.create_warc_record(
            hop.url, "response", payload=BytesIO(payload), length=len(payload),
            http_headers=http_headers, warc_headers_dict=extra,
        )
        offset = self.warc.out.tell()
        self.warc.write_record(response)
        split = urlsplit(hop.url)
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        request = self.warc.create_warc_record(
            hop.url, "request", payload=BytesIO(b""), length=0,
            http_headers=StatusAndHeaders(f"GET {target} HTTP/1.1", hop.request_headers,
                                          is_http_request=True),
            warc_headers_dict={"WARC-Date": date,
                               "WARC-Concurrent-To": response.rec_headers.get_header("WARC-Record-ID")},
        )
        self.warc.write_record(request)
        return offset


# ------------------------------------------------------------------ discovery


@dataclass
class Frontier:
    """Which URLs have been seen and which are in scope; offsite URLs are only counted."""

    seed_netloc: str
    same_host_only: bool
    seen: set[str] = field(default_factory=set)
    offsite: set[str] = field(default_factory=set)

    def admit(self, raw_url: str) -> str | None:
        """Canonical URL if it is new, http(s) and in scope; else None (offsite is counted)."""
        try:
            url = canonicalize_url(raw_url)
        except ValueError:
            return None
        if not _is_http(url) or url in self.seen:
            return None
        if self.same_host_only and urlsplit(url).netloc != self.seed_netloc:
            self.offsite.add(url)
            return None
        self.seen.add(url)
        return url


async def _discover_sitemap(crawler: Crawler, frontier: Frontier, seed: str,
                            sitemap_url: str | None) -> list[Task]:
    """Pages listed by the sitemap(s): the given one or ``/sitemap.xml``, plus robots.txt's.

    With ``same_host_only``, sitemaps on another host (named by robots.txt, nested in
    a sitemap index, given as ``sitemap_url``, or reached by a redirect) are skipped
    and counted as offsite links.
    """
    candidates = [sitemap_url or _origin(seed) + "/sitemap.xml"]
    candidates += await crawler.robots_sitemaps(seed)
    scope = frontier.seed_netloc if frontier.same_host_only else None
    queue, done, tasks = list(candidates), set[str](), list[Task]()
    while queue and len(done) < _MAX_SITEMAPS:
        try:
            url = canonicalize_url(queue.pop(0))
        except ValueError:
            continue
        if url in done or not _is_http(url):
            continue
        done.add(url)
        if scope is not None and urlsplit(url).netloc != scope:
            log.info("sitemap %s is on another host: skipped (same_host_only)", url)
            frontier.offsite.add(url)
            continue
        blocked = await crawler.blocked(url)
        if blocked:
            log.info("sitemap %s not fetched: %s", url, blocked)
            continue
        hop = await crawler.get_resource(url, netloc=scope)
        if hop.error == "offsite_redirect":
            log.info("sitemap %s redirects to another host (%s): skipped (same_host_only)", url, hop.location)
            frontier.offsite.add(hop.location or url)
            continue
        if hop.error or hop.status != 200:
            log.info("no sitemap at %s (%s)", url, hop.error or hop.status)
            continue
        pages, nested = parse_sitemap(hop.body)
        queue.extend(nested)
        for page in pages:
            admitted = frontier.admit(page)
            if admitted:
                tasks.append(Task(admitted, "sitemap", 0))
    return tasks


def _log_failure(record: IndexEntry) -> None:
    # robots_unavailable was already explained, once per host, by a warning
    level = logging.INFO if record.error in ("robots_disallowed", "robots_unavailable") else logging.WARNING
    log.log(level, "failed %s: %s", record.url, record.error)


async def _crawl_async(seed_url: str, out_dir: Path, cfg: ScrapeConfig, sitemap_url: str | None,
                       previous: Path | None, progress: bool) -> CrawlSummary:
    from tqdm import tqdm

    started = time.monotonic()
    seed = canonicalize_url(seed_url)
    frontier = Frontier(urlsplit(seed).netloc, cfg.same_host_only)
    records: list[IndexEntry] = []
    skipped = requested = 0
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=cfg.concurrency_per_host)
    headers = {"User-Agent": cfg.user_agent}
    with open(out_dir / WARC_FILE, "wb") as fh, tqdm(desc="scrape", unit="page", disable=not progress) as bar:
        warc = WARCWriter(fh, gzip=True)
        warc.write_record(_warcinfo(warc, seed, cfg))
        async with aiohttp.ClientSession(connector=connector, headers=headers,
                                         cookie_jar=aiohttp.DummyCookieJar()) as session:
            crawler = Crawler(cfg, session, warc, previous, frontier)
            frontier.seen.add(seed)
            level = [Task(seed, "seed", 0)] + await _discover_sitemap(crawler, frontier, seed, sitemap_url)
            while level:
                to_fetch, over = await _plan_level(crawler, level, records, cfg.max_pages - requested)
                requested, skipped = requested + len(to_fetch), skipped + over
                bar.total = (bar.total or 0) + len(to_fetch)
                bar.refresh()
                level = await _fetch_level(crawler, frontier, to_fetch, records, bar)
    elapsed = time.monotonic() - started
    records.sort(key=lambda r: r.url)
    _write_index(out_dir / INDEX_FILE, records)
    summary = _summary(seed, records, crawler.bytes_downloaded, elapsed, len(frontier.offsite), skipped, previous)
    summary.write(out_dir / SUMMARY_FILE)
    return summary


async def _plan_level(crawler: Crawler, level: list[Task], records: list[IndexEntry],
                      budget: int) -> tuple[list[Task], int]:
    """Split a level, in url order, into URLs to fetch and the count left over by the budget.

    URLs robots.txt forbids (``robots_disallowed``/``robots_unavailable``) are recorded
    here (they cost no budget: never requested).
    Sorting first makes the cut at ``max_pages`` independent of fetch timing.
    """
    to_fetch: list[Task] = []
    over = 0
    for task in sorted(level):
        blocked = await crawler.blocked(task.url)
        if blocked:
            record = _empty_record(task)
            record.error = blocked
            records.append(record)
            _log_failure(record)
        elif len(to_fetch) < budget:
            to_fetch.append(task)
        else:
            over += 1
    return to_fetch, over


async def _fetch_level(crawler: Crawler, frontier: Frontier, tasks: list[Task],
                       records: list[IndexEntry], bar: Any) -> list[Task]:
    """Fetch one depth level concurrently; returns the next level's tasks."""

    async def one(task: Task) -> tuple[Task, IndexEntry, list[str]]:
        record, links = await crawler.fetch_page(task)
        bar.update(1)
        if record.error:
            _log_failure(record)
        return task, record, links

    next_level: list[Task] = []
    for task, record, links in await asyncio.gather(*(one(t) for t in tasks)):
        records.append(record)
        for link in links:
            admitted = frontier.admit(link)
            if admitted:
                next_level.append(Task(admitted, "link", task.depth + 1))
    return next_level


def _warcinfo(warc: WARCWriter, seed: str, cfg: ScrapeConfig) -> Any:
    info = {
        "software": f"llmops/{getattr(llmops, '__version__', '0')} (aiohttp {aiohttp.__version__})",
        "format": "WARC File Format 1.1",
        "http-header-user-agent": cfg.user_agent,
        "robots": "obey" if cfg.respect_robots else "ignore",
        "isPartOf": seed,
        "llmops-scrape-config": json.dumps(cfg.model_dump(), sort_keys=True),
    }
    return warc.create_warcinfo_record(WARC_FILE, info)


def _summary(seed: str, records: list[IndexEntry], bytes_downloaded: int, elapsed: float,
             offsite: int, skipped: int, previous: Path | None) -> CrawlSummary:
    failed = Counter(r.error for r in records if not r.ok and r.error)
    requested = sum(1 for r in records if r.attempts)
    return CrawlSummary(
        seed_url=seed,
        urls_seen=len(records) + skipped,
        pages_ok=sum(1 for r in records if r.ok),
        pages_failed=sum(failed.values()),
        failed_by_reason=dict(sorted(failed.items())),
        not_modified=sum(1 for r in records if r.not_modified),
        bytes_downloaded=bytes_downloaded,
        elapsed_s=round(elapsed, 3),
        pages_per_s=round(requested / elapsed, 2) if elapsed > 0 else 0.0,
        offsite_links=offsite,
        skipped_max_pages=skipped,
        previous_crawl=str(previous) if previous else None,
    )


def _write_index(path: Path, records: list[IndexEntry]) -> None:
    """One JSON line per record, keys sorted: the bytes of the index before records were typed."""
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record.model_dump(), sort_keys=True, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------ public API


def crawl(seed_url: str, out_dir: Path, cfg: ScrapeConfig, *, sitemap_url: str | None = None,
          previous: Path | None = None, progress: bool = False) -> CrawlSummary:
    """Crawl from ``seed_url`` into the empty directory ``out_dir``; returns the summary.

    Synchronous on purpose: callers are plain functions (CLI, Airflow tasks), so the
    crawl runs its own event loop. ``previous`` is an earlier crawl's directory whose
    ok pages are re-requested conditionally; a ``304`` copies the old payload into
    this crawl, so every crawl directory is complete on its own.

    Raises ``ValueError`` for a seed that is not an absolute http(s) URL.
    """
    if urlsplit(seed_url.strip()).scheme.lower() not in ("http", "https"):
        raise ValueError(f"seed URL must be http(s)://...: {seed_url}")
    canonicalize_url(seed_url)  # ValueError for a missing host or a bad port, before any I/O
    coro = _crawl_async(seed_url, Path(out_dir), cfg, sitemap_url, Path(previous) if previous else None, progress)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Called from inside a running loop (a notebook, an async caller): asyncio.run would
    # refuse, so the crawl gets a loop of its own on a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def read_index(crawl_dir: Path) -> list[IndexEntry]:
    """The index records of a crawl, in url order; a line that does not validate (a renamed
    or missing field) raises :class:`~llmops.records.base.RecordError` naming the file and line."""
    return read_lines(Path(crawl_dir) / INDEX_FILE, INDEX_ENTRY)


def iter_ok_pages(crawl_dir: Path) -> Iterator[tuple[IndexEntry, bytes]]:
    """(index record, payload) for every ok page, in index order, read from the WARC.

    Each response record is its own gzip member, so ``warc_offset`` lets us seek
    straight to it; the payload is checked against the recorded sha256.
    """
    crawl_dir = Path(crawl_dir)
    with open(crawl_dir / WARC_FILE, "rb") as fh:
        for record in read_index(crawl_dir):
            if not record.ok or record.warc_offset is None:
                continue
            fh.seek(record.warc_offset)
            payload = next(iter(ArchiveIterator(fh))).content_stream().read()
            if hashlib.sha256(payload).hexdigest() != record.sha256:
                raise ValueError(f"{crawl_dir / WARC_FILE}: payload of {record.url} does not match its sha256")
            yield record, payload
