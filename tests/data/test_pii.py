"""PII redaction: recall on the demo site's planted PII, types, operators, offline, I/O.

The analyzer (presidio + spaCy, ~5 s to import and build) is built once per module.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import socket
from pathlib import Path

import pytest
from pydantic import SecretStr

from llmops.config import DemoSiteConfig, PiiConfig
from llmops.data import pii, store
from llmops.demo_site import build_site

pytestmark = pytest.mark.timeout(120)

CFG = PiiConfig(hash_salt="test-salt-0123456789", processes=2)
MIN_RECALL = 0.99


@pytest.fixture(scope="module")
def analyzer():
    return pii.build_analyzer(CFG)


@pytest.fixture(scope="module")
def demo():
    """(site, {page path: article text + the page's comments as a reader sees them})."""
    from llmops.demo_site import page_texts_with_comments

    site = build_site(DemoSiteConfig())
    return site, page_texts_with_comments(site)


@pytest.fixture(scope="module")
def redacted(demo, analyzer):
    """Every distinct page text redacted once, through the multi-process fast path."""
    _, texts = demo
    unique = list(dict.fromkeys(texts.values()))
    done = dict(zip(unique, pii.redact_texts(unique, CFG), strict=True))
    return {path: done[text][0] for path, text in texts.items()}


def _findings(text: str, cfg: PiiConfig = CFG) -> list[tuple[str, str]]:
    (results,) = pii.analyze_texts([text], cfg)
    return [(r.entity_type, text[r.start:r.end]) for r in results]


# --------------------------------------------------------------------------- recall

def test_planted_values_are_present_before_redaction(demo):
    site, texts = demo
    planted = site.ground_truth.dump()["pii"]
    by_type = collections.Counter(row["type"] for row in planted)
    assert set(by_type) == {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "CREDIT_CARD", "IP_ADDRESS",
                            "LOCATION", "SECRET"}
    assert min(by_type.values()) >= 20
    assert {row["where"] for row in planted} == {"body", "comment"}
    missing = [row["type"] for row in planted if row["value"] not in texts[row["page"]]]
    assert missing == []


def test_recall_per_type_on_demo_site(demo, redacted):
    site, _ = demo
    found, total = collections.Counter(), collections.Counter()
    for row in site.ground_truth.dump()["pii"]:
        total[row["type"]] += 1
        found[row["type"]] += row["value"] not in redacted[row["page"]]
    recall = {t: found[t] / total[t] for t in total}
    assert all(r >= MIN_RECALL for r in recall.values()), recall


def test_little_non_pii_text_is_changed(demo, analyzer):
    """False positives on the article texts (Python reference prose and code)."""
    site, texts = demo
    planted = collections.defaultdict(set)
    for row in site.ground_truth.dump()["pii"]:
        planted[texts[row["page"]]].add(row["value"])
    docs = list(planted)
    changed = non_pii = 0
    for text, results in zip(docs, pii.analyze_texts(docs, CFG), strict=True):
        covered = [False] * len(text)
        for value in planted[text]:
            for m in re.finditer(re.escape(value), text):
                covered[m.start():m.end()] = [True] * (m.end() - m.start())
        non_pii += covered.count(False)
        changed += sum(r.end - r.start for r in results if not any(covered[r.start:r.end]))
    assert changed / non_pii < 0.002


# --------------------------------------------------------------------------- types

@pytest.mark.parametrize("phone", ["(415) 123-4567", "555-123-4567", "555.123.4567", "+1 555 123 4567",
                                   "+1-555-123-4567"])
def test_us_phone_formats_are_phone_numbers(analyzer, phone):
    assert _findings(f"Call me on {phone} after lunch.") == [("PHONE_NUMBER", phone)]


def test_ssn_card_ip_email_types(analyzer):
    text = ("Her SSN 509-21-1235 and card 4707 9278 7441 2663 were sent from 208.222.60.238 "
            "by jane.roe@example.org.")
    assert _findings(text) == [("US_SSN", "509-21-1235"), ("CREDIT_CARD", "4707 9278 7441 2663"),
                               ("IP_ADDRESS", "208.222.60.238"), ("EMAIL_ADDRESS", "jane.roe@example.org")]


@pytest.mark.parametrize("secret", [
    "AKIAIOSFODNN7EXAMPL3",
    "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5",
    "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
])
def test_secrets_are_secret(analyzer, secret):
    assert _findings(f"The token {secret} is revoked now.") == [("SECRET", secret)]


def test_secret_assigned_to_a_credential_variable(analyzer):
    value = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert _findings(f"Set AWS_SECRET_ACCESS_KEY={value}, then retry.") == [("SECRET", value)]


def test_street_address_is_a_location(analyzer):
    address = "91890 Holloway Circles Suite 754, Lake Sarah, NH 69990"
    assert ("LOCATION", address) in _findings(f"She lives at {address}; ask her.")


def test_python_code_is_left_alone(analyzer):
    code = ("obj.attr = os.path.join(base, 'x.py')  # see https://docs.python.org/3/\n"
            "if sys.version_info >= (3, 11, 2): print(a[::2], b[1::], 1.2.3.4e5)\n"
            "token = tokenize.generate_tokens(readline)\n"
            "By default, the __init__() method returns None; see PEP 8 and version 3.12.1.\n")
    assert _findings(code) == []


# --------------------------------------------------------------------------- operators

PERSON_TEXT = "Contact the maintainer, Robert Scott, at robert.scott@gmail.com or (646) 793-0753."


def test_replace_is_the_default(analyzer):
    text, counts = pii.redact_text(PERSON_TEXT, CFG)
    assert text == "Contact the maintainer, <PERSON>, at <EMAIL_ADDRESS> or <PHONE_NUMBER>."
    assert counts == {"EMAIL_ADDRESS": 1, "PERSON": 1, "PHONE_NUMBER": 1}


def test_mask(analyzer):
    text, _ = pii.redact_text(PERSON_TEXT, CFG.model_copy(update={"operator": "mask"}))
    assert text == f"Contact the maintainer, {'*' * 12}, at {'*' * 22} or {'*' * 14}."


def test_hash_is_salted_and_deterministic_across_calls_and_processes(analyzer):
    cfg = CFG.model_copy(update={"operator": "hash", "batch_size": 1})
    one, _ = pii.redact_text(PERSON_TEXT, cfg)
    assert "Robert" not in one and re.search(r"\b[0-9a-f]{64}\b", one)
    assert pii.redact_text(PERSON_TEXT, cfg)[0] == one
    # batch_size 1 spreads the copies over both worker processes
    assert {t for t, _ in pii.redact_texts([PERSON_TEXT] * 6, cfg)} == {one}
    other_cfg = cfg.model_copy(update={"hash_salt": SecretStr("another-salt-0123456789")})
    other_salt, _ = pii.redact_text(PERSON_TEXT, other_cfg)
    assert other_salt != one


def test_pseudonymize_is_consistent_within_a_document(analyzer):
    cfg = CFG.model_copy(update={"operator": "pseudonymize", "entities": [*CFG.entities, "DATE_TIME"]})
    doc = ("By Jane Doe · 2021-03-04\n\nJane Doe wrote on 2021-03-10:\nAsk John Smith, or mail "
           "jane.doe@example.org; jane.doe@example.org also works. Jane Doe agrees with John Smith.")
    text, counts = pii.redact_text(doc, cfg)
    assert "Jane" not in text and "John" not in text and "jane.doe" not in text
    assert text.count("SubjectA") == 3 and text.count("SubjectB") == 2
    assert text.count("subjecta@example.com") == 2
    assert text.startswith("By SubjectA")  # numbered in reading order
    dates = re.findall(r"\d{4}-\d{2}-\d{2}", text)
    assert len(dates) == 2 and "2021-03-04" not in dates  # shifted, not removed ...
    import datetime as dt
    gap = dt.date.fromisoformat(dates[1]) - dt.date.fromisoformat(dates[0])
    assert gap.days == 6  # ... by one offset per document
    assert counts["PERSON"] == 5 and counts["DATE_TIME"] == 2
    # the surrogate table is per document: another one starts again at SubjectA
    other, _ = pii.redact_text("Contact the maintainer, Mary Major, at mm@example.org.", cfg)
    assert "SubjectA" in other and "SubjectB" not in other


# --------------------------------------------------------------------------- offline

def test_analyzer_build_and_analysis_never_touch_the_network(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:1])
        raise OSError("network access attempted during PII redaction")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    engine = pii._build_analyzer_uncached(CFG)  # fresh: spaCy load + email validator's suffix list
    results = engine.analyze("Mail jane.roe@example.co.uk or bob@mail.example.com today.", language="en",
                             entities=CFG.entities)
    assert sorted(r.entity_type for r in results) == ["EMAIL_ADDRESS", "EMAIL_ADDRESS"]
    assert attempts == []


# --------------------------------------------------------------------------- entry points

def test_redact_jsonl_keeps_fields_and_adds_counts(tmp_path: Path, analyzer):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out" / "out.jsonl"
    rows = [{"id": 1, "text": PERSON_TEXT, "meta": {"lang": "en"}}, {"id": 2, "text": "Nothing to see."}]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    summary = pii.redact_jsonl(src, dst, CFG.model_copy(update={"processes": 1}))
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [r["id"] for r in out] == [1, 2] and out[0]["meta"] == {"lang": "en"}
    assert out[0]["pii_counts"] == {"EMAIL_ADDRESS": 1, "PERSON": 1, "PHONE_NUMBER": 1}
    assert out[1] == {"id": 2, "text": "Nothing to see.", "pii_counts": {}}
    assert summary.docs == 2 and summary.pii_counts_by_type["PERSON"] == 1


@pytest.mark.parametrize("lines, message", [
    (['{"text": "ok"}', '{"txt": "Jane Doe"}'], r"in\.jsonl:2: record has no 'text' field"),
    (['{"text": "ok"}', "", '{"text": "Jane Doe", '], r"in\.jsonl:3: invalid JSON"),
    (['["Jane Doe"]'], r"in\.jsonl:1: expected a JSON object"),
    (['{"text": 5}'], r"in\.jsonl:1: 'text' must be a string"),
])
def test_redact_jsonl_bad_input_names_the_line(tmp_path: Path, lines, message):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(pii.RedactInputError, match=message) as info:
        pii.redact_jsonl(src, tmp_path / "out.jsonl", CFG)
    assert "Jane" not in str(info.value)
    assert not (tmp_path / "out.jsonl").exists()


def _corpus_row(i: int, text: str, title: str, author: str | None) -> dict:
    row = {f.name: None for f in store.CORPUS_SCHEMA}
    row.update(id=f"doc{i}", url=f"http://x/{i}", text=text, title=title, author=author, sentences=[text],
               n_chars=len(text), n_words=len(text.split()), n_sentences=1, dup_count=1)
    return row


def test_run_redact_writes_the_redacted_corpus(tmp_path: Path, analyzer):
    rows = [_corpus_row(0, PERSON_TEXT + " Thanks. See you.", "Notes by Robert Scott", "Robert Scott"),
            _corpus_row(1, "No personal data here. Just prose.", "Plain", None)]
    store.write_docs(rows, tmp_path / "corpus.parquet", schema=store.CORPUS_SCHEMA)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    summary = pii.run_redact(tmp_path / "corpus.parquet", out_dir, CFG)
    import pyarrow.parquet as pq

    assert pq.read_schema(out_dir / "corpus.parquet").equals(pii.REDACTED_SCHEMA, check_metadata=False)
    got = store.read_docs(out_dir / "corpus.parquet")
    assert got[0]["text"].startswith("Contact the maintainer, <PERSON>, at <EMAIL_ADDRESS>")
    assert got[0]["sentences"] == [got[0]["text"].split(" Thanks.")[0], "Thanks.", "See you."]
    assert got[0]["n_sentences"] == 3
    assert got[0]["title"] == "Notes by <PERSON>" and got[0]["author"] == "<PERSON>"
    assert json.loads(got[0]["pii_counts"]) == {"EMAIL_ADDRESS": 1, "PERSON": 3, "PHONE_NUMBER": 1}
    assert got[1]["author"] is None and json.loads(got[1]["pii_counts"]) == {}
    assert summary.docs == 2 and summary.pii_counts_by_type["PERSON"] == 3
    assert json.loads((out_dir / "summary.json").read_text())["docs_per_s"] > 0


def test_logs_hold_no_planted_value(demo, tmp_path: Path, caplog, analyzer):
    site, texts = demo
    path = next(p for p in texts if p.startswith("/docs/"))
    values = [row["value"] for row in site.ground_truth.dump()["pii"] if row["page"] == path]
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": texts[path]}) + "\n")
    cfg = CFG.model_copy(update={"processes": 1})  # worker processes' records do not reach caplog
    with caplog.at_level(logging.DEBUG):
        pii._cached_analyzer.cache_clear()
        pii.build_analyzer(cfg)
        pii.redact_texts([texts[path]], cfg)
        pii.redact_jsonl(src, tmp_path / "out.jsonl", cfg)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "redacted 1 records" in logged
    assert [v for v in values if v in logged] == []


def test_names_in_markdown_table_rows_as_trafilatura_renders_them():
    from llmops.config import PiiConfig
    from llmops.data.pii import redact_text

    text = ("| Name | Email | Phone |\n|---|---|---|\n"
            "| Cindy Mckay | cindy.mckay@example.org | (415) 555-0134 |\n"
            "| Amber Hodge | amber.h@example.com | 415-555-0199 |")
    out, counts = redact_text(text, PiiConfig(processes=1))
    assert "Cindy Mckay" not in out and "Amber Hodge" not in out
    assert counts["PERSON"] == 2


def test_salt_is_required_secret_and_validated():
    from llmops.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="pii: Value error, operator 'hash' needs pii.hash_salt"):
        load_config(environ={"LLMOPS_PII__OPERATOR": "hash"})
    cfg = load_config(environ={"LLMOPS_PII__OPERATOR": "hash", "LLMOPS_PII__HASH_SALT": "s3cret-salt-0123456789"})
    assert "s3cret" not in str(cfg.model_dump(mode="json")) and "s3cret" not in repr(cfg)
    other = load_config(environ={"LLMOPS_PII__OPERATOR": "hash", "LLMOPS_PII__HASH_SALT": "other-salt-0123456789"})
    assert cfg.pii.salt_fingerprint() != other.pii.salt_fingerprint()
    with pytest.raises(ConfigError, match="pii.entities"):
        load_config(environ={"LLMOPS_PII__ENTITIES": "[PERSON, email]"})
    assert load_config(environ={"LLMOPS_PII__ENTITIES": "[' PERSON', EMAIL_ADDRESS]"}).pii.entities == [
        "PERSON", "EMAIL_ADDRESS"]


def test_out_of_range_date_is_redacted_not_a_crash():
    p = pii.Pseudonymizer(date_offset_days=5)
    assert p.shift_date("9999-12-31") == "<DATE_TIME>"
    assert p.shift_date("2021-03-04") == "2021-03-09"
