"""Every Asset event extra and XCom record round-trips through its JSON form, reads an event
published before records (no ``schema_version``), and rejects an unknown field."""

import inspect

import pytest

from llmops.records import events
from llmops.records.base import Record, RecordError

# As today's DAGs publish and return them (no schema_version).
EXAMPLES: dict[type[Record], dict[str, object]] = {
    events.CorpusEvent: {"path": "/h/artifacts/redact/ab", "hash": "ab", "file": "corpus.parquet",
                         "content": {"corpus": "c1"}},
    events.QaEvent: {"path": "/h/artifacts/qa/cd", "hash": "cd", "finetune": "finetune.jsonl",
                     "heldout": "heldout.jsonl", "content": {"qa": "q1"}},
    events.TokensEvent: {"path": "/h/artifacts/tokens/ef", "hash": "ef", "vocab": "/h/artifacts/tokenizer/12",
                         "qa": "/h/artifacts/qa/cd", "data_card": "/h/artifacts/data_card/34",
                         "data_card_hash": "34", "content": {"shards": "s", "vocab": "v", "qa": "q1"}},
    events.ModelEvent: {"path": "/h/artifacts/export/qa", "hash": "56", "variant": "qa", "mlflow_run_id": "r1",
                        "data_card": "/h/artifacts/data_card/34", "base_model": "/h/artifacts/export/base",
                        "variants": {"qa": {"path": "/h/artifacts/export/qa", "hash": "56"}}},
    events.ChallengerEvent: {"path": "/h/artifacts/export/qa", "hash": "3", "model_uri": "models:/llmops/3",
                             "version": "3", "name": "llmops", "report": "/h/reports/evaluation/x"},
    events.ChampionEvent: {"path": "/h/reports/llmops_deploy/r/deploy.json", "hash": "3",
                           "model_uri": "models:/llmops/3", "version": 3, "previous": 2},
    events.StageOutput: {"path": "/h/artifacts/clean/78", "hash": "78"},
    events.ShardSpec: {"crawl_path": "/h/artifacts/crawl/r", "shard": 1, "num_shards": 2},
}


def test_every_events_record_has_an_example():
    records = {c for _, c in inspect.getmembers(events, inspect.isclass) if issubclass(c, Record)}
    assert records - {Record} == set(EXAMPLES)
    assert {c.__name__ for c in EXAMPLES} <= set(events.__all__)


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: r.__name__)
def test_record_round_trips_as_json(record):
    value = record.load(EXAMPLES[record])  # as published before records: version 0
    dumped = value.dump()
    # Fields added since with a null default (TokensEvent.retrain) are dumped as null.
    added = {k for k, v in dumped.items() if v is None and k not in EXAMPLES[record]}
    assert {k: v for k, v in dumped.items() if k not in added} == {**EXAMPLES[record],
                                                                    "schema_version": record.current_version()}
    assert record.load(dumped) == value


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: r.__name__)
def test_record_rejects_an_unknown_field(record):
    with pytest.raises(RecordError, match="extra_field"):
        record.load({**EXAMPLES[record], "extra_field": 1})


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: r.__name__)
def test_record_rejects_a_missing_field(record):
    required = next(name for name, f in record.model_fields.items() if f.is_required())
    with pytest.raises(RecordError, match=required):
        record.load({k: v for k, v in EXAMPLES[record].items() if k != required})
