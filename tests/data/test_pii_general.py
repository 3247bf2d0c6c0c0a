"""PII redaction beyond the demo site's templates: the forms the evaluation set's dev and dev2
halves taught (addresses of every US form, street lines, international and E.164 phones,
credentials by vendor and by position, names by combined signals, record labels and other
mentions) and the over-redaction it must not do (titles, products, look-alike numbers).

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


# --------------------------------------------------------------------------- dev2: what the second tuning half taught


@pytest.mark.parametrize(("text", "address"), [
    ("She lives next door at 635A Roberson Ave. — call her.", "635A Roberson Ave."),
    ("Street Address: 97746 Meadow Dr NE Suite 1132\nCity: Reno", "97746 Meadow Dr NE Suite 1132"),
    ('"line1": "212A County Road 341", "city": "Austin"', "212A County Road 341"),
    ("Ship it to 92856 Cedar Hwy Portland ME 37926-3062 today", "92856 Cedar Hwy Portland ME 37926-3062"),
    ("premises at 4290 Jones Lane, Jessicaburgh, Nevada (the Premises)", "4290 Jones Lane, Jessicaburgh, Nevada"),
    ("Lives alone at HC 97 Box 756 Lake Mikeburgh AK 99919. Seen", "HC 97 Box 756 Lake Mikeburgh AK 99919"),
    ("LOCATION:Unit 8573 Box 2767 APO AP 96400\n", "Unit 8573 Box 2767 APO AP 96400"),
])
def test_street_lines_and_addresses_without_commas_or_zip_are_locations(text, address):
    assert ("LOCATION", address) in _found(text)


@pytest.mark.parametrize("text", ["Error 404 Not Found on 3 Main servers", "Room 12 Park is closed",
                                  "Chapter 7 Cedar Notes"])
def test_a_number_and_capitalised_words_without_a_street_suffix_are_no_address(text):
    assert [f for f in _found(text) if f[0] == "LOCATION"] == []


@pytest.mark.parametrize("phone", ["+14155281537", "831 219-9400", "(473)733-8027", "+61 437 386 186"])
def test_e164_and_mixed_separator_phone_numbers_are_found(phone):
    assert ("PHONE_NUMBER", phone) in _found(f"Call back on {phone}, please.")


def test_meeting_and_conference_ids_are_not_phone_numbers():
    assert _found("Dial-in: conference ID 281 105 5737, meeting ID 421 9289 5070") == []


def test_a_tax_id_column_and_a_social_make_nine_digits_ssns():
    csv = "emp_no;last_name;first_name;tax_id\n4397;Zahn;Alberto;782608905\n"
    assert ("US_SSN", "782608905") in _found(csv)
    assert ("US_SSN", "482518423") in _found("The last four of your social won't do.\nCALLER: Sure, it's 482518423.")


def test_short_and_long_card_numbers_count_only_after_a_card_word():
    assert ("CREDIT_CARD", "639093408909") in _found('{"pan":"639093408909"}')  # Maestro, 12 digits
    assert ("CREDIT_CARD", "4353425074916877948") in _found('card="4353425074916877948"')  # Visa, 19 digits
    assert _found("Shipment 639093408909 left the depot.") == []


@pytest.mark.parametrize(("text", "secret"), [
    ("export CI_TOKEN=glpat-UxSNwXfUW1GhXW6VS_BS", "glpat-UxSNwXfUW1GhXW6VS_BS"),
    ("value: 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",
     "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"),
    ("  - name: DB_PASSWORD\n    value: \"walrus-nebula-walrus\"", "walrus-nebula-walrus"),
    ('db_admin_pass    = "q6@V!mw+@w(LOm"', "q6@V!mw+@w(LOm"),
    ("curl -u admin:biscuit@1992 https://10.1.2.3:9200/", "biscuit@1992"),
    ("mysql -h db -u root -p'CopperPelican49' billing", "CopperPelican49"),
    ("AccountName=acme;AccountKey=ey6N1hJpMpzlfN5UrivbTDa3BPDZgfpNcxev==;EndpointSuffix=x",
     "ey6N1hJpMpzlfN5UrivbTDa3BPDZgfpNcxev=="),
    ("the shared mailbox password is harbor-juniper-copper-walrus until IT rotates it",
     "harbor-juniper-copper-walrus"),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----",
     "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"),
])
def test_vendor_keys_key_bodies_and_passwords_by_position_are_secrets(text, secret):
    assert ("SECRET", secret) in _found(text)


def test_password_paths_and_prose_about_passwords_are_not_secrets():
    text = ("  - name: DB_PASSWORD_FILE\n    value: /run/secrets/db_password\n"
            "The password is incorrect, and password: required.")
    assert [f for f in _found(text) if f[0] == "SECRET"] == []


@pytest.mark.parametrize(("text", "names"), [
    ("emp_no;last_name;first_name;dept\n4397;Zahn-Döhn;Alberto;Sales\n", {"Zahn-Döhn", "Alberto"}),
    ('{"customer": {"firstName": "Joris", "lastName": "Galdikas"}}', {"Joris", "Galdikas"}),
    ('<label>Full name</label><input name="fullName" value="Kolawole Owokoniran">', {"Kolawole Owokoniran"}),
    ("BEGIN:VCARD\nFN:Patrik Eriksson\nN:Eriksson;Patrik;;;\nEND:VCARD", {"Patrik Eriksson", "Eriksson", "Patrik"}),
    ("ORGANIZER;CN=Antonio Wade:mailto:a@x.org", {"Antonio Wade"}),
    ("<tr><th>Name</th><th>Role</th></tr>\n<tr><td>Dean Ó Muilcín</td><td>Staff Engineer</td></tr>",
     {"Dean Ó Muilcín"}),
    ("  - name: ONCALL_CONTACT\n    value: \"Adweta More\"", {"Adweta More"}),
])
def test_names_a_record_labels_are_found_whatever_they_look_like(text, names):
    assert names <= {value for entity, value in _found(text) if entity == "PERSON"}


@pytest.mark.parametrize(("text", "names"), [
    ("Asamoa, Josiah (External)  10:32 AM\nMorning!", {"Asamoa", "Josiah"}),
    ("Affected user: Dugar, Kamala\nSummary: locked out", {"Dugar", "Kamala"}),
    ("Standup — present: Azettin, Omisha, James\n- Azettin: finished the upgrade", {"Azettin", "Omisha", "James"}),
    ("Hi, yes, my name is Nkazimulo Shandu.\nAGENT: Thanks Nkazimulo.", {"Nkazimulo Shandu", "Nkazimulo"}),
    ("Selina,\n\nI came across your profile.\n\n— Outi", {"Selina", "Outi"}),
    ("Eliabeth Agyapong, 67, who runs the pantry, thanked volunteers.", {"Eliabeth Agyapong"}),
    ("This Lease is made between Sibongile Thumbeza (\"Landlord\") and us.", {"Sibongile Thumbeza"}),
    ("Deputy Howard of the sheriff's office; paged Lori on the phone; Erik's mom called.", {"Howard", "Lori", "Erik"}),
    ("    Reviewed-by: Tekecan Şener", {"Tekecan Şener"}),
])
def test_names_are_found_by_layout_and_by_their_other_mentions(text, names):
    assert names <= {value for entity, value in _found(text) if entity == "PERSON"}


@pytest.mark.parametrize("text", [
    "BILL TO:\nACME CORP",
    "Closed for Martin Luther King Jr. Day and Presidents' Day.",
    "Follow-up of Bell's palsy and Crohn's disease.",
    "Welcome to the Customer Advisory Council and the Apollo Program.",
    "Patient Name (Last, First MI):",
])
def test_labels_holidays_eponyms_and_councils_are_not_people(text):
    assert [f for f in _found(text) if f[0] == "PERSON"] == []
