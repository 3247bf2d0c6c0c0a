"""Keys from content: two crawls of an unchanged site redo nothing after the crawl; a
changed page changes the keys of everything it reaches; what is published says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.artifacts import StageResult
from llmops.data import pipeline as P
from llmops.data.pipeline import publish_decision, tokens_event_extra
from llmops.records.data import TokensEvent
from llmops.records.stages import StageManifest
from tests.stage_fixture import BAKERY, PAGES, crawl_stage, fixture_config

SECOND_HALF = ("redact", "qa", "tokenizer", "tokens")


def _chain(cfg, crawl) -> dict[str, StageResult]:
    out = {"crawl": crawl, "extract": P.extract_stage(cfg, crawl.path)}
    out["clean"] = P.clean_stage(cfg, out["extract"].path)
    out["dedup"] = P.dedup_stage(cfg, [out["clean"].path])
    out["redact"] = P.redact_stage(cfg, out["dedup"].path)
    out["qa"] = P.qa_stage(cfg, out["redact"].path)
    out["tokenizer"] = P.tokenizer_stage(cfg, out["redact"].path)
    out["tokens"] = P.encode_stage(cfg, out["redact"].path, out["tokenizer"].path)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cfg = fixture_config(tmp_path_factory.mktemp("home"))
    first = _chain(cfg, crawl_stage(cfg, "run-1", fetched_at="2026-01-01T00:00:00.000Z"))
    # The same site a week later: every page answered 304, stored in another order, met by
    # other links.
    again = _chain(cfg, crawl_stage(cfg, "run-2", fetched_at="2026-01-08T09:30:00.000Z", not_modified=True,
                                    reverse=True))
    bakery = PAGES["/articles/bakery"].replace(BAKERY[0], BAKERY[0].replace("rye bread", "rye and wheat bread"))
    edited_pages = PAGES | {"/articles/bakery": bakery}  # the text of a Q&A answer changed
    edited = _chain(cfg, crawl_stage(cfg, "run-3", edited_pages))
    return {"cfg": cfg, "first": first, "again": again, "edited": edited}


def test_two_crawls_of_the_same_content_reuse_every_later_stage(runs):
    first, again = runs["first"], runs["again"]
    assert again["crawl"].key != first["crawl"].key and not again["crawl"].reused  # a new observation
    assert again["crawl"].content_hash == first["crawl"].content_hash  # 304s count as the same pages
    for stage in ("extract", "clean", "dedup", *SECOND_HALF):
        assert again[stage].key == first[stage].key and again[stage].reused, stage
        assert again[stage].path == first[stage].path


def test_a_changed_page_changes_every_key_it_reaches(runs):
    first, edited = runs["first"], runs["edited"]
    for stage in ("crawl", "extract", "clean", "dedup", *SECOND_HALF):
        assert edited[stage].content_hash != first[stage].content_hash, stage
    for stage in ("extract", "clean", "dedup", *SECOND_HALF):
        assert edited[stage].key != first[stage].key and not edited[stage].reused, stage


def test_a_rebuild_from_another_crawl_has_the_same_content(runs, tmp_path: Path):
    """Built again from the second crawl (other fetch times, order and links, which flow
    through to the redacted corpus), every output differs in bytes, not in content."""
    cfg, first, crawl = runs["cfg"], runs["first"], runs["again"]["crawl"]
    extract = P.extract_stage(cfg, crawl.path, out_dir=tmp_path / "extract")
    clean = P.clean_stage(cfg, extract.path, out_dir=tmp_path / "clean")
    dedup = P.dedup_stage(cfg, [clean.path], out_dir=tmp_path / "dedup")
    redact = P.redact_stage(cfg, dedup.path, out_dir=tmp_path / "redact")
    for stage, result in {"extract": extract, "clean": clean, "dedup": dedup, "redact": redact}.items():
        assert not result.reused, stage
        assert result.manifest.outputs != first[stage].manifest.outputs, stage  # fetched_at differs
        assert result.content_hash == first[stage].content_hash, stage


# ---- what is published ----------------------------------------------------------------


def _extra(chain: dict[str, StageResult], card: str = "/cards/1") -> TokensEvent:
    key = card.rsplit("/", 1)[-1]
    card_result = StageResult("data_card", Path(card), key, False, StageManifest.model_construct(stage="data_card",
                                                                                                key=key))
    return tokens_event_extra(chain["tokens"], chain["tokenizer"], chain["qa"], card_result)


def test_tokens_are_published_only_when_shards_pairs_or_tokenizer_change(runs):
    published = _extra(runs["first"])
    assert published.content == {"shards": runs["first"]["tokens"].content_hash,
                                    "vocab": runs["first"]["tokenizer"].content_hash,
                                    "qa": runs["first"]["qa"].content_hash}
    # Airflow's secrets masker hides any key containing "token" in the UI and REST API
    assert not [k for k in [*published.dump(), *published.content] if "token" in k]
    first = publish_decision(published, None)
    assert first.publish and first.changed == ("qa", "shards", "vocab")

    same = publish_decision(_extra(runs["again"], card="/cards/2"), published)
    assert not same.publish and same.changed == ()
    assert same.reason == "no new data since data card /cards/1: qa, shards, vocab unchanged"
    assert same.last_data_card == "/cards/1"

    new = publish_decision(_extra(runs["edited"], card="/cards/3"), published)
    assert new.publish and new.changed == ("qa", "shards", "vocab")

    old_event = {k: v for k, v in published.dump().items() if k != "content"}  # published before digests
    assert publish_decision(_extra(runs["again"]), old_event).publish


def test_corpus_and_qa_events_carry_their_content(runs):
    first, again, edited = runs["first"], runs["again"], runs["edited"]
    corpus = P.corpus_event_extra(first["redact"])
    assert corpus.path == str(first["redact"].path) and corpus.file == "corpus.parquet"
    assert not publish_decision(P.corpus_event_extra(again["redact"]), corpus).publish
    assert publish_decision(P.corpus_event_extra(edited["redact"]), corpus).changed == ("corpus",)
    qa = P.qa_event_extra(first["qa"])
    assert not publish_decision(P.qa_event_extra(again["qa"]), qa).publish
    assert publish_decision(P.qa_event_extra(edited["qa"]), qa).publish
