"""The incremental data run of a retraining against a registered champion (a real MLflow
SQLite registry): the documents it has not seen plus a replay sample, the Q&A set it keeps
and extends, and, end to end on the tiny crawl of ``tests/stage_fixture.py``, the
incremental data card that continues from it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from llmops.config import with_overrides
from llmops.data.qa import FINETUNE_FILE, HELDOUT_FILE, read_pairs, split_pairs
from llmops.data.store import RedactedDoc, read_docs
from llmops.records.data import DataCard, QaSummary
from llmops.records.retrain import IncrementSummary
from llmops.retrain import guards, incremental, lineage
from tests.retrain.test_lineage import (  # noqa: F401 (cfg_fixture, model_dir_fixture: fixtures)
    cfg_fixture,
    data_card,
    model_dir_fixture,
    register,
    topic_doc,
    write_corpus,
)

CHAMPION_TOPICS = ["for", "while", "with", "try", "if", "def", "class", "import"]
"""The champion's pages; with the default Q&A seed, ``for`` and ``while`` are held out."""
CHANGED = "while"
NEW_TOPICS = ["return", "yield", "raise"]
"""With the default Q&A seed, ``return`` is held out, ``yield`` and ``raise`` fine-tune."""


def _summary(result) -> IncrementSummary:
    return IncrementSummary.load(result.summary)


@pytest.fixture
def champion_docs() -> list[RedactedDoc]:
    return [topic_doc(t) for t in CHAMPION_TOPICS]


@pytest.fixture
def versions(cfg, model_dir, champion_docs) -> list[lineage.Champion]:
    """Champion v1, trained on a card holding ``champion_docs`` and their Q&A set."""
    register(cfg, model_dir, data_card(cfg, champion_docs), champion=True)
    return lineage.chain(cfg, lineage.serving_champion(cfg))


@pytest.fixture
def recrawled(tmp_path, champion_docs) -> tuple[Path, list[RedactedDoc]]:
    """Today's redacted corpus: the champion's pages, one of them changed, and three new ones."""
    changed = topic_doc(CHANGED, 2)
    new = [changed] + [topic_doc(t) for t in NEW_TOPICS]
    docs = [d for d in champion_docs if d["id"] != changed["id"]] + new
    write_corpus(docs, tmp_path / "redacted" / "corpus.parquet")
    return tmp_path / "redacted", new


# ---- increment ---------------------------------------------------------------------------


def test_the_increment_holds_the_new_and_changed_pages_and_a_replay_sample(cfg, versions, recrawled,
                                                                           champion_docs):
    redacted, new = recrawled
    result = incremental.increment_stage(cfg, redacted, versions)
    summary = _summary(result)
    unchanged = [d for d in champion_docs if d["url"] != new[0]["url"]]
    assert (summary.champion_version, summary.chain) == ("1", ["1"])
    assert (summary.known_documents, summary.corpus_documents) == (8, 11)
    assert summary.new_documents == 4
    assert sorted(summary.new_pages) == sorted(d["url"] for d in new)
    assert summary.replay_documents == round(cfg.retrain.replay_fraction * len(unchanged)) == 2

    docs = read_docs(result.path / "corpus.parquet", RedactedDoc)
    ids = [d["id"] for d in docs]
    assert len(ids) == len(set(ids)) == summary.new_documents + summary.replay_documents
    assert json.loads((result.path / incremental.NEW_DOCS_FILE).read_text()) == sorted(d["id"] for d in new)
    replay = [d for d in docs if d["id"] not in {n["id"] for n in new}]
    # the champion's documents, as it was trained on them
    assert {(d["id"], d["text"]) for d in replay} <= {(d["id"], d["text"]) for d in unchanged}
    old_text = next(d["text"] for d in champion_docs if d["url"] == new[0]["url"])
    assert old_text not in {d["text"] for d in docs}  # the changed page's old text is not replayed
    assert new[0]["text"] in {d["text"] for d in docs}

    replay_all = incremental.increment_stage(with_overrides(cfg, {"retrain": {"replay_fraction": 1.0}}), redacted,
                                             versions)
    texts = {d["text"] for d in read_docs(replay_all.path / "corpus.parquet", RedactedDoc)}
    assert texts == {d["text"] for d in unchanged + new}  # all the rest, and never the changed page's old text


def test_the_same_call_reuses_the_increment_and_another_replay_fraction_rebuilds_it(cfg, versions, recrawled):
    redacted, _ = recrawled
    first = incremental.increment_stage(cfg, redacted, versions)
    again = incremental.increment_stage(cfg, redacted, versions)
    assert (first.reused, again.reused) == (False, True)
    assert again.key == first.key and again.path == first.path

    more = incremental.increment_stage(with_overrides(cfg, {"retrain": {"replay_fraction": 0.5}}), redacted, versions)
    assert more.key != first.key and not more.reused
    assert _summary(more).replay_documents == round(0.5 * 7)


def test_an_unchanged_corpus_has_no_new_documents(cfg, versions, tmp_path, champion_docs):
    write_corpus(champion_docs, tmp_path / "same" / "corpus.parquet")
    summary = _summary(incremental.increment_stage(cfg, tmp_path / "same", versions))
    assert (summary.new_documents, summary.new_pages) == (0, [])
    assert summary.replay_documents == round(cfg.retrain.replay_fraction * len(champion_docs))


def test_documents_known_to_a_base_version_are_not_new_and_only_the_champions_own_are_replayed(cfg, model_dir,
                                                                                                 tmp_path):
    first = [topic_doc("for"), topic_doc("while"), topic_doc("with")]
    second = [topic_doc("for", 2), topic_doc("try")]  # v2's card: an increment
    register(cfg, model_dir, data_card(cfg, first))
    register(cfg, model_dir, data_card(cfg, second), base="1", champion=True)
    versions = lineage.chain(cfg, lineage.serving_champion(cfg))
    today = [topic_doc("for", 2), topic_doc("while"), topic_doc("with"), topic_doc("try"), topic_doc("if")]
    write_corpus(today, tmp_path / "today" / "corpus.parquet")

    everything = with_overrides(cfg, {"retrain": {"replay_fraction": 1.0}})
    result = incremental.increment_stage(everything, tmp_path / "today", versions)
    summary = _summary(result)
    assert (summary.chain, summary.known_documents) == (["2", "1"], 5)
    assert summary.new_pages == [topic_doc("if")["url"]]
    assert sorted(d["text"] for d in read_docs(result.path / "corpus.parquet", RedactedDoc)) == sorted(
        d["text"] for d in second + [topic_doc("if")])


# ---- qa_increment ----------------------------------------------------------------------


def test_the_qa_increment_keeps_the_champions_pairs_and_adds_the_new_pages_on_their_side(cfg, versions, recrawled,
                                                                                         champion_docs):
    redacted, new = recrawled
    increment = incremental.increment_stage(cfg, redacted, versions)
    qa = incremental.qa_increment_stage(cfg, increment, versions[0])
    finetune, heldout = read_pairs(qa.path / FINETUNE_FILE), read_pairs(qa.path / HELDOUT_FILE)

    base_ft, base_ho, _ = split_pairs(champion_docs, cfg.qa.seed, cfg.qa.heldout_fraction)
    new_ft, new_ho, _ = split_pairs(new, cfg.qa.seed, cfg.qa.heldout_fraction)
    assert base_ho and new_ho and new_ft  # the fixture puts old and new pages on both sides
    changed = new[0]["id"]
    assert finetune == [p for p in base_ft if p.page_id != changed] + new_ft
    assert heldout == [p for p in base_ho if p.page_id != changed] + new_ho
    assert {p.page_id for p in finetune}.isdisjoint(p.page_id for p in heldout)
    assert all(p in finetune + heldout for p in base_ft + base_ho if p.page_id != changed)
    assert not [p for p in finetune + heldout if "(edition 1)" in p.answer and p.page_id == changed]
    summary = QaSummary.load(qa.summary)
    assert (summary.finetune_pairs, summary.heldout_pairs) == (len(finetune), len(heldout))

    assert incremental.qa_increment_stage(cfg, increment, versions[0]).reused


# ---- end to end on the tiny crawl --------------------------------------------------------


MILL = [
    "The windmill on the ridge ground the grain of every farm in the valley until the new railway brought "
    "flour from the city.",
    "Its sails were rebuilt after the great storm, and volunteers still turn them for visitors on the first "
    "Sunday of every month.",
]
BAKERY_TODAY = ("The bakery closed for a month last winter while masons rebuilt the vault of the old oven stone by "
                "stone.")


def test_prepare_increment_writes_a_card_that_continues_from_the_champion(cfg, model_dir):
    from llmops.data import pipeline as P
    from tests.stage_fixture import BAKERY, BASE, PAGES, SETTINGS, _article, crawl_stage

    cfg = with_overrides(cfg, SETTINGS)  # the tiny crawl's settings (tests/stage_fixture.py)

    # The champion: a full data run on the tiny site, its card registered and served.
    crawl = crawl_stage(cfg, "first")
    n = cfg.data.num_shards
    extracted = [P.extract_stage(cfg, crawl.path, i, n) for i in range(n)]
    cleaned = [P.clean_stage(cfg, e.path) for e in extracted]
    corpus = P.dedup_stage(cfg, [c.path for c in cleaned])
    redacted = P.redact_stage(cfg, corpus.path)
    tokenizer = P.tokenizer_stage(cfg, redacted.path)
    champion_card = P.data_card_stage(cfg, P.build_report(crawl, extracted, cleaned, corpus), redacted,
                                      P.qa_stage(cfg, redacted.path), tokenizer,
                                      P.encode_stage(cfg, redacted.path, tokenizer.path))
    register(cfg, model_dir, champion_card.key, champion=True)

    # The site today: the bakery page rewritten, a windmill page added.
    pages = PAGES | {"/articles/bakery": _article("The Bakery", BAKERY[:2] + [BAKERY_TODAY] + BAKERY[3:]),
                     "/articles/mill": _article("The Windmill", MILL)}
    plan = guards.plan(cfg, trigger="manual", run_id="manual__1", now=dt.datetime.now(dt.UTC), active_runs={})
    assert not isinstance(plan, str), plan
    champion = lineage.serving_champion(cfg)
    said: list[str] = []
    selection = incremental.select_new(cfg, crawl_stage(cfg, "second", pages), lineage.chain(cfg, champion),
                                       say=said.append)
    assert sorted(selection.summary.new_pages) == [f"{BASE}/articles/bakery", f"{BASE}/articles/mill"]
    assert any(line.startswith("built redact") for line in said)

    data = incremental.prepare_increment(cfg, selection, plan.champion, champion, run_name="llmops_retrain")
    card = DataCard.read(data.card.path)
    assert card.retrain == plan.champion == data.event.retrain
    assert card.increment == data.summary and data.summary.new_documents == 2
    assert data.event.data_card_hash == data.card.key
    assert lineage.card_input(data.card.path, "corpus") == selection.increment.path
    reused = lineage.card_input(champion.data_card, "tokenizer") / "tokenizer.json"
    assert (Path(data.event.vocab) / "tokenizer.json").read_bytes() == reused.read_bytes()

    new_ids = set(json.loads((selection.increment.path / incremental.NEW_DOCS_FILE).read_text()))
    pairs = [p for name in (FINETUNE_FILE, HELDOUT_FILE) for p in read_pairs(Path(data.event.qa) / name)]
    champion_qa = lineage.card_input(champion.data_card, "qa")
    kept = [p for name in (FINETUNE_FILE, HELDOUT_FILE) for p in read_pairs(champion_qa / name)
            if p.page_id not in new_ids]
    assert data.summary.new_qa_pairs == sum(p.page_id in new_ids for p in pairs) > 0
    assert data.summary.base_qa_pairs == len(kept) > 0

    # Served as v2, the retrained model knows the whole site: a full data run publishes nothing.
    register(cfg, model_dir, data.card.key, base=champion.version, champion=True)
    full_qa = P.qa_stage(cfg, selection.redacted.path)
    assert lineage.nothing_new(cfg, selection.redacted.path / "corpus.parquet", full_qa.path) == (
        f"no new data since data card {data.card.path} (champion v2)")
