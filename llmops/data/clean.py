"""Clean: normalise text, split sentences, and apply quality filters.

Each filter looks at one document and returns ``None`` to keep it or a short detail
string saying why it should go (the datatrove shape: keep-or-reason). Dropped
documents are written whole, with the filter name and detail, to
``dropped.jsonl``: nothing is silently lost.

Everything runs offline: sentence splitting is pysbd (rule-based, pure Python, fast
to import: spaCy would cost ~8 s of import per mapped task) and language
identification is py3langid, whose model ships inside the wheel.
"""

from __future__ import annotations

import collections
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llmops.config import CleanConfig
from llmops.data import store
from llmops.records.crawl import CleanDropped
from llmops.records.data import CleanSummary

log = logging.getLogger(__name__)

# Zero-width and bidi control characters hide inside scraped text and break tokenizers.
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLANK_RUN = re.compile(r"\n{3,}")
_WORD = re.compile(r"\w+", re.UNICODE)


def normalize_text(text: str, cfg: CleanConfig) -> str:
    """Unicode form, invisible/control characters, line ends, trailing spaces, blank runs.

    Leading indentation is kept on purpose: the corpus is full of code examples.
    """
    text = unicodedata.normalize(cfg.unicode_form, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    text = _INVISIBLE.sub("", text)
    text = _CONTROL.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _BLANK_RUN.sub("\n\n", text).strip()
    return text.lower() if cfg.lowercase else text


@lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


# A sentence can only end inside a line at terminal punctuation followed by a space.
# Lines without one (code, headings, one-sentence lines) skip pysbd, which spends
# most of its time compiling regexes. Faster, and it also avoids pysbd's false splits
# inside code such as ``type(it).__aiter__(it)`` -> ``type(it).`` + ``__aiter__(it)``.
_INNER_BOUNDARY = re.compile(r"[.!?…][\"'”’)\]]*\s+\S")


def split_sentences(text: str) -> list[str]:
    """Sentences of every line (paragraph) of ``text``, stripped and non-empty."""
    sentences: list[str] = []
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        if _INNER_BOUNDARY.search(line):
            sentences.extend(s.strip() for s in _segmenter().segment(line) if s.strip())
        else:
            sentences.append(line)
    return sentences


@lru_cache(maxsize=1)
def _language_identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_pickled_model(MODEL_FILE, norm_probs=True)


def identify_language(text: str) -> tuple[str, float]:
    lang, score = _language_identifier().classify(text[:5000])
    return lang, float(score)


# ---- filters: (measures) -> None to keep, or a detail string ------------------------


@dataclass(frozen=True)
class Measures:
    """What the filters look at: the normalised text and what clean measured of it."""

    text: str
    n_chars: int
    n_words: int
    lang: str
    lang_score: float


Filter = Callable[[Measures, CleanConfig], "str | None"]


def length_filter(doc: Measures, cfg: CleanConfig) -> str | None:
    if doc.n_chars < cfg.min_chars:
        return f"{doc.n_chars} chars < min_chars {cfg.min_chars}"
    if doc.n_chars > cfg.max_chars:
        return f"{doc.n_chars} chars > max_chars {cfg.max_chars}"
    if doc.n_words < cfg.min_words:
        return f"{doc.n_words} words < min_words {cfg.min_words}"
    return None


def symbol_ratio(text: str) -> float:
    if not text:
        return 0.0
    symbols = sum(1 for ch in text if not (ch.isalnum() or ch.isspace()))
    return symbols / len(text)


def symbol_filter(doc: Measures, cfg: CleanConfig) -> str | None:
    ratio = symbol_ratio(doc.text)
    return f"symbol ratio {ratio:.2f} > {cfg.max_symbol_ratio}" if ratio > cfg.max_symbol_ratio else None


def duplicate_line_fraction(text: str) -> float:
    """Share of lines repeating an earlier line (Gopher). Lines without a letter (table
    borders, ``...`` in code examples) are layout, not repeated content, and are ignored."""
    lines = [line.strip() for line in text.split("\n") if any(ch.isalpha() for ch in line)]
    if not lines:
        return 0.0
    return 1 - len(set(lines)) / len(lines)


def top_trigram_fraction(text: str) -> float:
    """Share of words covered by the most frequent word trigram (Gopher's repetition rule)."""
    words = _WORD.findall(text.lower())
    if len(words) < 3:
        return 0.0
    counts = collections.Counter(zip(words, words[1:], words[2:], strict=False))
    _, top = counts.most_common(1)[0]
    return top * 3 / len(words) if top > 1 else 0.0


def repetition_filter(doc: Measures, cfg: CleanConfig) -> str | None:
    dup = duplicate_line_fraction(doc.text)
    if dup > cfg.max_duplicate_line_fraction:
        return f"duplicate line fraction {dup:.2f} > {cfg.max_duplicate_line_fraction}"
    tri = top_trigram_fraction(doc.text)
    if tri > cfg.max_top_trigram_fraction:
        return f"top trigram fraction {tri:.2f} > {cfg.max_top_trigram_fraction}"
    return None


_TERMINAL_PUNCTUATION = (".", "!", "?", ":", ";", '"', "'", "”", "’")


def punctuated_line_fraction(text: str) -> float:
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines:
        return 0.0
    return sum(line.endswith(_TERMINAL_PUNCTUATION) for line in lines) / len(lines)


def line_punctuation_filter(doc: Measures, cfg: CleanConfig) -> str | None:
    frac = punctuated_line_fraction(doc.text)
    if frac < cfg.min_punctuated_line_fraction:
        return f"punctuated line fraction {frac:.2f} < {cfg.min_punctuated_line_fraction}"
    return None


def language_filter(doc: Measures, cfg: CleanConfig) -> str | None:
    if not cfg.languages:
        return None
    if doc.lang not in cfg.languages:
        return f"language {doc.lang} not in {cfg.languages}"
    if doc.lang_score < cfg.min_language_confidence:
        return f"language confidence {doc.lang_score:.2f} < {cfg.min_language_confidence}"
    return None


FILTERS: dict[str, Filter] = {
    "length": length_filter,
    "symbols": symbol_filter,
    "repetition": repetition_filter,
    "line_punctuation": line_punctuation_filter,
    "language": language_filter,
}


@dataclass
class CleanOutcome:
    doc: store.CleanDoc
    reason: str | None = None
    detail: str | None = None


def clean_document(row: store.ExtractDoc, cfg: CleanConfig) -> CleanOutcome:
    """Normalise one extracted document, measure it, and run every filter in order."""
    text = normalize_text(row["text"], cfg)
    sentences = split_sentences(text)
    lang, lang_score = identify_language(text) if text else ("", 0.0)
    measures = Measures(text=text, n_chars=len(text), n_words=len(_WORD.findall(text)), lang=lang,
                        lang_score=lang_score)
    doc: store.CleanDoc = {**row, "text": text, "n_chars": measures.n_chars, "n_words": measures.n_words,
                           "n_sentences": len(sentences), "sentences": sentences, "lang": lang,
                           "lang_score": lang_score}
    for name, check in FILTERS.items():
        detail = check(measures, cfg)
        if detail is not None:
            return CleanOutcome(doc, name, detail)
    return CleanOutcome(doc)


def run_clean(docs_path: Path, out_dir: Path, cfg: CleanConfig, progress: bool = False) -> CleanSummary:
    """Clean one extracted shard into ``out_dir/docs.parquet``; returns the summary."""
    from tqdm import tqdm

    kept: list[store.CleanDoc] = []
    dropped: list[CleanDropped] = []
    rows = store.read_docs(docs_path, store.ExtractDoc)
    for row in tqdm(rows, desc="clean", unit="doc", disable=not progress):
        outcome = clean_document(row, cfg)
        if outcome.reason is None:
            kept.append(outcome.doc)
        else:
            dropped.append(CleanDropped(id=row["id"], url=row["url"], reason=outcome.reason, detail=outcome.detail,
                                        document=outcome.doc))
            log.info("dropped %s: %s (%s)", row["url"], outcome.reason, outcome.detail)
    store.write_docs(kept, out_dir / "docs.parquet", schema=store.CLEAN_SCHEMA)
    store.write_dropped(dropped, out_dir / "dropped.jsonl")
    summary = CleanSummary(
        docs_in=len(rows),
        docs_out=len(kept),
        dropped_by_filter=store.count_by(dropped, "reason"),
        sentences=sum(d["n_sentences"] for d in kept),
        chars=sum(d["n_chars"] for d in kept),
    )
    summary.write(out_dir)
    return summary
