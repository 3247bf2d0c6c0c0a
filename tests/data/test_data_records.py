"""The data stages' records: each round-trips, refuses an unknown field, and reads what the
code before records wrote (``records_v0/``: files of a real run at 070b37c+issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmops.artifacts import StageResult
from llmops.data import pipeline as P
from llmops.data.qa import read_pairs
from llmops.records.base import Record, RecordError
from llmops.records.data import (
    CleanSummary,
    DataCard,
    DataCardSummary,
    DataReport,
    DedupSummary,
    DuplicateCluster,
    LatestDataReport,
    QaPair,
    QaSummary,
    RedactSummary,
    TokenizerStats,
    TokenShardMeta,
)
from llmops.records.stages import StageManifest

V0 = Path(__file__).parent / "records_v0"

# Each record and the file today's code wrote for it.
STORED: dict[type[Record], str] = {
    CleanSummary: "clean_summary.json",
    DedupSummary: "dedup_summary.json",
    RedactSummary: "redact_summary.json",
    QaSummary: "qa_summary.json",
    TokenizerStats: "tokenizer_stats.json",
    TokenShardMeta: "tokens_meta.json",
    DataCard: "data_card.json",
    DataReport: "llmops_data_summary.json",
    LatestDataReport: "llmops_data_latest.json",
}


def _stored(name: str) -> dict:
    return json.loads((V0 / name).read_text())


def _without_version(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "schema_version"}


@pytest.mark.parametrize("record", list(STORED), ids=lambda r: r.__name__)
def test_a_file_written_before_records_reads_and_writes_back_the_same_keys(record: type[Record], tmp_path: Path):
    stored = _stored(STORED[record])
    read = record.read(V0 / STORED[record])
    assert read.schema_version == record.current_version()
    # Fields added since with a null default (DataCard.retrain, .increment) are written as null.
    added = {k for k, v in read.dump().items() if v is None and k not in stored}
    assert {k: v for k, v in _without_version(read.dump()).items() if k not in added} == stored
    again = record.read(read.write(tmp_path / "again.json"))
    assert again == read


@pytest.mark.parametrize("record", list(STORED), ids=lambda r: r.__name__)
def test_an_unknown_or_missing_field_is_refused_where_it_is_read(record: type[Record]):
    stored = _stored(STORED[record])
    with pytest.raises(RecordError, match="renamed"):
        record.load(stored | {"renamed": 1}, source="a file")
    first = next(iter(stored))
    with pytest.raises(RecordError, match=first):
        record.load({k: v for k, v in stored.items() if k != first}, source="a file")


def test_meta_json_and_summaries_are_written_without_a_version():
    """meta.json is content (the tokens digest covers it): a new key would change every key after it."""
    meta = TokenShardMeta.read(V0 / "tokens_meta.json")
    assert "schema_version" not in meta.dump() and "schema_version" not in meta.model_dump_json()
    card = DataCard.read(V0 / "data_card.json")
    assert card.dump()["schema_version"] == 1 and "schema_version" not in card.dump()["tokens"]
    with pytest.raises(RecordError, match="newer"):
        TokenShardMeta.load(_stored("tokens_meta.json") | {"schema_version": 2})


def test_qa_pair_lines_read_as_written(tmp_path: Path):
    pairs = read_pairs(V0 / "qa_finetune.jsonl")
    lines = [json.loads(line) for line in (V0 / "qa_finetune.jsonl").read_text().splitlines()]
    assert [p.model_dump() for p in pairs] == lines
    with pytest.raises(ValidationError):
        QaPair.model_validate(lines[0] | {"renamed": 1})
    broken = tmp_path / "heldout.jsonl"
    broken.write_text(json.dumps({k: v for k, v in lines[0].items() if k != "answer"}) + "\n")
    with pytest.raises(RecordError, match="heldout.jsonl:1.*answer"):
        read_pairs(broken)


def test_a_nested_part_refuses_an_unknown_field():
    cluster = DuplicateCluster.model_validate({"cluster_id": "a", "representative": "http://s/a", "members": [
        {"url": "http://s/b", "reason": "exact_duplicate", "similarity": 1.0}]})
    assert DuplicateCluster.model_validate(cluster.model_dump()) == cluster
    with pytest.raises(ValidationError, match="renamed"):
        DuplicateCluster.model_validate(cluster.model_dump() | {"renamed": 1})
    summary = DataCardSummary.model_validate({"contamination": {"heldout_questions": {
        "items": 1, "contaminated": 0, "rate": 0.0, "mean_ngram_overlap": 0.1}}, "mlflow_run_id": None})
    assert DataCardSummary.load(summary.dump()) == summary
    with pytest.raises(RecordError, match="renamed"):
        DataCardSummary.load(summary.dump() | {"renamed": 1})


def _result(stage: str, key: str) -> StageResult:
    manifest = StageManifest.model_construct(stage=stage, key=key, content_hash=f"{key}-content")
    return StageResult(stage, Path(f"/a/{stage}/{key}"), key, False, manifest)


def test_asset_events_round_trip_and_refuse_an_unknown_field():
    events: list[Record] = [
        P.corpus_event_extra(_result("redact", "r")), P.qa_event_extra(_result("qa", "q")),
        P.tokens_event_extra(_result("tokens", "t"), _result("tokenizer", "v"), _result("qa", "q"),
                             _result("data_card", "d"))]
    for event in events:
        extra = json.loads(json.dumps(event.dump()))  # what Airflow stores
        assert type(event).load(extra) == event
        with pytest.raises(RecordError, match="renamed"):
            type(event).load(extra | {"renamed": 1})
