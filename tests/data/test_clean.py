from llmops.config import CleanConfig
from llmops.data import store
from llmops.data.clean import (
    clean_document,
    duplicate_line_fraction,
    normalize_text,
    run_clean,
    split_sentences,
    symbol_ratio,
    top_trigram_fraction,
)
from llmops.records.crawl import CleanDropped

ENGLISH = (
    "The assert statement is a convenient way to insert debugging assertions into a program. "
    "When the expression is false, an AssertionError is raised with the optional message. "
    "These checks are removed when Python runs with optimisation enabled, so they must never "
    "be used to validate data that comes from users or from the network."
)

WORDS = ("python assert statement expression debugging program raise error value module class function object "
         "attribute method import package name scope variable binding loop iterator generator yield await async "
         "context manager decorator lambda closure keyword argument default global nonlocal pass break continue "
         "return while with try except finally else elif for in is not and or").split()
GERMAN = ("Die Anweisung assert ist ein bequemer Weg, um Zusicherungen zur Fehlersuche in ein "
          "Programm einzufügen. Wenn der Ausdruck falsch ist, wird ein Fehler ausgelöst und das "
          "Programm hält an, damit der Entwickler den Fehler schnell finden und beheben kann.")


def _row(text: str, url: str = "http://x/a") -> store.ExtractDoc:
    return store.ExtractDoc(id=url, url=url, canonical_url=None, title="t", author=None, date_published=None,
                            text=text, source="x", fetched_at=None, discovered_via="link", payload_sha256=None)


def test_normalize_text_unicode_invisible_and_blank_lines():
    cfg = CleanConfig()
    raw = "ﬁle\u200b name\r\n\r\n\r\n\r\n    indented code   \n\x07end"
    assert normalize_text(raw, cfg) == "file name\n\n    indented code\nend"
    assert normalize_text("Hello World", CleanConfig(lowercase=True)) == "hello world"


def test_split_sentences_keeps_abbreviations_together():
    sents = split_sentences("Dr. Smith wrote e.g. this. It works.\nSecond line here.")
    assert sents == ["Dr. Smith wrote e.g. this.", "It works.", "Second line here."]


def test_metrics():
    assert symbol_ratio("ab!!") == 0.5
    assert duplicate_line_fraction("a\na\nb\na") == 0.5
    assert duplicate_line_fraction("+---+\na\n+---+\nb\n+---+") == 0.0  # table borders are layout
    assert top_trigram_fraction("spam spam spam " * 10) > 0.9
    assert top_trigram_fraction(ENGLISH) == 0.0


def test_good_document_is_kept_with_measurements():
    out = clean_document(_row(ENGLISH), CleanConfig())
    assert out.reason is None
    assert out.doc["lang"] == "en" and out.doc["lang_score"] > 0.9
    assert out.doc["n_sentences"] == 3 and out.doc["n_words"] > 30


def test_each_filter_drops_with_its_reason():
    cfg = CleanConfig()
    cases = {
        "length": "Too short.",
        "symbols": ENGLISH + " " + "{}[]<>#$%^&*" * 60,
        "repetition": "\n".join(["Buy cheap watches now, best prices online today!"] * 12),
        "line_punctuation": "\n".join(" ".join(WORDS[i:i + 6]) for i in range(0, 60, 3)),
        "language": GERMAN,
    }
    for reason, text in cases.items():
        out = clean_document(_row(text), cfg)
        assert out.reason == reason, (reason, out.reason, out.detail)
        assert out.detail


def test_language_filter_can_be_disabled():
    assert clean_document(_row(GERMAN), CleanConfig()).reason == "language"
    assert clean_document(_row(GERMAN), CleanConfig(languages=[])).reason is None


def test_run_clean_writes_kept_and_dropped(tmp_path):
    src = tmp_path / "in.parquet"
    store.write_docs([_row(ENGLISH, "http://x/good"), _row("tiny", "http://x/bad")], src, store.EXTRACT_SCHEMA)
    summary = run_clean(src, tmp_path, CleanConfig())
    assert summary.dump() == {"docs_in": 2, "docs_out": 1, "dropped_by_filter": {"length": 1}, "sentences": 3,
                       "chars": len(ENGLISH)}
    kept = store.read_docs(tmp_path / "docs.parquet", store.CleanDoc)
    assert [d["url"] for d in kept] == ["http://x/good"] and kept[0]["sentences"]
    (dropped,) = store.read_dropped(tmp_path / "dropped.jsonl")
    assert isinstance(dropped, CleanDropped) and dropped.url == "http://x/bad" and dropped.reason == "length"
    assert dropped.document["text"] == "tiny" and dropped.document["n_words"] == 1  # nothing is lost
