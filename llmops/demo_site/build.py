"""Generating the demo site: every page's bytes and the ground truth they plant.

Deterministic for ``DemoSiteConfig.seed`` and the sections asked for (:data:`SECTIONS`);
:mod:`llmops.demo_site.server` serves the result.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import io
import json
import random
import re
import string
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from pydoc_data.topics import topics as PYDOC_TOPICS
from typing import get_args

from faker import Faker

from llmops.config import DedupConfig, DemoSiteConfig
from llmops.data.dedup import jaccard
from llmops.demo_site.library import ModulePage, library_pages
from llmops.records.crawl import (
    DemoSiteSection,
    ExpectedFault,
    GroundTruth,
    GroundTruthPage,
    PageKind,
    PlantedDuplicate,
    PlantedPii,
)

# --------------------------------------------------------------------------- constants

#: Sections a site can publish on top of its base of ``/docs/`` articles (``llmops demo-site
#: publish``): ``library``, one article per standard-library module (:mod:`.library`).
SECTIONS: tuple[str, ...] = get_args(DemoSiteSection)
#: The ``<meta name="description">`` tail of an article, by section.
SECTION_DESCRIPTIONS = {"docs": "Python language reference", "library": "Python standard library"}
#: Who the library articles are by: their text is CPython's docstrings. No byline, and no
#: maintainer or comments either, so the section plants no personal data.
LIBRARY_AUTHOR = "The CPython developers"

MIRROR_COUNT = 12
PRINT_COUNT = 10
WORKED_EXAMPLE_SHARE = 0.55
SECRET_SHARE = 0.3
MIN_PRINT_JACCARD = 0.85  # kept above the 0.8 the brief promises, with margin
#: Shingle size of the print versions' Jaccard check: the dedup stage's default, so the
#: planted near-duplicates are near by the measure the stage estimates.
PRINT_SHINGLE_WORDS = DedupConfig().shingle_words

PII_TYPES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "CREDIT_CARD",
             "IP_ADDRESS", "LOCATION", "SECRET")

# Real US area codes, so phone numbers look plausible to a PII recognizer.
AREA_CODES = (201, 206, 212, 213, 303, 305, 312, 404, 415, 469, 480, 503, 512, 602,
              617, 619, 646, 702, 704, 713, 718, 720, 773, 801, 808, 813, 832, 860,
              917, 954)
# Card brands a PII recognizer is expected to know (Faker would also emit 12-digit Maestro).
CARD_TYPES = ("visa16", "mastercard", "amex", "discover")
PHONE_FORMATS = ("({a}) {e}-{n}", "{a}-{e}-{n}", "{a}.{e}.{n}", "+1 {a} {e} {n}",
                 "+1-{a}-{e}-{n}")

NAV_LABELS = ("Docs Home", "Getting Started Guide", "Language Reference Index",
              "Library Modules Catalog", "Release Notes Archive", "Community Forum",
              "Developer Blog", "Events Calendar", "Job Board", "Support Center",
              "Style Guide", "Pricing Plans")
MIRROR_NAV_LABELS = ("Mirror Home", "Browse All Mirrored Pages", "Report a Broken Mirror",
                     "Donate to the Mirror Network", "Mirror Status Page")
COOKIE_TEXT = ("We use cookies to personalise content, remember your preferences and "
               "analyse our traffic. By continuing to browse you accept our cookie policy.")
COOKIE_BUTTONS = ("Accept all", "Reject non-essential cookies")
ADS = (
    "Sponsored: Ship faster with CloudNimbus, now with a 30-day free trial for teams.",
    "Sponsored: Learn async programming in six weeks at the CodeForge Bootcamp.",
    "Sponsored: Monitor every request with TraceHound, the observability suite devs love.",
    "Sponsored: Tired of flaky builds? PipelineCat runs your tests twice as fast.",
    "Sponsored: Get 40% off mechanical keyboards at KeyCrafters this weekend only.",
    "Sponsored: Hire vetted senior engineers in 48 hours through DevMatch Pro.",
    "Sponsored: Back up your databases automatically with VaultNest Cloud.",
    "Sponsored: Certified Python Professional exam vouchers, now half price.",
)
MIRROR_ADS = (
    "Sponsored: Cheap VPS hosting from $2 a month at HostPotato.",
    "Sponsored: Download the MirrorBoost browser extension for faster pages.",
    "Sponsored: Win a free laptop in the DocsMirror summer raffle.",
)
NEWSLETTER_TEXT = "Get the weekly digest of Python internals delivered straight to your inbox."
NEWSLETTER_BUTTON = "Subscribe to the digest"
SIDEBAR_HEADING = "Related reading on this site"
COMMENTS_FORM_TEXT = "Leave a reply. Your email address will not be published."
COMMENTS_BUTTON = "Post your comment"
MIRROR_BANNER = ("You are reading a mirror of this page. Content may be out of date; "
                 "the mirror network is not affiliated with the original publisher.")
MIRROR_FOOTER = ("Mirrored automatically by the DocsMirror network, all trademarks belong "
                 "to their owners.")
PRINT_HEADER = "Printer-friendly version of this page, generated for offline reading."
FOOTER_LINKS = ("Privacy Policy", "Terms of Service", "Contact Our Team", "Careers at the Company",
                "Accessibility Statement")
# Ads point off-site (a reserved domain), as real ad links do; a same-host crawler skips them.
AD_CLICK_URL = "https://ads.example.net/click?slot="
INDEX_INTRO = "Articles on every corner of the Python language, written by our community."
TOOL_LABELS = {"print": "Print this page", "mirror": "Read on a mirror",
               "comments": "Jump to the comments"}

# Comment templates: (text with a {slot}, PII type of the slot or None). Cycled in a
# seeded order so every PII type shows up in comments for any seed.
COMMENT_TEMPLATES: tuple[tuple[str, str | None], ...] = (
    ("Great explanation, I am bookmarking this one for our next code review.", None),
    ("I ran into the same thing last week. Email me at {v} and I can share my notes.",
     "EMAIL_ADDRESS"),
    ("Happy to walk anyone through this on a call, my number is {v}.", "PHONE_NUMBER"),
    ("Our build server at {v} hits exactly this edge case every night.", "IP_ADDRESS"),
    ("If anyone lives near {v}, we run a monthly meetup about this topic.", "LOCATION"),
    ("Oops, I pasted my card number {v} into the last comment by mistake, "
     "can a moderator remove it?", "CREDIT_CARD"),
    ("Please delete my previous post, it contained my SSN {v} from a form I was "
     "filling in.", "US_SSN"),
    ("Heads-up: the token {v} in my earlier gist is revoked now, so do not bother "
     "trying it.", "SECRET"),
    ("Could you add a section on performance trade-offs? That would really help.", None),
    ("This page saved me an afternoon of debugging, thank you so much!", None),
)

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(])")
UNDERLINE = re.compile(r"^([*=\-~^])\1{2,}$")
LIST_ITEM = re.compile(r"^(\*|\d+\.)\s+")


# --------------------------------------------------------------------------- data model

@dataclass
class Page:
    """One servable resource. Fault behaviour is data, so the server stays generic."""

    body: bytes
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    last_modified: dt.datetime | None = None
    delay_s: float = 0.0  # stall before answering (the 'slow' fault)
    fail_first: int = 0  # answer 503 to this many requests first (the 'flaky' fault)

    @property
    def etag(self) -> str:
        """Quoted content hash: changes exactly when the body changes."""
        return '"' + hashlib.sha256(self.body).hexdigest()[:24] + '"'

    @property
    def cacheable(self) -> bool:
        """Only successful static pages take part in conditional requests."""
        return self.status == 200 and self.last_modified is not None


@dataclass
class Site:
    pages: dict[str, Page]
    ground_truth: GroundTruth
    sections: tuple[str, ...] = ()
    """The published sections it was built with, in :data:`SECTIONS` order."""


@dataclass
class Block:
    """One block of article content, rendered both to HTML and to ground-truth text
    from the same data so the two can never disagree."""

    kind: str  # h2 | h3 | p | pre | ul | ol | table
    text: str = ""
    items: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    html: str | None = None  # inline markup for p (already escaped); text stays plain
    cls: str | None = None
    from_topic: bool = False  # only topic prose is eligible for the print-version edit


@dataclass
class Article:
    slug: str
    title: str
    author: str
    date: dt.date
    blocks: list[Block]
    pii: list[tuple[str, str]]  # (type, value) planted in the body
    comments: list[tuple[str, str, dt.date]]  # (author, text, date)
    comment_pii: list[tuple[str, str]]  # (type, value) planted in the comments
    section: str = "docs"  # the path's first segment: docs, or a published section

    @property
    def path(self) -> str:
        return f"/{self.section}/{self.slug}.html"


# --------------------------------------------------------------------------- text helpers

def esc(text: str) -> str:
    return html.escape(text, quote=True)


def anchor(label: str) -> str:
    """Navigation links point at fragments of the index, so the site has no dead links
    and a crawler (which drops fragments) fetches nothing extra."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def squash(text: str) -> str:
    """Collapse whitespace: HTML rendering does the same, so ground truth must too."""
    return " ".join(text.split())


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


# --------------------------------------------------------------------------- topic parsing

def _is_prose(text: str) -> bool:
    """Indented blocks are code unless they read like sentences (notes, list bodies)."""
    if "::=" in text or text.startswith(">>>"):
        return False
    first, last = text[0], text.rstrip()[-1]
    if not (first.isupper() or first in "\"“"):
        return False
    if last not in ".:":
        return False
    return len(text.split()) >= 4 or last == ":"


def _raw_chunks(body: str) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    for line in body.splitlines():
        if line.strip():
            chunks[-1].append(line.rstrip())
        elif chunks[-1]:
            chunks.append([])
    return [c for c in chunks if c]


def parse_topic(text: str) -> tuple[str, list[Block]]:
    """pydoc topic text -> (title, blocks). Headings are underlined lines, code blocks
    are indented lines, list items start with '*' or 'N.'; consecutive items merge."""
    lines = text.strip("\n").splitlines()
    title = lines[0].strip()
    blocks: list[Block] = []
    for chunk in _raw_chunks("\n".join(lines[2:])):
        if len(chunk) >= 2 and UNDERLINE.match(chunk[1].strip()) and not chunk[0].startswith(" "):
            blocks.append(Block("h2" if chunk[1][0] in "=*" else "h3", squash(chunk[0])))
            chunk = chunk[2:]
            if not chunk:
                continue
        blocks.append(_chunk_block(chunk))
    return title, _merge_blocks(blocks)


def _chunk_block(chunk: list[str]) -> Block:
    indent = min(len(line) - len(line.lstrip()) for line in chunk)
    dedented = "\n".join(line[indent:] for line in chunk)
    if chunk[0].lstrip().startswith(("+-", "+=", "|")):
        return Block("pre", dedented)
    if indent > 0 and not _is_prose(dedented.lstrip()):
        return Block("pre", dedented)
    flat = squash(dedented)
    if indent == 0 and LIST_ITEM.match(flat):
        kind = "ul" if flat.startswith("*") else "ol"
        return Block(kind, items=[LIST_ITEM.sub("", flat, count=1)], from_topic=True)
    return Block("p", flat, from_topic=True)


def _merge_blocks(blocks: list[Block]) -> list[Block]:
    """Join adjacent code chunks (split by blank lines) and adjacent list items."""
    out: list[Block] = []
    for b in blocks:
        prev = out[-1] if out else None
        if prev and prev.kind == b.kind == "pre":
            prev.text += "\n\n" + b.text
        elif prev and prev.kind == b.kind and b.kind in ("ul", "ol"):
            prev.items.extend(b.items)
        else:
            out.append(b)
    return out


# --------------------------------------------------------------------------- block rendering

def block_html(b: Block) -> str:
    cls = f' class="{b.cls}"' if b.cls else ""
    if b.kind in ("h2", "h3"):
        return f"<{b.kind}{cls}>{esc(b.text)}</{b.kind}>"
    if b.kind == "pre":
        return f"<pre{cls}><code>{esc(b.text)}</code></pre>"
    if b.kind in ("ul", "ol"):
        items = "".join(f"<li>{esc(i)}</li>" for i in b.items)
        return f"<{b.kind}{cls}>{items}</{b.kind}>"
    if b.kind == "table":
        head = "".join(f"<th>{esc(c)}</th>" for c in b.rows[0])
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>"
                       for r in b.rows[1:])
        return (f"<table{cls}><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")
    return f"<p{cls}>{b.html if b.html is not None else esc(b.text)}</p>"


def block_text(b: Block) -> str:
    if b.kind in ("ul", "ol"):
        return "\n".join(b.items)
    if b.kind == "table":
        return "\n".join(" | ".join(r) for r in b.rows)
    return b.text


def block_sentences(b: Block) -> list[str]:
    """Prose only: code and table cells are not sentences (table PII is checked as PII)."""
    if b.kind == "p":
        parts = split_sentences(b.text)
    elif b.kind in ("ul", "ol"):
        parts = [s for i in b.items for s in split_sentences(i)]
    else:
        return []
    return [s for s in parts if len(s.split()) >= 3]


def article_text(blocks: list[Block]) -> str:
    return "\n\n".join(block_text(b) for b in blocks)


def article_sentences(blocks: list[Block]) -> list[str]:
    return [s for b in blocks for s in block_sentences(b)]


# --------------------------------------------------------------------------- the generator

class _Builder:
    """Holds the seeded Faker and RNG; every random draw goes through here, in a fixed
    order, which is what makes the site reproducible."""

    def __init__(self, cfg: DemoSiteConfig) -> None:
        self.cfg = cfg
        self.fake = Faker("en_US")
        self.fake.seed_instance(cfg.seed)
        self.rng = random.Random(cfg.seed)
        self.boilerplate: list[str] = []
        self.comment_order = list(range(len(COMMENT_TEMPLATES)))
        self.rng.shuffle(self.comment_order)
        self.comment_cursor = 0
        self.brand = self.fake.company().replace(",", "") + " Developer Docs"
        self.company_address = self.address()
        self.copyright_year = 2025  # set to the newest article's year once they exist

    # --- boilerplate bookkeeping
    def bp(self, text: str) -> str:
        """Record a boilerplate snippet and return it HTML-escaped."""
        if text not in self.boilerplate:
            self.boilerplate.append(text)
        return esc(text)

    # --- fake values
    def person(self) -> str:
        return self.fake.name()

    def email_for(self, name: str) -> str:
        parts = [p for p in re.sub(r"[^A-Za-z ]", "", name).lower().split()
                 if p not in {"mr", "mrs", "ms", "miss", "dr", "md", "dds", "phd", "dvm",
                              "jr", "sr", "ii", "iii", "iv", "v"}]
        sep = self.rng.choice([".", "_", ""])
        local = sep.join(parts[-2:]) if len(parts) >= 2 else (parts or ["user"])[0]
        if self.rng.random() < 0.3:
            local += str(self.rng.randrange(10, 99))
        return f"{local}@{self.fake.free_email_domain()}"

    def phone(self) -> str:
        fmt = self.rng.choice(PHONE_FORMATS)
        return fmt.format(a=self.rng.choice(AREA_CODES), e=self.rng.randrange(201, 999),
                          n=f"{self.rng.randrange(10000):04d}")

    def address(self) -> str:
        return (f"{self.fake.street_address()}, {self.fake.city()}, "
                f"{self.fake.state_abbr(False, False)} {self.fake.zipcode()}")

    def card(self) -> str:
        return self.fake.credit_card_number(card_type=self.rng.choice(CARD_TYPES))

    def date(self) -> dt.date:
        return dt.date(2019, 1, 1) + dt.timedelta(days=self.rng.randrange(6 * 365))

    def _chars(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def secret_sentence(self) -> tuple[str, str, list[str]]:
        """One prose paragraph leaking credentials: (text, html, secret values)."""
        kind = self.rng.randrange(5)
        alnum = string.ascii_letters + string.digits
        if kind == 0:
            tok = "ghp_" + self._chars(alnum, 36)
            pre, post = "To reproduce this locally, run ", " before starting the interpreter."
            return self._code_para(pre, f"export API_TOKEN={tok}", post, [tok])
        if kind == 1:
            key = "AKIA" + self._chars(string.ascii_uppercase + string.digits, 16)
            sec = self._chars(alnum + "/+", 40)
            text = (f"The benchmark bucket was configured with AWS_ACCESS_KEY_ID={key} and "
                    f"AWS_SECRET_ACCESS_KEY={sec}, so please rotate them if you copy this setup.")
            return text, esc(text), [key, sec]
        if kind == 2:
            tok = "sk_live_" + self._chars(alnum, 24)
            pre, post = "The payment webhook test used the key ", ", do not copy it into production."
            return self._code_para(pre, tok, post, [tok])
        if kind == 3:
            tok = self._jwt()
            pre, post = "Authenticate the sample client with the header ", " when calling the API."
            return self._code_para(pre, f"Authorization: Bearer {tok}", post, [tok])
        tok = self._chars("0123456789abcdef", 64)
        pre, post = "The session token for the demo account is ", " and it expires never."
        return self._code_para(pre, tok, post, [tok])

    @staticmethod
    def _code_para(pre: str, code: str, post: str, values: list[str]) -> tuple[str, str, list[str]]:
        return pre + code + post, f"{esc(pre)}<code>{esc(code)}</code>{esc(post)}", values

    def _jwt(self) -> str:
        def b64(obj: dict[str, str | int]) -> str:
            raw = json.dumps(obj, separators=(",", ":")).encode()
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        payload: dict[str, str | int] = {"sub": str(self.rng.randrange(10**6, 10**7)), "name": self.fake.first_name(),
                   "iat": 1_600_000_000 + self.rng.randrange(10**8)}
        sig = self._chars(string.ascii_letters + string.digits + "-_", 43)
        return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(payload)}.{sig}"

    # --- article parts
    def worked_example(self) -> tuple[list[Block], list[tuple[str, str]]]:
        """Customer records as a table or as paragraphs; returns blocks and (type, value)."""
        records = []
        for _ in range(self.rng.randint(2, 3)):
            name = self.person()
            records.append({"PERSON": name, "EMAIL_ADDRESS": self.email_for(name),
                            "PHONE_NUMBER": self.phone(), "LOCATION": self.address(),
                            "CREDIT_CARD": self.card(),
                            "US_SSN": self.fake.ssn(), "IP_ADDRESS": self.fake.ipv4_public()})
        pii = [(t, v) for r in records for t, v in r.items()]
        intro = Block("p", "Worked example: we ran the snippet above against a staging copy "
                           "of the customer table, and these are the records it touched.")
        if self.rng.random() < 0.5:
            header = ["Name", "Email", "Phone", "Address", "Card number", "SSN", "Last login IP"]
            rows = [header] + [[r[t] for t in ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER",
                                               "LOCATION", "CREDIT_CARD", "US_SSN",
                                               "IP_ADDRESS")] for r in records]
            return [intro, Block("table", rows=rows, cls="records")], pii
        paras = [Block("p", f"Record {i}: {r['PERSON']} ({r['EMAIL_ADDRESS']}, "
                            f"{r['PHONE_NUMBER']}) lives at {r['LOCATION']}; card on file "
                            f"{r['CREDIT_CARD']}, SSN {r['US_SSN']}, last login from "
                            f"{r['IP_ADDRESS']}.")
                 for i, r in enumerate(records, 1)]
        return [intro] + paras, pii

    def comments(self, n: int) -> tuple[list[tuple[str, str, dt.date]], list[tuple[str, str]]]:
        out, pii = [], []
        for _ in range(n):
            template, kind = COMMENT_TEMPLATES[
                self.comment_order[self.comment_cursor % len(self.comment_order)]]
            self.comment_cursor += 1
            author = self.person()
            pii.append(("PERSON", author))
            text = template
            if kind:
                value = self._comment_value(kind, author)
                text = template.format(v=value)
                pii.append((kind, value))
            out.append((author, text, self.date()))
        return out, pii

    def _comment_value(self, kind: str, author: str) -> str:
        if kind == "EMAIL_ADDRESS":
            return self.email_for(author)
        if kind == "PHONE_NUMBER":
            return self.phone()
        if kind == "IP_ADDRESS":
            return self.fake.ipv4_public()
        if kind == "LOCATION":
            return self.address()
        if kind == "CREDIT_CARD":
            return self.card()
        if kind == "US_SSN":
            return self.fake.ssn()
        return "ghp_" + self._chars(string.ascii_letters + string.digits, 36)

    def article(self, slug: str, index: int) -> Article:
        title, blocks = parse_topic(PYDOC_TOPICS[slug])
        author, date = self.person(), self.date()
        pii: list[tuple[str, str]] = [("PERSON", author)]
        # Plain text on purpose: trafilatura drops <time> elements and "byline" classes.
        byline = Block("p", f"By {author} · {date.isoformat()}", cls="post-by")
        body = [byline] + blocks
        if index == 0 or self.rng.random() < WORKED_EXAMPLE_SHARE:
            extra, extra_pii = self.worked_example()
            body += extra
            pii += extra_pii
        if index == 1 or self.rng.random() < SECRET_SHARE:
            text, markup, values = self.secret_sentence()
            body.append(Block("p", text, html=markup))
            pii += [("SECRET", v) for v in values]
        maint = self.person()
        mail, tel = self.email_for(maint), self.phone()
        body.append(Block("p", f"Questions about this page? Contact the maintainer, {maint}, "
                               f"at {mail} or {tel}.", cls="contact"))
        pii += [("PERSON", maint), ("EMAIL_ADDRESS", mail), ("PHONE_NUMBER", tel)]
        comments, cpii = self.comments(self.rng.randint(1, 4))
        return Article(slug, title, author, date, body, pii, comments, cpii)


# --------------------------------------------------------------------------- page chrome

def _head(title: str, extra: str = "", charset: str = "utf-8") -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="{charset}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n{extra}</head>\n")


def _article_head(b: _Builder, a: Article, canonical: bool) -> str:
    extra = (f'<meta name="author" content="{esc(a.author)}">\n'
             f'<meta name="description" content="{esc(a.title)}: {SECTION_DESCRIPTIONS[a.section]}.">\n'
             f'<meta property="og:title" content="{esc(a.title)}">\n'
             f'<meta property="og:type" content="article">\n'
             f'<meta property="article:published_time" content="{a.date.isoformat()}">\n')
    if canonical:
        extra += f'<link rel="canonical" href="{a.path}">\n'
    return _head(f"{a.title} — {b.brand}", extra)


def _nav(b: _Builder, labels: tuple[str, ...], topic_links: list[tuple[str, str]], section: str = "docs") -> str:
    """The header: the brand, the main navigation, and ``topic_links`` (slug, title) of ``section``."""
    items = "".join(f'<li><a href="/#{anchor(label)}">{b.bp(label)}</a></li>' for label in labels)
    topics = "".join(f'<li><a href="/{section}/{s}.html">{esc(t)}</a></li>' for s, t in topic_links)
    return (f'<header class="site-header">\n<a class="brand" href="/">{esc(b.brand)}</a>\n'
            f'<nav class="main-nav"><ul>{items}</ul>\n'
            f'<ul class="topics-menu">{topics}</ul></nav>\n</header>\n')


def _cookie_banner(b: _Builder) -> str:
    return (f'<div class="cookie-banner" id="cookie-consent" role="dialog">'
            f"<p>{b.bp(COOKIE_TEXT)}</p><button>{b.bp(COOKIE_BUTTONS[0])}</button>"
            f"<button>{b.bp(COOKIE_BUTTONS[1])}</button></div>\n")


def _ad(b: _Builder, text: str, slot: int) -> str:
    return (f'<aside class="ad advert" data-ad-slot="slot-{slot}">'
            f'<p>{b.bp(text)}</p><a href="{AD_CLICK_URL}{slot}" rel="sponsored nofollow">'
            f"{b.bp('Learn more about this offer')}</a></aside>\n")


def _footer(b: _Builder) -> str:
    year = b.copyright_year
    links = " · ".join(f'<a href="/#{anchor(label)}">{b.bp(label)}</a>' for label in FOOTER_LINKS)
    return (f'<footer class="site-footer">\n'
            f"<p>{b.bp(f'© {year} {b.brand}. All rights reserved.')}</p>\n"
            f"<p>{b.bp(f'{b.brand}, {b.company_address}')}</p>\n"
            f"<p>{links}</p>\n"
            f"<p>{b.bp('Built with care by the documentation team. Found a typo? Tell us.')}</p>\n"
            f"</footer>\n")


def _sidebar(b: _Builder, links: list[tuple[str, str]], section: str = "docs") -> str:
    items = "".join(f'<li><a href="/{section}/{s}.html">{esc(t)}</a></li>' for s, t in links)
    return (f'<aside class="sidebar related"><h3>{b.bp(SIDEBAR_HEADING)}</h3><ul>{items}</ul>'
            f'<div class="newsletter"><p>{b.bp(NEWSLETTER_TEXT)}</p>'
            f'<input type="email" placeholder="you@example.com"><button>{b.bp(NEWSLETTER_BUTTON)}'
            f"</button></div></aside>\n")


def _comments_html(b: _Builder, comments: list[tuple[str, str, dt.date]]) -> str:
    heading = b.bp(f"{len(comments)} {'reply' if len(comments) == 1 else 'replies'} from readers")
    items = "".join(
        f'<div class="comment"><p class="comment-author">'
        f"{b.bp(f'{name} wrote on {date.isoformat()}:')}</p><p>{b.bp(text)}</p></div>\n"
        for name, text, date in comments)
    return (f'<section class="comments" id="comments">\n<h3>{heading}</h3>\n{items}'
            f'<form class="comment-form"><p>{b.bp(COMMENTS_FORM_TEXT)}</p><textarea></textarea>'
            f"<button>{b.bp(COMMENTS_BUTTON)}</button></form>\n</section>\n")


def _article_element(a: Article, blocks: list[Block] | None = None) -> str:
    """The <article> element; mirrors reuse these exact bytes."""
    inner = "\n".join(block_html(x) for x in (blocks or a.blocks))
    return f"<article>\n<h1>{esc(a.title)}</h1>\n{inner}\n</article>\n"


def render_article_page(b: _Builder, a: Article, others: list[tuple[str, str]],
                        tools: dict[str, str]) -> str:
    """The original article: full chrome, canonical link, links to its duplicates."""
    ads = b.rng.sample(ADS, 2)
    nav_topics = b.rng.sample(others, 15)
    tool_links = " · ".join(f'<a href="{href}">{b.bp(TOOL_LABELS[k])}</a>'
                            for k, href in tools.items())
    return (_article_head(b, a, canonical=True) + "<body>\n" + _cookie_banner(b)
            + _nav(b, NAV_LABELS, nav_topics) + "<main>\n"
            + f'<div class="page-tools">{tool_links}</div>\n' + _ad(b, ads[0], 1)
            + _article_element(a) + _comments_html(b, a.comments) + _ad(b, ads[1], 2)
            + "</main>\n" + _sidebar(b, b.rng.sample(others, 6)) + _footer(b)
            + "</body>\n</html>\n")


def render_library_page(b: _Builder, a: Article, others: list[tuple[str, str]]) -> str:
    """A library article: the articles' chrome (banner, navigation, ads, sidebar, footer), so
    extract and clean meet the same boilerplate, without page tools or comments."""
    ads = b.rng.sample(ADS, 2)
    nav_topics = b.rng.sample(others, min(15, len(others)))
    return (_article_head(b, a, canonical=True) + "<body>\n" + _cookie_banner(b)
            + _nav(b, NAV_LABELS, nav_topics, a.section) + "<main>\n" + _ad(b, ads[0], 1)
            + _article_element(a) + _ad(b, ads[1], 2) + "</main>\n"
            + _sidebar(b, b.rng.sample(others, min(6, len(others))), a.section) + _footer(b)
            + "</body>\n</html>\n")


def render_mirror_page(b: _Builder, a: Article) -> str:
    """Same <article> bytes, different chrome, and no canonical link (as scrapers do)."""
    ad = b.rng.choice(MIRROR_ADS)
    nav = "".join(f'<li><a href="/#{anchor(label)}">{b.bp(label)}</a></li>' for label in MIRROR_NAV_LABELS)
    return (_article_head(b, a, canonical=False) + "<body>\n"
            + f'<div class="mirror-banner"><p>{b.bp(MIRROR_BANNER)}</p></div>\n'
            + f'<header class="mirror-header"><nav class="mirror-nav"><ul>{nav}</ul></nav></header>\n'
            + "<main>\n" + _ad(b, ad, 7) + _article_element(a) + _comments_html(b, a.comments)
            + f'</main>\n<footer class="mirror-footer"><p>{b.bp(MIRROR_FOOTER)}</p></footer>\n'
            + "</body>\n</html>\n")


def render_print_page(b: _Builder, a: Article, blocks: list[Block]) -> str:
    """Near-duplicate: no chrome, a print header, one edit, canonical to the original."""
    footer = f"Printed from {b.brand}. Visit the site for the latest version."
    return (_article_head(b, a, canonical=True) + '<body class="print-view">\n'
            + f'<p class="print-header">{b.bp(PRINT_HEADER)}</p>\n<main>\n'
            + _article_element(a, blocks) + "</main>\n"
            + f'<p class="print-footer">{b.bp(footer)}</p>\n</body>\n</html>\n')


def print_edit(b: _Builder, blocks: list[Block]) -> list[Block]:
    """Remove one topic sentence, keeping the dedup stage's shingle Jaccard similarity
    >= MIN_PRINT_JACCARD; fall back to changing one word. Returns edited copies; the
    original blocks are untouched."""
    original = article_text(blocks)
    candidates = [(i, s) for i, blk in enumerate(blocks) if blk.kind == "p" and blk.from_topic
                  for s in split_sentences(blk.text)
                  if len(split_sentences(blk.text)) > 1 and 6 <= len(s.split()) <= 40]
    b.rng.shuffle(candidates)
    for i, sentence in candidates:
        edited = _replace_text(blocks, i, squash(blocks[i].text.replace(sentence, "", 1)))
        if jaccard(original, article_text(edited), PRINT_SHINGLE_WORDS) >= MIN_PRINT_JACCARD:
            return edited
    i = next(i for i, blk in enumerate(blocks) if blk.kind == "p" and blk.from_topic)
    words = blocks[i].text.split()
    words[len(words) // 2] = "essentially"
    return _replace_text(blocks, i, " ".join(words))


def _replace_text(blocks: list[Block], i: int, text: str) -> list[Block]:
    out = list(blocks)
    old = blocks[i]
    out[i] = Block(old.kind, text, cls=old.cls, from_topic=old.from_topic)
    return out


# --------------------------------------------------------------------------- fault pages

def _simple_page(b: _Builder, title: str, paragraphs: list[str], charset: str = "utf-8") -> str:
    body = "\n".join(f"<p>{esc(p)}</p>" for p in paragraphs)
    return (_head(f"{title} — {b.brand}", charset=charset) + "<body>\n"
            + f'<header class="site-header"><a class="brand" href="/">{esc(b.brand)}</a></header>\n'
            + f"<main>\n<article>\n<h1>{esc(title)}</h1>\n{body}\n</article>\n</main>\n"
            + _footer(b) + "</body>\n</html>\n")


FLAKY_TEXT = [
    "This status page is served by a backend that sometimes needs a moment to wake up.",
    "If you are reading this, your client retried after a temporary failure and the "
    "second attempt succeeded.",
    "Well-behaved crawlers retry server errors with a growing delay instead of giving "
    "up on the first one.",
]
SLOW_TEXT = [
    "This page is generated by a very slow report job on an overloaded server.",
    "Most clients give up long before the answer arrives, which is exactly the point.",
]
LATIN1_TEXT = [
    "Café menus in Zürich list prices such as €4.50 for a café crème.",
    "The über-popular “naïve” approach assumes every page is UTF-8, which is wrong here.",
    "This résumé of legacy encodings is served as windows-1252, so a crawler must honour "
    "the declared charset to read it correctly.",
    "Déjà vu: smart quotes like ‘these’ and “these” break when decoded with the wrong codec.",
]


def _png_bytes(rng: random.Random, size: int = 4096) -> bytes:
    """A real PNG signature and IHDR chunk followed by noise: binary, whatever the header says."""
    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(
        ">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk + rng.randbytes(size)


def _zip_bytes(b: _Builder) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("reference/README.txt", date_time=(2020, 1, 1, 0, 0, 0))
        zf.writestr(info, "Offline copy of the language reference.\n" * 50)
    return buf.getvalue()


def _huge_html(b: _Builder, size: int) -> bytes:
    """A page of exactly ``size`` bytes, padded inside an HTML comment."""
    head = _head(f"Complete archive — {b.brand}").encode() + b"<body><main><article>\n"
    tail = b"</article></main></body></html>\n"
    para = b"<p>" + esc(" ".join(PYDOC_TOPICS["pass"].split())).encode() + b"</p>\n"
    filler_len = max(size - len(head) - len(tail) - len(b"<!--  -->"), 0)
    paras = para * (filler_len // len(para))
    pad = b"x" * max(filler_len - len(paras), 0)
    page = head + paras + b"<!-- " + pad + b" -->" + tail
    return page[:size] if len(page) > size else page


FAULT_EXPECT = {
    "/faults/missing.html": "http_404",
    "/faults/error.html": "http_500",
    "/faults/flaky.html": "ok",
    "/faults/slow.html": "timeout",
    "/faults/loop-a.html": "redirect_loop",
    "/faults/loop-b.html": "redirect_loop",
    "/faults/binary.html": "binary_content",
    "/faults/latin1.html": "ok",
    "/faults/huge.html": "too_large",
    "/faults/download.zip": "content_type",
}
FAULT_LABELS = {
    "/faults/missing.html": "Old changelog (moved)",
    "/faults/error.html": "Interactive playground",
    "/faults/flaky.html": "Service status",
    "/faults/slow.html": "Full usage report",
    "/faults/loop-a.html": "Legacy docs portal",
    "/faults/binary.html": "Architecture diagram",
    "/faults/latin1.html": "Notes on legacy encodings",
    "/faults/huge.html": "Complete archive on one page",
    "/faults/download.zip": "Offline bundle (zip)",
}


def build_faults(b: _Builder, modified: dt.datetime) -> tuple[dict[str, Page], list[GroundTruthPage]]:
    """The fixed fault set; returns pages and their ground-truth page entries."""
    html_ct = "text/html; charset=utf-8"
    missing = _simple_page(b, "Page not found", ["The page you asked for does not exist."])
    error = _simple_page(b, "Internal server error", ["Something went wrong on our side."])
    pages = {
        "/faults/missing.html": Page(missing.encode(), html_ct, status=404),
        "/faults/error.html": Page(error.encode(), html_ct, status=500),
        "/faults/flaky.html": Page(_simple_page(b, "Service status", FLAKY_TEXT).encode(),
                                   html_ct, last_modified=modified, fail_first=1),
        "/faults/slow.html": Page(_simple_page(b, "Full usage report", SLOW_TEXT).encode(),
                                  html_ct, last_modified=modified, delay_s=b.cfg.slow_delay_s),
        "/faults/loop-a.html": Page(b"", html_ct, status=302,
                                    headers={"Location": "/faults/loop-b.html"}),
        "/faults/loop-b.html": Page(b"", html_ct, status=302,
                                    headers={"Location": "/faults/loop-a.html"}),
        "/faults/binary.html": Page(_png_bytes(b.rng), "text/html", last_modified=modified),
        "/faults/latin1.html": Page(
            _simple_page(b, "Notes on legacy encodings", LATIN1_TEXT,
                         charset="windows-1252").encode("cp1252"),
            "text/html; charset=windows-1252", last_modified=modified),
        "/faults/huge.html": Page(_huge_html(b, b.cfg.huge_page_bytes), html_ct,
                                  last_modified=modified),
        "/faults/download.zip": Page(_zip_bytes(b), "application/zip", last_modified=modified),
    }
    texts = {"/faults/flaky.html": ("Service status", FLAKY_TEXT),
             "/faults/slow.html": ("Full usage report", SLOW_TEXT),
             "/faults/latin1.html": ("Notes on legacy encodings", LATIN1_TEXT)}
    entries = []
    for path in pages:
        title, paras = texts.get(path, (FAULT_LABELS.get(path, path), []))
        entries.append(_plain_entry(path, "fault", title, paras))
    return pages, entries


# --------------------------------------------------------------------------- private + index

PRIVATE_PAGES = {
    "/private/drafts.html": "Unpublished drafts",
    "/private/admin.html": "Site administration",
}


def build_private(b: _Builder,
                  modified: dt.datetime) -> tuple[dict[str, Page], list[GroundTruthPage], list[PlantedPii]]:
    pages: dict[str, Page] = {}
    entries: list[GroundTruthPage] = []
    pii: list[PlantedPii] = []
    for path, title in PRIVATE_PAGES.items():
        name = b.person()
        mail, tel = b.email_for(name), b.phone()
        paras = ["Internal only: this page is not meant for crawlers.",
                 f"Owner: {name}, reachable at {mail} or {tel}."]
        pages[path] = Page(_simple_page(b, title, paras).encode(), last_modified=modified)
        entries.append(_plain_entry(path, "private", title, paras))
        pii += [PlantedPii(page=path, type=t, value=v, where="body")
                for t, v in (("PERSON", name), ("EMAIL_ADDRESS", mail), ("PHONE_NUMBER", tel))]
    return pages, entries, pii


# --------------------------------------------------------------------------- robots.txt

#: The site's robots.txt rules (RFC 9309); the ``Sitemap:`` line is added per request.
#: A prefix-only parser (``urllib.robotparser``) gets them wrong both ways: it ignores the
#: ``*`` and ``$`` rules, so it would fetch the feeds, and it takes the first matching
#: rule, ``Disallow: /mirror/``, where RFC 9309 takes the longest, the ``Allow`` that keeps
#: the mirrored articles crawlable.
ROBOTS_RULES = (
    "User-agent: *",
    "Disallow: /private/",
    "Disallow: /*/comments",
    "Disallow: /*.json$",
    "Disallow: /mirror/",
    "Allow: /mirror/docs/*.html$",
)

#: Pages only the wildcard, ``$`` and ``/mirror/`` rules keep crawlers away from, linked
#: from the index: path -> (link label, content type).
ROBOTS_ONLY_PAGES = {
    "/feeds/articles.json": ("Every article as JSON", "application/json"),
    "/feeds/comments": ("Latest comments from readers", "text/html; charset=utf-8"),
    "/mirror/status.html": ("Mirror network status", "text/html; charset=utf-8"),
}


def build_robots_only(b: _Builder, articles: list[Article],
                      modified: dt.datetime) -> tuple[dict[str, Page], list[GroundTruthPage]]:
    """The pages of :data:`ROBOTS_ONLY_PAGES` and their ground-truth entries (no article text:
    a crawler that obeys robots.txt never sees them)."""
    feed = json.dumps([{"path": f"/docs/{a.slug}.html", "title": a.title} for a in articles], indent=1)
    notes = {"/feeds/comments": ["Reader comments are shown under each article."],
             "/mirror/status.html": ["Every mirror of the network is up."]}
    pages: dict[str, Page] = {}
    entries: list[GroundTruthPage] = []
    for path, (title, content_type) in ROBOTS_ONLY_PAGES.items():
        body = feed if path.endswith(".json") else _simple_page(b, title, notes[path])
        pages[path] = Page(body.encode(), content_type, last_modified=modified)
        entries.append(_plain_entry(path, "robots_only", title, []))
    return pages, entries


def render_index(b: _Builder, articles: list[Article], mirrors: list[str],
                 prints: list[str], library: list[Article] | None = None) -> str:
    """The home page: every article, duplicate, feed, fault and private page, and the
    library's articles when that section is published (``library``)."""
    def ul(links: list[tuple[str, str]]) -> str:
        return "<ul>" + "".join(f'<li><a href="{h}">{esc(t)}</a></li>' for h, t in links) + "</ul>\n"

    by_slug = {a.slug: a for a in articles}
    return (_head(f"{b.brand} — Python language reference")
            + "<body>\n" + _cookie_banner(b) + _nav(b, NAV_LABELS, [])
            + f"<main>\n<h1>{esc(b.brand)}</h1>\n"
            + f"<p>{b.bp(INDEX_INTRO)}</p>\n"
            + "<h2>Articles</h2>\n" + ul([(f"/docs/{a.slug}.html", a.title) for a in articles])
            + ("<h2>Library modules</h2>\n" + ul([(a.path, a.title) for a in library]) if library else "")
            + "<h2>Mirrors and print editions</h2>\n"
            + ul([(f"/mirror/docs/{s}.html", f"{by_slug[s].title} (mirror)") for s in mirrors]
                 + [(f"/print/{s}.html", f"{by_slug[s].title} (print)") for s in prints])
            + "<h2>Feeds and status</h2>\n" + ul([(p, label) for p, (label, _) in ROBOTS_ONLY_PAGES.items()])
            + "<h2>Resources</h2>\n" + ul(list(
                (p, FAULT_LABELS[p]) for p in FAULT_LABELS))
            + "<h2>Staff area</h2>\n" + ul(list(PRIVATE_PAGES.items()))
            + "</main>\n" + _footer(b) + "</body>\n</html>\n")


# --------------------------------------------------------------------------- build_site

def _gt_entry(path: str, kind: PageKind, a: Article, blocks: list[Block]) -> GroundTruthPage:
    """An article's entry (or its mirror's or print version's); ``topic`` is its slug."""
    return GroundTruthPage(path=path, kind=kind, topic=a.slug, title=a.title, author=a.author,
                           date_published=a.date.isoformat(), article_text=article_text(blocks),
                           article_sentences=article_sentences(blocks))


def _plain_entry(path: str, kind: PageKind, title: str, paras: list[str]) -> GroundTruthPage:
    """The entry of a page that is not an article: no topic, author or date."""
    return GroundTruthPage(path=path, kind=kind, topic=None, title=title, author=None, date_published=None,
                           article_text="\n\n".join(paras),
                           article_sentences=[s for p in paras for s in split_sentences(p)])


def _page_pii(path: str, a: Article, with_comments: bool = True) -> list[PlantedPii]:
    body = [PlantedPii(page=path, type=t, value=v, where="body") for t, v in a.pii]
    comments = [PlantedPii(page=path, type=t, value=v, where="comment") for t, v in a.comment_pii]
    return body + (comments if with_comments else [])


def modified_at(d: dt.date) -> dt.datetime:
    """The Last-Modified time of a page published on ``d``."""
    return dt.datetime(d.year, d.month, d.day, 9, 30, tzinfo=dt.UTC)


# --------------------------------------------------------------------------- published sections

def known_sections(sections: Iterable[str]) -> tuple[str, ...]:
    """``sections`` once each, in :data:`SECTIONS` order; an unknown name is an error that
    lists the known ones."""
    asked = set(sections)
    if unknown := sorted(asked - set(SECTIONS)):
        raise ValueError(f"unknown demo-site section {', '.join(map(repr, unknown))}: "
                         f"the known sections are {', '.join(SECTIONS)}")
    return tuple(s for s in SECTIONS if s in asked)


def section_paths(section: str) -> list[str]:
    """The pages publishing ``section`` adds to the site (``library`` is the only section)."""
    known_sections([section])
    return [f"/{section}/{p.module}.html" for p in library_pages()]


def library_articles(published: dt.date) -> list[Article]:
    """One article per standard-library module page, all published on ``published``."""
    return [_library_article(p, published) for p in library_pages()]


def _library_article(page: ModulePage, published: dt.date) -> Article:
    blocks = [Block(d.kind, d.text) for d in page.blocks]
    return Article(slug=page.module, title=page.title, author=LIBRARY_AUTHOR, date=published, blocks=blocks,
                   pii=[], comments=[], comment_pii=[], section="library")


def build_library(b: _Builder, articles: list[Article]) -> tuple[dict[str, Page], list[GroundTruthPage]]:
    """The library section's pages and their ground-truth entries (articles, no PII)."""
    titles = [(a.slug, a.title) for a in articles]
    pages: dict[str, Page] = {}
    entries: list[GroundTruthPage] = []
    for a in articles:
        others = [t for t in titles if t[0] != a.slug]
        pages[a.path] = Page(render_library_page(b, a, others).encode(), last_modified=modified_at(a.date))
        entries.append(_gt_entry(a.path, "article", a, a.blocks))
    return pages, entries


def build_site(cfg: DemoSiteConfig, sections: Iterable[str] = ()) -> Site:
    """Generate every page and the ground truth; deterministic for ``cfg.seed`` and ``sections``.

    Without ``sections`` the site is its base: the ``/docs/`` articles, their duplicates, the
    feeds, faults and private pages. Each published section (:data:`SECTIONS`) adds its pages,
    its links on the index and its sitemap entries, dated the day after the newest article
    (so a re-crawl sees them as new). The base is built first, drawing from the seeded
    generators exactly as it does alone, so publishing never changes a base page but the index.
    """
    published = known_sections(sections)
    b = _Builder(cfg)
    slugs = sorted(PYDOC_TOPICS)
    articles = [b.article(slug, i) for i, slug in enumerate(slugs)]
    b.copyright_year = max(a.date for a in articles).year
    titles = [(a.slug, a.title) for a in articles]
    shuffled = list(slugs)
    b.rng.shuffle(shuffled)
    mirrors = sorted(shuffled[:MIRROR_COUNT])
    long_enough = [s for s in shuffled[MIRROR_COUNT:]
                   if len(article_text(next(a for a in articles if a.slug == s).blocks).split()) >= 250]
    prints = sorted(long_enough[:PRINT_COUNT])

    pages: dict[str, Page] = {}
    gt_pages: list[GroundTruthPage] = []
    duplicates: list[PlantedDuplicate] = []
    pii: list[PlantedPii] = []
    for a in articles:
        path = f"/docs/{a.slug}.html"
        tools = {}
        if a.slug in prints:
            tools["print"] = f"/print/{a.slug}.html"
        if a.slug in mirrors:
            tools["mirror"] = f"/mirror/docs/{a.slug}.html"
        tools["comments"] = "#comments"
        others = [t for t in titles if t[0] != a.slug]
        html_page = render_article_page(b, a, others, tools)
        pages[path] = Page(html_page.encode(), last_modified=modified_at(a.date))
        gt_pages.append(_gt_entry(path, "article", a, a.blocks))
        pii += _page_pii(path, a)
        if a.slug in mirrors:
            mpath = f"/mirror/docs/{a.slug}.html"
            pages[mpath] = Page(render_mirror_page(b, a).encode(), last_modified=modified_at(a.date))
            gt_pages.append(_gt_entry(mpath, "mirror", a, a.blocks))
            duplicates.append(PlantedDuplicate(path=mpath, original=path, kind="exact"))
            pii += _page_pii(mpath, a)
        if a.slug in prints:
            ppath = f"/print/{a.slug}.html"
            edited = print_edit(b, a.blocks)
            pages[ppath] = Page(render_print_page(b, a, edited).encode(),
                                last_modified=modified_at(a.date))
            gt_pages.append(_gt_entry(ppath, "print", a, edited))
            duplicates.append(PlantedDuplicate(path=ppath, original=path, kind="near"))
            pii += _page_pii(ppath, a, with_comments=False)

    site_modified = modified_at(max(a.date for a in articles))
    fault_pages, fault_entries = build_faults(b, site_modified)
    private_pages, private_entries, private_pii = build_private(b, site_modified)
    robots_pages, robots_entries = build_robots_only(b, articles, site_modified)
    library = library_articles(site_modified.date() + dt.timedelta(days=1)) if "library" in published else []
    index = render_index(b, articles, mirrors, prints, library)
    library_pages_, library_entries = build_library(b, library)
    index_modified = modified_at(library[0].date) if library else site_modified
    pages = {"/": Page(index.encode(), last_modified=index_modified), **pages,
             **fault_pages, **private_pages, **robots_pages, **library_pages_}
    gt_pages = [_plain_entry("/", "index", b.brand, []), *gt_pages, *fault_entries, *private_entries,
                *robots_entries, *library_entries]

    ground_truth = GroundTruth(
        seed=cfg.seed,
        brand=b.brand,
        pages=gt_pages,
        duplicates=duplicates,
        pii=pii + private_pii,
        boilerplate=_distinctive(b.boilerplate, gt_pages),
        faults=[ExpectedFault(path=p, expect=e) for p, e in FAULT_EXPECT.items() if p != "/faults/loop-b.html"],
        disallowed=sorted([*PRIVATE_PAGES, *ROBOTS_ONLY_PAGES]),
        robots_disallow_prefixes=["/private/"],  # sections disallowed whole, no exception
        robots_rules=list(ROBOTS_RULES),
        sitemap=[f"/docs/{s}.html" for s in slugs] + [a.path for a in library],
    )
    return Site(pages, ground_truth, published)


def _distinctive(snippets: list[str], gt_pages: list[GroundTruthPage]) -> list[str]:
    """Drop any snippet that also occurs in article text: a leak check on it would be
    a false alarm. (With the texts above none should, and a test guards that.)"""
    corpus = "\n".join(p.article_text for p in gt_pages)
    return [s for s in snippets if s not in corpus]


def page_texts_with_comments(site: Site) -> dict[str, str]:
    """Every page's planted article text plus its comments as a reader sees them: all the
    text that carries planted PII, keyed by path (what PII tests and benchmarks redact)."""
    import lxml.html

    texts = {}
    for page in site.ground_truth.pages:
        if not page.article_text:
            continue
        tree = lxml.html.fromstring(site.pages[page.path].body)
        comments = ["\n".join(p.text_content() for p in div.xpath("./p"))
                    for div in tree.xpath('//div[@class="comment"]')]
        texts[page.path] = "\n\n".join([page.article_text, *comments])
    return texts


def write_ground_truth(site: Site, path: Path) -> None:
    """Write the ground truth as pretty UTF-8 JSON, atomically (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    site.ground_truth.write(path)
