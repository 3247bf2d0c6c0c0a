"""The demo site's ``library`` section: one article per standard-library module, written from
the module's own docstrings.

The modules are the ones the monitor's synthetic "shifted" users ask about
(:data:`llmops.monitoring.traffic.TASKS`), so once the section is published the site has
pages on what those users moved to. The text is the running interpreter's, like the
``/docs/`` pages' ``pydoc_data.topics``: offline, and the same on every run of one Python
version.

This module only reads docstrings into blocks of text; :mod:`llmops.demo_site.build` dresses
them in the site's chrome, so the section's pages reach the extract and clean stages exactly
as the ``/docs/`` articles do.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import textwrap
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

MEMBERS_PER_PAGE = 12
"""Public functions and classes described per module (alphabetical), so no page runs long."""
PARAGRAPHS_PER_MEMBER = 2
"""Leading prose paragraphs taken from each member's docstring: what it does, not every option."""
MODULE_DOC_WORDS = 250
"""The module docstring is cut after the paragraph that reaches this many words."""
MIN_PROSE_WORDS = 6
MAX_PROSE_SYMBOL_RATIO = 0.12
"""A paragraph with more punctuation than this (per character) reads as code, not prose:
the same bound the Q&A stage puts on an answer sentence."""
MAX_TITLE_SYMBOL_RATIO = 0.2
"""Looser for a docstring's one-line title, which is short: "Heap queue algorithm (a.k.a. priority queue)"."""

# reST roles (:mod:`json`) and literals (``obj``) read as their plain text on a web page.
_ROLE = re.compile(r":[a-z]+:`([^`]+)`")
_LITERAL = re.compile(r"`{1,2}([^`]+)`{1,2}")
_UNDERLINE = re.compile(r"^([=\-~^*])\1{2,}$")
# "functools.py - Tools for…", "hashlib module - A common interface…": a file header, not a sentence.
_HEADER_PREFIX = re.compile(r"^[\w.]+(\.py| module)? - ")
# Notes to maintainers ("XXX ..."), and credits: copyright lines, "written by <name> <email>",
# reference lists "by T. Berners-Lee, R. Fielding ...". Not documentation, and credits name
# people; the section plants no personal data.
_SKIPPED = re.compile(r"^XXX|Copyright|written by|\bby [A-Z]\.|@\w")

BlockKind = Literal["h2", "h3", "p", "pre"]


@dataclass(frozen=True)
class DocBlock:
    """One block of a module page: a heading, a prose paragraph, or preformatted code."""

    kind: BlockKind
    text: str


@dataclass(frozen=True)
class ModulePage:
    """The text of one module's article, before any chrome."""

    module: str
    title: str
    blocks: tuple[DocBlock, ...]


def library_modules() -> tuple[str, ...]:
    """The section's modules, in the order the monitor's traffic lists them."""
    # Imported here: traffic imports the demo site's topic parser, so a module-level import
    # would be circular.
    from llmops.monitoring.traffic import TASKS

    return tuple(module for module, _ in TASKS)


@functools.cache
def library_pages() -> tuple[ModulePage, ...]:
    """Every module's page; a module this interpreter lacks (sqlite3 on a minimal build) has none."""
    pages = []
    for name in library_modules():
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        pages.append(module_page(name, module))
    return tuple(pages)


def module_page(name: str, module: ModuleType) -> ModulePage:
    """The module docstring's prose and code, then each public member's leading paragraphs."""
    blocks = _module_doc_blocks(module.__doc__ or "")
    for member, obj in public_members(name, module)[:MEMBERS_PER_PAGE]:
        paragraphs = [p for p in _chunks(obj.__doc__ or "")
                      if _is_prose(p) and not _SKIPPED.search(p)][:PARAGRAPHS_PER_MEMBER]
        if not paragraphs:  # a signature line and code only: nothing to read
            continue
        suffix = "" if inspect.isclass(obj) else "()"
        blocks.append(DocBlock("h2", f"{name}.{member}{suffix}"))
        blocks += [DocBlock("p", _plain(p)) for p in paragraphs]
    return ModulePage(module=name, title=f"The {name} module", blocks=tuple(blocks))


def public_members(name: str, module: ModuleType) -> list[tuple[str, object]]:
    """Public functions and classes (exceptions left out) the module defines, alphabetical.

    Like the shifted traffic's selection, but bound methods count too: ``random.choice`` is a
    method of the module's hidden ``Random`` instance, and users call it as a function.
    """
    found = []
    for member in sorted(getattr(module, "__all__", None) or dir(module), key=str.lower):
        obj = getattr(module, member, None)
        routine_or_class = inspect.isroutine(obj) or (inspect.isclass(obj) and not issubclass(obj, BaseException))
        if member.startswith("_") or not routine_or_class:
            continue
        home = (getattr(obj, "__module__", None) or name).lstrip("_")
        if home.split(".")[0] == name.split(".")[0]:  # not one the module merely imported
            found.append((member, obj))
    return found


# ---- docstrings -> blocks -------------------------------------------------------------------


def _chunks(doc: str) -> list[str]:
    """Blank-line separated chunks of a cleaned docstring (common indentation removed)."""
    return [c for c in re.split(r"\n\s*\n", inspect.cleandoc(doc)) if c.strip()]


def _plain(text: str) -> str:
    """A prose chunk as one line of plain text, reST markup dropped."""
    return " ".join(_LITERAL.sub(r"\1", _ROLE.sub(r"\1", text)).split())


def _symbol_ratio(text: str) -> float:
    return sum(1 for ch in text if not (ch.isalnum() or ch.isspace())) / max(len(text), 1)


def _is_prose(chunk: str) -> bool:
    """Reads as sentences: flush left, a letter first ("json exposes …" is prose), a full stop
    last, few symbols, and no doctest."""
    text = _plain(chunk)
    return (not any(line.startswith((" ", "\t")) for line in chunk.splitlines())
            and ">>>" not in chunk
            and text[:1].isalpha()
            and text.endswith(".")
            and len(text.split()) >= MIN_PROSE_WORDS
            and _symbol_ratio(text) <= MAX_PROSE_SYMBOL_RATIO)


def _title_line(chunk: str) -> str | None:
    """A one-line first chunk as a sentence: "Base16, Base32 … data encodings" gains its full
    stop, "functools.py - Tools for …" loses its file header. None when it is not one such line."""
    if "\n" in chunk.strip():
        return None
    text = _HEADER_PREFIX.sub("", _plain(chunk))
    text = text[:1].upper() + text[1:]
    text += "" if text.endswith((".", "!", "?")) else "."
    return text if text[:1].isalpha() and _symbol_ratio(text) <= MAX_TITLE_SYMBOL_RATIO else None


def _module_doc_blocks(doc: str) -> list[DocBlock]:
    chunks = _chunks(doc)
    blocks: list[DocBlock] = []
    if chunks and (title := _title_line(chunks[0])):
        blocks.append(DocBlock("p", title))
        chunks = chunks[1:]
    words = sum(len(b.text.split()) for b in blocks)
    for chunk in chunks:
        if words >= MODULE_DOC_WORDS:
            break
        lines = chunk.splitlines()
        if len(lines) >= 2 and _UNDERLINE.match(lines[1].strip()) and not lines[0].startswith(" "):
            blocks.append(DocBlock("h3", lines[0].strip()))
            chunk = "\n".join(lines[2:])
            if not chunk.strip():
                continue
        if _SKIPPED.search(chunk):
            continue
        block = DocBlock("p", _plain(chunk)) if _is_prose(chunk) else DocBlock("pre", textwrap.dedent(chunk))
        blocks.append(block)
        words += len(block.text.split())
    return _merge_code(blocks)


def _merge_code(blocks: list[DocBlock]) -> list[DocBlock]:
    """Adjacent code chunks (split by blank lines in the docstring) are one <pre>."""
    out: list[DocBlock] = []
    for block in blocks:
        if out and out[-1].kind == block.kind == "pre":
            out[-1] = DocBlock("pre", out[-1].text + "\n\n" + block.text)
        else:
            out.append(block)
    return out
