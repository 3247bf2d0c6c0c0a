"""The evaluation's and the registry's records: each round-trips and refuses an unknown field;
files written before records (version 0) read, ``llmops_model.json`` inside a registered
MLflow version included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmops.config import load_config
from llmops.records.base import Record, RecordError
from llmops.records.common import Ref
from llmops.records.evaluation import (
    AlreadyRegistered,
    CandidateEvaluation,
    EvalMetrics,
    EvaluatedOn,
    EvaluationReport,
    GateCheck,
    GateResult,
    ModelLineage,
    PiiCanary,
    RegisteredVersion,
    load_evaluation,
)
from llmops.records.training import ModelInfo

V0 = Path(__file__).resolve().parents[1] / "data" / "records_v0"

METRICS = EvalMetrics(perplexity=198.07, bits_per_byte=1.97, bleu=0.85, rouge1=0.13, rouge2=0.01, rougeL=0.128,
                      exact_match=0.0, distinct_1=0.37, distinct_2=0.83, latency_s_p50=0.015, latency_s_p95=0.016,
                      tokens_per_s=1480.2, pii_leak_rate=0.0, behaviour_pass_rate=1.0, eval_data_hash="56ba6f2b")
GATE = GateResult(passed=False, champion_compared=True, checks=[
    GateCheck(name="floor.pii_leak_rate.max", metric="pii_leak_rate", kind="floor", passed=True, value=0.0,
              threshold=0.0),
    GateCheck(name="regression.rougeL", metric="rougeL", kind="regression", passed=False, value=0.128,
              threshold=0.02, champion=0.16),
    GateCheck(name="floor.bleu.min", metric="bleu", kind="floor", passed=False, value=None, threshold=1.0)])
LINEAGE = ModelLineage(data_card_hash="86bdf976", tokenizer_hash=None, base_model="from scratch", training_run="abc",
                  code_version="git:497122ee1ec9", eval_data_hash="56ba6f2b", champion_compared="models:/llmops/1")
EVALUATION = CandidateEvaluation(name="llmops", model_dir="/m", run_id="r1", metrics=METRICS, gate=GATE,
                                 gate_passed=GATE.passed, gate_message=GATE.failure_message(), gate_tags=GATE.tags(),
                                 lineage=LINEAGE, report="/reports/evaluation/k/report.md",
                                 model_card="/reports/evaluation/k/model_card.md")
ALREADY = AlreadyRegistered(name="llmops", model_dir="/m", already_registered="models:/llmops/1",
                            message="/m: already registered as models:/llmops/1")
RECORDS: list[Record | Ref] = [
    METRICS, EvalMetrics(eval_data_hash="x", bits_per_byte=None), GATE, GATE.checks[1], LINEAGE,
    PiiCanary(type="PHONE_NUMBER", value="555-867-5309"),
    PiiCanary(type="PERSON", value="Jane Roe", page="/docs/a.html", where="comment"),
    EvaluatedOn(tokens="/t", heldout="/h", cases="/c", canaries="demo site ground truth", n_canaries=3, questions=4),
    EvaluationReport(model="/m", metrics=METRICS, champion=METRICS, gate=GATE),
    EvaluationReport(model="/m", metrics=METRICS), EVALUATION, ALREADY,
    RegisteredVersion(name="llmops", version="2", model_uri="models:/llmops/2", report="/r/report.md", run_id="r1"),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_every_record_round_trips_through_json(record):
    text = json.dumps(record.model_dump(mode="json"))  # an XCom or a file: JSON on the way
    assert type(record).model_validate(json.loads(text)) == record
    if isinstance(record, Record):
        assert type(record).load(json.loads(json.dumps(record.dump()))) == record


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_every_record_refuses_an_unknown_field(record):
    data = record.model_dump(mode="json") | {"renamed_field": 1}
    with pytest.raises((ValidationError, RecordError), match="renamed_field"):
        if isinstance(record, Record):
            type(record).load(data)
        else:
            type(record).model_validate(data)


def test_the_report_file_round_trips_and_a_file_of_todays_code_reads(tmp_path):
    report = EvaluationReport(model="/m", metrics=METRICS, champion=None, gate=GATE)
    assert EvaluationReport.read(report.write(tmp_path)) == report
    old = EvaluationReport.read(V0 / "evaluation_metrics.json")  # metrics.json as written before records
    assert old.schema_version == 1 and old.gate is not None and old.gate.passed
    assert old.metrics.rougeL == pytest.approx(0.12778077292127768) and old.champion is None
    assert [c.name for c in old.gate.checks][0] == "floor.behaviour_pass_rate.min"
    renamed = json.loads((V0 / "evaluation_metrics.json").read_text())
    renamed["metrics"]["rouge_l"] = renamed["metrics"].pop("rougeL")
    (tmp_path / "renamed.json").write_text(json.dumps(renamed))
    with pytest.raises(RecordError, match=r"renamed.json .*metrics.rouge_l"):
        EvaluationReport.read(tmp_path / "renamed.json")


def test_the_evaluate_tasks_xcom_is_either_kind():
    assert load_evaluation(json.loads(json.dumps(EVALUATION.dump()))) == EVALUATION
    assert load_evaluation(json.loads(json.dumps(ALREADY.dump()))) == ALREADY
    with pytest.raises(RecordError, match="CandidateEvaluation"):
        load_evaluation({"name": "llmops", "model_dir": "/m"})


def test_lineage_tags_say_none_where_a_value_is_missing():
    assert LINEAGE.tags()["tokenizer_hash"] == "None"  # as the version tags have always read
    # A retraining's base version and drift report are tagged only on a retrained model.
    assert set(LINEAGE.tags()) == set(ModelLineage.model_fields) - set(ModelLineage.TAG_NAMES)
    retrained = LINEAGE.model_copy(update={"base_version": "1", "drift_report": "/h/drift.json"})
    assert retrained.tags()["llmops.base_version"] == "1"
    assert retrained.tags()["llmops.drift_report"] == "/h/drift.json"
    assert GATE.tags()["gate.floor.bleu.min"] == "failed: bleu missing (floor: >= 1)"


def test_a_bad_canaries_file_fails_before_anything_is_evaluated(tmp_path):
    from llmops.evaluation.evaluate import EvaluationInputError, resolve_eval_data

    cfg = load_config(environ={}, overrides={"home": str(tmp_path / "home")})
    canaries = tmp_path / "canaries.json"
    canaries.write_text(json.dumps([{"kind": "PHONE_NUMBER", "value": "555"}]))
    with pytest.raises(EvaluationInputError, match=r"canaries.json: expected a JSON list of \{type, value\}"):
        resolve_eval_data(cfg, tmp_path, tokens=tmp_path, heldout=tmp_path, canaries=canaries)


def test_the_evaluation_data_comes_from_the_lineage_of_todays_files(tmp_path):
    """``llmops_model.json`` -> its data card's manifest -> token shards and held-out pairs."""
    from llmops.evaluation.evaluate import EvaluationInputError, resolve_eval_data

    cfg = load_config(environ={}, overrides={"home": str(tmp_path / "home")})
    manifest = json.loads((V0 / "data_card_manifest.json").read_text())
    for name in ("tokens", "qa"):  # the stage outputs it names, moved here
        manifest["inputs"][name]["path"] = str(tmp_path / name)
        (tmp_path / name).mkdir()
    (tmp_path / "qa" / "heldout.jsonl").write_text("")
    card = tmp_path / "card"
    card.mkdir()
    (card / "manifest.json").write_text(json.dumps(manifest))
    model = tmp_path / "model"
    model.mkdir()
    info = json.loads((V0 / "finetune_llmops_model.json").read_text())
    info["data_card"]["path"] = str(card)
    (model / "llmops_model.json").write_text(json.dumps(info))
    canaries = tmp_path / "canaries.json"
    canaries.write_text(json.dumps([{"type": "PHONE_NUMBER", "value": "555-867-5309"}]))
    data = resolve_eval_data(cfg, model, canaries=canaries)
    assert (data.tokens, data.heldout) == (tmp_path / "tokens", tmp_path / "qa" / "heldout.jsonl")
    assert data.canaries == [PiiCanary(type="PHONE_NUMBER", value="555-867-5309")]
    with pytest.raises(EvaluationInputError, match="names no data card"):
        resolve_eval_data(cfg, tmp_path, canaries=canaries)  # no llmops_model.json: a base model


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_llmops_model_json_of_todays_code_reads_from_a_registered_version(kind, tmp_path, monkeypatch):
    from llmops.registry import model_registry as reg, tracking
    from llmops.registry.model_card import model_info, render_model_card

    monkeypatch.chdir(tmp_path)  # MLflow must not write ./mlruns into the checkout
    cfg = load_config(environ={}, overrides={"home": str(tmp_path / "home")})
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64}))
    (model / "model.safetensors").write_bytes(kind.encode() * 8)
    shutil.copyfile(V0 / f"{kind}_llmops_model.json", model / "llmops_model.json")
    run_id = tracking.job_run(cfg, f"evaluate-{kind}", f"evaluate-{kind}", parent_run_id=None)
    version = reg.register_model(cfg, model, run_id, tags={"gate_result": "passed"})

    served = reg.download(cfg, f"models:/llmops/{version}", tmp_path / "served")
    info = model_info(served)
    assert info == ModelInfo.read(V0 / f"{kind}_llmops_model.json") and info is not None
    assert info.kind == kind and info.schema_version == ModelInfo.current_version()
    card = render_model_card(served, METRICS, GATE, name="llmops", version=version)
    assert f"{info.parameters:,} parameters" in card and info.run_dir in card
    (served / "llmops_model.json").unlink()  # a base model: no lineage, still a card
    assert model_info(served) is None
    assert "not recorded" in render_model_card(served, METRICS, GATE, name="llmops")
