import json

from llmops.config import TokenizerConfig
from llmops.data import store
from llmops.data.decontaminate import contamination_report
from llmops.data.qa import chat_template, is_answer_sentence, questions_for, read_pairs, run_qa


def _doc(i: int, title: str, sentences: list[str]) -> dict:
    return {"id": f"doc{i}", "url": f"http://h/{i}", "title": title, "sentences": sentences}


GOOD = "Assert statements are a convenient way to insert debugging assertions into a program."


def test_questions_from_titles():
    assert questions_for('The "assert" statement')[0] == "What does the assert statement do?"
    assert questions_for("Coroutines")[0] == "What are coroutines?"
    assert questions_for("Format String Syntax")[0] == "What is format string syntax?"
    assert questions_for("The Python Null Object")[0] == "What is the Python null object?"


def test_answer_sentences_are_prose_without_pii_or_code():
    assert is_answer_sentence(GOOD)
    assert not is_answer_sentence("By <PERSON> · 2021-08-27 wrote this page about assert statements.")
    assert not is_answer_sentence("Contact <EMAIL_ADDRESS> for questions about this page and its examples.")
    assert not is_answer_sentence('assert_stmt ::= "assert" expression ["," expression] and more words here.')
    assert not is_answer_sentence("Too short.")
    assert not is_answer_sentence("Assert statements are a convenient way to insert debugging assertions:")


def test_pairs_and_split_by_page(tmp_path):
    docs = [_doc(i, f"Topic number {i}", ["By <PERSON> · 2021.", GOOD, GOOD.replace("Assert", "These")])
            for i in range(40)]
    store.write_docs([store_row(d) for d in docs], tmp_path / "corpus.parquet", store.REDACTED_SCHEMA)
    summary = run_qa(tmp_path / "corpus.parquet", tmp_path)
    fine = read_pairs(tmp_path / "finetune.jsonl")
    held = read_pairs(tmp_path / "heldout.jsonl")
    assert summary.finetune_pairs == len(fine) and summary.heldout_pairs == len(held) > 0
    assert not {p.page_id for p in fine} & {p.page_id for p in held}  # split by page
    assert all(p.answer != "By <PERSON> · 2021." for p in fine + held)
    again = tmp_path / "again"
    again.mkdir()
    run_qa(tmp_path / "corpus.parquet", again)
    assert (again / "heldout.jsonl").read_text() == (tmp_path / "heldout.jsonl").read_text()  # fixed seed


def store_row(d: dict) -> store.RedactedDoc:
    text = "\n".join(d["sentences"])
    return store.RedactedDoc(id=d["id"], url=d["url"], canonical_url=None, title=d["title"], author=None,
                             date_published=None, text=text, source="h", fetched_at=None, discovered_via="link",
                             payload_sha256=None, n_chars=len(text), n_words=len(text.split()),
                             n_sentences=len(d["sentences"]), sentences=d["sentences"], lang="en", lang_score=1.0,
                             text_sha256=d["id"], dup_cluster=d["id"], dup_count=1, pii_counts="{}")


def test_chat_template_renders_with_the_template_tokens():
    from jinja2 import Template

    cfg = TokenizerConfig()
    text = Template(chat_template(cfg)).render(
        messages=[{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}],
        add_generation_prompt=False)
    assert text == "<|user|>Q?<|end|><|assistant|>A.<|end|>"
    prompt = Template(chat_template(cfg)).render(messages=[{"role": "user", "content": "Q?"}],
                                                 add_generation_prompt=True)
    assert prompt == "<|user|>Q?<|end|><|assistant|>"


def test_contamination_report():
    train = ["the quick brown fox jumps over the lazy dog every single morning at dawn"]
    report = contamination_report(train, {
        "copied": ["The quick brown fox jumps over the lazy dog every single morning"],
        "fresh": ["an entirely different sentence about python assert statements and debugging"],
        "short": ["lazy dog every"],
    })
    assert report["copied"].rate == 1.0
    assert report["fresh"].rate == 0.0 and report["fresh"].mean_ngram_overlap == 0.0
    assert report["short"].contaminated == 1  # compared as one 3-gram
    json.dumps({name: row.model_dump() for name, row in report.items()})
