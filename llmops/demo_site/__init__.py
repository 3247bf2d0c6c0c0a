"""A realistic, deterministic local website to crawl, since the project runs offline.

A demo and a test fixture, not a pipeline stage, so it lives beside the core data package
rather than in it. The site is generated from CPython's ``pydoc_data.topics`` (the 79
language-reference topics) and dressed like a real documentation portal: navigation, a
cookie banner, rotating ads, comments and a footer around every article; planted PII and
secrets in article bodies and comments; exact mirrors and near-duplicate print versions
(near by the dedup stage's own shingle Jaccard); a ``robots.txt`` with RFC 9309 rules
(a disallowed ``/private/`` section, ``*`` and ``$`` patterns, an ``Allow`` exception);
a sitemap; ETag/Last-Modified with 304s; and a fixed set of fault pages (404, 500, flaky
503, slow, redirect loop, binary body, windows-1252, huge, zip). Everything planted is
recorded in ``Site.ground_truth`` so the crawler, extractor, PII and dedup stages can be
measured against it.

A second section is published on demand (``llmops demo-site publish library``): one
article per standard-library module the monitor's shifted traffic asks about, written from
the modules' docstrings, with the same chrome and no planted PII. A running site follows
``$LLMOPS_HOME/demo_site/published.json`` and serves a section as soon as it is published.

The same ``DemoSiteConfig.seed`` and sections always build the same bytes, and publishing
a section changes no base page but the index; nothing depends on the host or port (links
are root-relative, and the only absolute URLs, in ``robots.txt`` and ``sitemap.xml``, are
built per request from the ``Host`` header).

    build.py    the pages and the ground truth (``build_site``)
    library.py  the ``library`` section's text, from docstrings (``library_pages``)
    server.py   the HTTP server (``start_demo_site``, ``serve_forever``) and the
                published sections (``publish_section``, ``published_sections``)
"""

from llmops.demo_site.build import (
    PII_TYPES,
    ROBOTS_RULES,
    SECTIONS,
    Page,
    Site,
    build_site,
    page_texts_with_comments,
    section_paths,
    write_ground_truth,
)
from llmops.demo_site.server import (
    DemoSiteServer,
    publish_section,
    published_sections,
    read_access_log,
    serve_forever,
    start_demo_site,
)

__all__ = [
    "PII_TYPES",
    "ROBOTS_RULES",
    "SECTIONS",
    "DemoSiteServer",
    "Page",
    "Site",
    "build_site",
    "page_texts_with_comments",
    "publish_section",
    "published_sections",
    "read_access_log",
    "section_paths",
    "serve_forever",
    "start_demo_site",
    "write_ground_truth",
]
