"""Every record reads what today's code and the previous version wrote, round-trips, and
refuses what it does not know.

``tests/data/records_v0/`` holds files written by llmops before records were typed
(version 0: no ``schema_version``), taken from a ``make demo`` run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.records.base import Record, RecordError
from llmops.records.stack import ComponentPidFile
from llmops.records.stages import StageManifest
from llmops.records.training import ModelInfo

V0 = Path(__file__).parent / "data" / "records_v0"

PREVIOUS_VERSION_FILES: dict[str, type[Record]] = {
    "tokens_manifest.json": StageManifest,
    "scrape_manifest.json": StageManifest,
    "data_card_manifest.json": StageManifest,
    "pretrain_model_manifest.json": StageManifest,
    "finetune_model_manifest.json": StageManifest,
    "pretrain_llmops_model.json": ModelInfo,
    "finetune_llmops_model.json": ModelInfo,
}


@pytest.mark.parametrize("name", sorted(PREVIOUS_VERSION_FILES))
def test_previous_version_file_reads_and_round_trips(name, tmp_path):
    record_type = PREVIOUS_VERSION_FILES[name]
    record = record_type.read(V0 / name)
    assert "schema_version" not in json.loads((V0 / name).read_text())
    assert record.schema_version == record_type.current_version()
    again = record_type.read(record.write(tmp_path / name))
    assert again == record
    # Nothing the old file held was lost on the way (nested references leave out unset fields).
    old = _without_none(json.loads((V0 / name).read_text()))
    assert {k: v for k, v in _without_none(again.dump()).items() if k != "schema_version"} == old


def _without_none(value):
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


@pytest.mark.parametrize("name", sorted(PREVIOUS_VERSION_FILES))
def test_unknown_field_is_refused_naming_file_and_field(name, tmp_path):
    data = json.loads((V0 / name).read_text()) | {"renamed_field": 1}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=rf"{name}.*renamed_field"):
        PREVIOUS_VERSION_FILES[name].read(path)


def test_newer_schema_version_is_refused_with_the_fix(tmp_path):
    data = json.loads((V0 / "pretrain_llmops_model.json").read_text()) | {"schema_version": 99}
    with pytest.raises(RecordError, match="newer than this llmops reads"):
        ModelInfo.load(data)


def test_missing_file_and_bad_json_are_record_errors(tmp_path):
    with pytest.raises(RecordError, match="does not exist"):
        ModelInfo.read(tmp_path)
    (tmp_path / "llmops_model.json").write_text("{not json")
    with pytest.raises(RecordError, match="is not JSON"):
        ModelInfo.read(tmp_path)


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    pid_file = ComponentPidFile(pid=1, started=2.5, argv=["airflow", "scheduler"], log="x.log", started_at="now")
    pid_file.write(tmp_path / "scheduler.pid")
    assert [p.name for p in tmp_path.iterdir()] == ["scheduler.pid"]
    assert ComponentPidFile.read(tmp_path / "scheduler.pid") == pid_file
