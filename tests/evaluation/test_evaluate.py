"""The whole evaluation on the tiny model the training tests pretrain (2 DeepSpeed ranks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmops.evaluation.evaluate import EvalData, EvaluationInputError, evaluate_model, resolve_eval_data
from llmops.records.evaluation import AlreadyRegistered, CandidateEvaluation, PiiCanary
from tests.training.fixtures import paths, qa_pairs

pytestmark = pytest.mark.slow

CANARIES = [{"type": "PHONE_NUMBER", "value": "555-867-5309"},
            {"type": "EMAIL_ADDRESS", "value": "jane.roe@example.com"}]


def test_every_gated_metric_is_measured(pretrained, data_home, tmp_path):
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(p) + "\n" for p in qa_pairs()[:6]))
    canaries = tmp_path / "canaries.json"
    canaries.write_text(json.dumps(CANARIES))
    data = resolve_eval_data(pretrained["cfg"], pretrained["model"], tokens=paths(data_home)["tokens"],
                             heldout=heldout, canaries=canaries)
    result = evaluate_model(pretrained["model"], data, max_new_tokens=12)
    metrics = result.metrics
    for key in ("perplexity", "bits_per_byte", "bleu", "rouge1", "rouge2", "rougeL", "exact_match", "distinct_1",
                "distinct_2", "pii_leak_rate", "behaviour_pass_rate"):
        assert isinstance(getattr(metrics, key), float), key
    # the same numbers the training run measured, through a different code path
    assert metrics.perplexity < 1024 and 0 < metrics.bits_per_byte < 8
    assert metrics.pii_leak_rate == 0.0 and result.leakage["canaries"] == 2
    assert metrics.eval_data_hash == data.digest()
    other = EvalData(data.tokens, data.heldout, [PiiCanary(**CANARIES[0])], data.cases_file, "x")
    assert other.digest() != data.digest()  # another evaluation set, another hash


def test_missing_inputs_are_clear(pretrained, tmp_path):
    with pytest.raises(EvaluationInputError, match="pass --tokens"):
        resolve_eval_data(pretrained["cfg"], tmp_path)
    with pytest.raises(EvaluationInputError, match="no PII canaries"):
        resolve_eval_data(pretrained["cfg"], pretrained["model"], tokens=tmp_path, heldout=tmp_path)


def test_the_gate_rejects_a_corrupted_model_and_passes_the_good_one(pretrained, data_home, tmp_path):
    """Scrambled embedding rows (what a model/tokenizer mix-up does): the gate names what broke."""
    import torch
    from safetensors.torch import load_file, save_file

    from llmops.evaluation.gate import GateThresholds, run_gate

    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(p) + "\n" for p in qa_pairs()[:4]))
    canaries = tmp_path / "canaries.json"
    canaries.write_text(json.dumps(CANARIES))
    good_dir, bad_dir = pretrained["model"], tmp_path / "corrupted"
    shutil.copytree(good_dir, bad_dir)
    weights = load_file(bad_dir / "model.safetensors")
    embed = "model.embed_tokens.weight"
    weights[embed] = weights[embed][torch.randperm(len(weights[embed]), generator=torch.Generator().manual_seed(0))]
    save_file(weights, bad_dir / "model.safetensors", metadata={"format": "pt"})

    def metrics(model_dir):
        data = resolve_eval_data(pretrained["cfg"], model_dir, tokens=paths(data_home)["tokens"], heldout=heldout,
                                 canaries=canaries)
        return evaluate_model(model_dir, data, max_new_tokens=8).metrics

    good, bad = metrics(good_dir), metrics(bad_dir)
    # Floors set between the two the way include/eval/gate.yaml's are: just beyond the good model.
    thresholds = GateThresholds.model_validate({"floors": {"bits_per_byte": {"max": good.bits_per_byte * 1.1},
                                                           "pii_leak_rate": {"max": 0.0}}})
    assert run_gate(good, None, thresholds).passed
    rejected = run_gate(bad, None, thresholds)
    assert not rejected.passed and [c.metric for c in rejected.failed] == ["bits_per_byte"]
    assert f"bits_per_byte {bad.bits_per_byte:.4g}" in rejected.failure_message()


def test_a_passing_model_is_registered_as_challenger_and_a_failing_one_is_recorded(pretrained, data_home, tmp_path,
                                                                                   monkeypatch):
    from llmops.artifacts import read_manifest
    from llmops.config import with_overrides
    from llmops.evaluation.evaluate import GateFailed, evaluate_candidate, register_candidate
    from llmops.records.evaluation import load_evaluation
    from llmops.records.training import ModelInfo
    from llmops.registry import model_registry as reg, tracking

    monkeypatch.chdir(tmp_path)
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(p) + "\n" for p in qa_pairs()[:4]))
    canaries = tmp_path / "canaries.json"
    canaries.write_text(json.dumps(CANARIES))
    lenient, strict = tmp_path / "lenient.yaml", tmp_path / "strict.yaml"
    lenient.write_text("floors:\n  pii_leak_rate: {max: 0.0}\n  bits_per_byte: {max: 8.0}\n"
                       "regression:\n  bits_per_byte: {max_regression: 0.05}\n  rougeL: {max_regression: 0.02}\n")
    strict.write_text("floors:\n  bits_per_byte: {max: 0.5}\n  pii_leak_rate: {max: 0.0}\n")
    # The fixture model has no data card: point the evaluation at the fixture data explicitly.
    from llmops.evaluation import evaluate as ev

    original = ev.resolve_eval_data
    monkeypatch.setattr(ev, "resolve_eval_data", lambda cfg, model_dir, **kw: original(
        cfg, model_dir, tokens=paths(data_home)["tokens"], heldout=heldout, canaries=canaries))
    home = tmp_path / "home"
    cfg = with_overrides(pretrained["cfg"], {"home": str(home), "evaluation": {"gate_file": str(lenient)}})

    # A failing model is recorded, not registered (first: once registered, a model is not
    # evaluated again).
    client = tracking.connect(tracking.tracking_uri(cfg))
    cfg_strict = with_overrides(cfg, {"evaluation": {"gate_file": str(strict)}})
    failed = evaluate_candidate(cfg_strict, pretrained["model"], variant="qa", served_variant="qa")
    assert isinstance(failed, CandidateEvaluation)
    assert not failed.gate_passed and "bits_per_byte" in failed.gate_message
    with pytest.raises(GateFailed, match=r"bits_per_byte [0-9.]+ \(floor: <= 0.5\)"):
        register_candidate(cfg_strict, failed)
    assert client.get_run(failed.run_id).data.tags["gate_result"] == "failed"
    assert reg.version_for(cfg, "llmops", "challenger") is None

    passed = evaluate_candidate(cfg, pretrained["model"], variant="qa", served_variant="qa")
    assert isinstance(passed, CandidateEvaluation)
    # The XCom the gate and register tasks read back (JSON, then validated).
    assert load_evaluation(json.loads(json.dumps(passed.dump()))) == passed
    registered = register_candidate(cfg, passed)
    assert registered.model_uri == "models:/llmops/1" and reg.version_for(cfg, "llmops", "challenger") == "1"
    report_dir = Path(passed.report).parent  # a keyed output: manifest written last, nothing staged in it
    assert read_manifest(report_dir).stage == "evaluation" and not (report_dir / "model").exists()
    assert {"metrics.json", "report.md", "report.html", "metric_bars.png", "model_card.md"} <= set(
        read_manifest(report_dir).outputs)
    assert not list(report_dir.parent.glob(".tmp-*"))
    run = client.get_run(passed.run_id)
    assert {"bits_per_byte", "perplexity", "bleu", "rougeL", "pii_leak_rate", "behaviour_pass_rate"} <= set(
        run.data.metrics)
    version = client.get_model_version("llmops", "1")
    assert version.tags["gate_result"] == "passed" and version.run_id == passed.run_id
    assert version.tags["content_sha256"] == reg.content_sha256(pretrained["model"])
    served = reg.download(cfg, "models:/llmops@challenger", tmp_path / "served")
    assert (served / "MODEL_CARD.md").read_text().startswith("# Model card: llmops")
    assert (served / "config.json").exists() and (served / "tokenizer.json").exists()
    assert ModelInfo.read(served) == ModelInfo.read(pretrained["model"])  # its lineage travels with it

    # One model, one version: the registered content is not evaluated again.
    repeat = evaluate_candidate(cfg, pretrained["model"], variant="qa", served_variant="qa")
    assert isinstance(repeat, AlreadyRegistered) and repeat.already_registered == "models:/llmops/1"

    # Once there is a champion, the next challenger is compared with it, re-evaluated on
    # the challenger's data: the same tensors (saved again, so other bytes: another model
    # to the registry) give the same numbers, so no regression.
    from safetensors.torch import load_file, save_file

    reg.promote_champion(cfg, "1")
    resaved = tmp_path / "resaved"
    shutil.copytree(pretrained["model"], resaved)
    save_file(load_file(resaved / "model.safetensors"), resaved / "model.safetensors",
              metadata={"format": "pt", "saved": "again"})
    again = evaluate_candidate(cfg, resaved, variant="qa", served_variant="qa")
    assert isinstance(again, CandidateEvaluation)
    assert again.gate_passed and again.lineage.champion_compared == "models:/llmops/1"
    regressions = [c for c in again.gate.checks if c.kind == "regression"]
    assert {c.metric for c in regressions} == {"bits_per_byte", "rougeL"}
    for check in regressions:
        assert check.champion == pytest.approx(again.metrics.number(check.metric), rel=1e-6)
    assert "champion" in Path(again.report).read_text()
    assert Path(again.report).parent != report_dir  # every evaluation is a new report
    assert reg.version_for(cfg, "llmops", "challenger") == "1"  # nothing new registered
