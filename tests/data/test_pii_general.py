"""PII redaction beyond the demo site's templates: the forms the evaluation set's dev half
taught (addresses of every US form, international phones, credentials, names by combined
signals) and the over-redaction it must not do (titles, products, look-alike numbers).

The numbers are in ``bench/pii_eval.py``'s scorer; these are the cases behind them, so a
regression names the form it broke.
"""

from __future__ import annotations

import pytest

from llmops.config import PiiConfig
from llmops.data import pii
from llmops.data.qa import questions_for
from llmops.demo_site.build import PYDOC_TOPICS, parse_topic

pytestmark = pytest.mark.timeout(120)

CFG = PiiConfig(processes=1)


def _found(text: str) -> list[tuple[str, str]]:
    (results,) = pii.analyze_texts([text], CFG)
    return [(r.entity_type, text[r.start:r.end]) for r in results]


def test_demo_site_titles_and_their_questions_come_back_unchanged():
    """Deliverable 4 of issue 16: no page title of the demo site, nor a question the Q&A set
    asks about it, loses a word to PERSON (or any other type): none of them names a person."""
    titles = sorted({parse_topic(text)[0] for text in PYDOC_TOPICS.values()})
    texts = titles + [q for title in titles for q in questions_for(title)]
    assert len(titles) > 50
    redacted = pii.redact_texts(texts, CFG)
    changed = [(text, out) for text, (out, _) in zip(texts, redacted, strict=True) if out != text]
    assert changed == []


@pytest.mark.parametrize("address", [
    "PO Box 60323, Fresno, CA 93351-6690",
    "P.O. Box 79404, Charleston, WV 24976",
    "Rural Route 3, Box 443, Springfield, ME 04360",
    "7184 Oak Avenue, Suite 1682, Lakeview, Louisiana 51532-1439",
    "94268 Lake Lane\nRm 2156\nColumbus, OH 17883",
    "34374 S RIDGE ST\nRM 1011\nPORT VICTORIA, OK 73094",
    "Unit 5016 Box 8401, APO AP 96503",
    "PSC 8082, Box 3875, APO AA 34040",
    "USS Nimitz (CVN 68), FPO AP 96671",
    "22234 Birch Trail #23, New Scott CO 58348",
])
def test_a_us_postal_address_of_every_form_is_one_location(address):
    text = f"Ship it to {address}. Thanks!"
    assert ("LOCATION", address) in _found(text)


@pytest.mark.parametrize("phone", ["+44 20 7946 0958", "+49 (0)89 1234567", "+81 3-5873-9665", "+33 1 55 52 40 25",
                                   "+91-80-0169-8959", "1-212-656-1780", "020 9410 4782", "0044 20 7946 0958",
                                   "(+44) 20 7946 0958"])
def test_international_and_national_phone_numbers_are_found(phone):
    assert ("PHONE_NUMBER", phone) in _found(f"Call me on {phone} after five.")


def test_an_ssn_shaped_number_after_the_text_names_ssns_is_an_ssn():
    text = "We need the SSN of the policyholder.\nAgent: thanks\nCustomer: sure, it's 385 17 4309 (my husband's)."
    assert ("US_SSN", "385 17 4309") in _found(text)
    assert pii.ssns_in_context("Order 385174309 ships today.") == []


@pytest.mark.parametrize("text", ["The part no. 300-842-1193 is back in stock.", "Use lot 512-34-8821 first.",
                                  "OID 1.3.6.1.4.1.83854.9 reports the fan speed.",
                                  "Parcel 9400 1071 8791 5178 7537 00 left the depot."])
def test_numbers_a_label_calls_something_else_are_left_alone(text):
    assert _found(text) == []


@pytest.mark.parametrize(("text", "secret"), [
    ('password: "Rainbow2015!"', "Rainbow2015!"),
    ("password = coffee6?", "coffee6?"),
    ("please set the password to Hunt3r%81 for now", "Hunt3r%81"),
    ("postgresql://orders_svc:f9tNLYO8EYa2D-59@db-3.internal:5432/orders", "f9tNLYO8EYa2D-59"),
    ('"Authorization": "Basic c3ZjLXdpbnRlcjpEcmFnb24yMDIxPw=="', "c3ZjLXdpbnRlcjpEcmFnb24yMDIxPw=="),
])
def test_credentials_in_configs_prose_and_urls_are_secrets(text, secret):
    assert ("SECRET", secret) in _found(text)


def test_code_assigned_to_a_credential_name_and_commit_hashes_are_not_secrets():
    text = ("password = getpass.getpass()\ntoken = os.environ['API_TOKEN']\n"
            "built from commit 8c22f02994b1b43cc7a62625599ce37dda6a4922")
    assert _found(text) == []


@pytest.mark.parametrize(("text", "name"), [
    ("Attendees: Elizabeth Ryan, Carlos Harris, Aayush Jha", "Aayush Jha"),
    ("Cardholder name ........ Anay B. Rout", "Anay B. Rout"),
    ("[12:42] Agent Osha: Sorry about that!", "Osha"),
    ("Hi Kamilly,\n\nPlease switch my deposit.", "Kamilly"),
    ("- Apolonia to book the room", "Apolonia"),
    ('7810c0d9,"Davies, Gemma",3494', "Gemma"),
    ("56616,Matthew L. Howard,howard@example.com", "Matthew L. Howard"),
    ("Hello Dr Ishikawa, thank you for booking.", "Ishikawa"),
])
def test_names_are_found_by_cues_lists_and_given_names(text, name):
    assert ("PERSON", name) in _found(text)


@pytest.mark.parametrize("text", [
    "We moved the queue to Apache Kafka and the editor to Docker Desktop.",
    "Rollback to Chrome 123.0.5596.91 done; it answers HTTP/1.1 503 Service Unavailable.",
    "Social Security Number: 044-82-5850",
    "Deployed to Asia Pacific (Tokyo) after the Bill of Materials review.",
])
def test_products_versions_regions_and_form_labels_are_not_people(text):
    assert [f for f in _found(text) if f[0] == "PERSON"] == []
