"""Serving records (round trip, unknown fields, files written before records), the deploy
report through the keyed-output API, and config.pbtxt rendered from Triton's protobuf."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from pydantic import BaseModel
from tritonclient.grpc import model_config_pb2

from llmops import artifacts
from llmops.config import load_config
from llmops.records.base import Record, RecordError
from llmops.records.common import Ref
from llmops.records.serving import (
    Answer,
    DeployResult,
    ModelState,
    RegistryFacts,
    ServedModelInfo,
    ServerPidFile,
    ServerStatus,
    SmokeAnswer,
)
from llmops.serving import repository, tensors
from llmops.serving.client import build_inputs
from llmops.serving.deploy import write_deploy_report

DATA = Path(__file__).parent / "data"
SMOKE = SmokeAnswer(protocol="grpc", question="What is x?", text="A name.", model_version="3", prompt_tokens=9,
                    completion_tokens=3)
DEPLOYED = DeployResult(name="llmops", version=3, model_uri="models:/llmops/3", previous=2, status="deployed",
                        smoke=[SMOKE], live=["3", "3", "3"])
EXAMPLES: list[BaseModel] = [
    RegistryFacts(model_uri="models:/llmops/3", version="3", gate_result="passed"),
    ServedModelInfo(name="llmops", triton_version=3, version="3", model_uri="models:/llmops/3", run_id="r"),
    ModelState(name="llmops", version="3", state="READY"),
    ServerStatus(running=True, pid=12, http_url="http://h:1", grpc_url="grpc://h:2", metrics_url="http://h:3/metrics",
                 ready=True, models=[ModelState(name="llmops", version="", state="")], log_path="/x/server.log",
                 repository="/x/models"),
    ServerPidFile(pid=12, started=1.5, host="127.0.0.1", http_port=1, grpc_port=2, metrics_port=3,
                  repository="/x/models", log="/x/server.log", started_at="2026-01-01T00:00:00+0000"),
    Answer(text="A name.", model_version="3", prompt_tokens=9, completion_tokens=3),
    SMOKE,
    DEPLOYED,
]


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: type(r).__name__)
def test_every_serving_record_round_trips_and_rejects_an_unknown_field(record: BaseModel, tmp_path: Path) -> None:
    data = record.model_dump(mode="json")
    if isinstance(record, Record):
        assert type(record).load(json.loads(json.dumps(record.dump()))) == record
        assert type(record).read(record.write(tmp_path / "record.json")) == record
        with pytest.raises(RecordError, match="renamed"):
            type(record).load({**data, "renamed": 1})
    else:
        assert isinstance(record, Ref | RegistryFacts)
        assert type(record).model_validate_json(record.model_dump_json()) == record
        with pytest.raises(ValueError, match="renamed"):
            type(record).model_validate({**data, "renamed": 1})


def test_files_written_before_records_are_read() -> None:
    """model_info.json and the deploy report as llmops wrote them before records (version 0)."""
    info = ServedModelInfo.read(DATA / "model_info_v0.json")
    assert (info.name, info.triton_version, info.version, info.gate_result) == ("llmops", 3, "3", "passed")
    # Versions built without registry facts stored the Triton version as an int.
    assert ServedModelInfo.load({"name": "m", "triton_version": 2, "version": 2}).version == "2"
    report = DeployResult.read(DATA / "deploy_report_v0.json")
    assert (report.status, report.previous, report.smoke[1].protocol, report.live) == ("deployed", 2, "grpc",
                                                                                      ["3", "3", "3"])
    # The JSON keeps today's keys, plus schema_version.
    assert set(report.dump()) == set(json.loads((DATA / "deploy_report_v0.json").read_text())) | {"schema_version"}
    assert set(info.dump()) == set(json.loads((DATA / "model_info_v0.json").read_text())) | {"schema_version"}


def test_deploy_report_is_a_keyed_output_with_a_manifest_and_latest_is_the_newest(tmp_path: Path) -> None:
    cfg = load_config(environ={}, overrides={"home": str(tmp_path)})
    report = write_deploy_report(cfg, DEPLOYED)
    assert report.path.parent == cfg.layout.reports("llmops_deploy") and not report.reused
    assert artifacts.read_manifest(report.path).stage == "deploy"
    assert DeployResult.read(report.path) == DEPLOYED
    assert DeployResult.read(cfg.layout.latest_report("llmops_deploy")) == DEPLOYED
    # The same deployment reported again finds its report; another one gets its own.
    assert write_deploy_report(cfg, DEPLOYED).reused
    rolled_back = DEPLOYED.model_copy(update={"version": 2, "previous": 3, "status": "rolled back"})
    other = write_deploy_report(cfg, rolled_back)
    assert other.path != report.path and DeployResult.read(cfg.layout.latest_report("llmops_deploy")) == rolled_back
    assert not [p for p in cfg.layout.reports("llmops_deploy").iterdir() if p.name.startswith(".")]


CASES = json.loads((DATA / "config_pbtxt" / "cases.json").read_text())


@pytest.mark.parametrize("case", sorted(CASES["cases"]))
def test_rendered_config_equals_the_string_built_one_field_by_field(case: str, tmp_path: Path) -> None:
    """tests/serving/data/config_pbtxt/<case>.pbtxt is what the string-concatenating renderer
    wrote for the shipped configurations (served, staging, compose's GPU, the benchmark's), which
    predate the inference log: with the log on, its four parameters are the only difference."""
    spec = CASES["cases"][case]
    serving = {**CASES["base"], **spec["serving"]}
    with_log = load_config(environ={}, overrides={"home": str(tmp_path), "serving": serving})
    logged = text_format.Parse(repository.render_config(with_log, spec["name"], **spec["kwargs"]),
                               model_config_pb2.ModelConfig())
    assert {"inference_log_dir", "drift_top_k", "inference_log_queue", "inference_log_retention_s"} <= set(
        logged.parameters)
    cfg = load_config(environ={}, overrides={"home": str(tmp_path), "serving": serving,
                                             "monitor": {"inference_log": False}})
    rendered = text_format.Parse(repository.render_config(cfg, spec["name"], **spec["kwargs"]),
                                 model_config_pb2.ModelConfig())
    today = text_format.Parse((DATA / "config_pbtxt" / f"{case}.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert rendered.ListFields() == today.ListFields()  # every field set, with presence (an empty dynamic_batching)
    assert rendered == today


def test_tensor_names_are_declared_once_for_builder_model_and_client() -> None:
    backend = repository.load_backend()
    mc = repository.model_config(load_config(environ={}), "llmops")
    assert [i.name for i in mc.input] == [t.name for t in backend.tensors.INPUTS] == [t.name for t in tensors.INPUTS]
    assert [o.name for o in mc.output] == [t.name for t in backend.tensors.OUTPUTS]
    # The optional inputs set GenerationRequest's fields of the same name.
    assert {t.name for t in tensors.INPUTS if t.optional} <= set(backend.GenerationRequest.__dataclass_fields__)
    sent = build_inputs("q", max_tokens=3, temperature=0.5, top_p=0.9, seed=1)
    assert [(i.name(), i.datatype()) for i in sent] == [(t.name, t.datatype) for t in tensors.INPUTS]
