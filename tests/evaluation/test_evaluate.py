"""The whole evaluation on the tiny model the training tests pretrain (2 DeepSpeed ranks)."""

from __future__ import annotations

import json

import pytest

from llmops.evaluation.evaluate import EvaluationInputError, EvalData, evaluate_model, resolve_eval_data
from tests.training.fixtures import paths, qa_pairs

pytestmark = pytest.mark.slow

CANARIES = [{"type": "PHONE_NUMBER", "value": "555-867-5309"}, {"type": "EMAIL_ADDRESS", "value": "jane.roe@example.com"}]


def test_every_gated_metric_is_measured(pretrained, data_home, tmp_path):
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(p) + "\n" for p in qa_pairs()[:6]))
    canaries = tmp_path / "canaries.json"
    canaries.write_text(json.dumps(CANARIES))
    data = resolve_eval_data(pretrained["cfg"], pretrained["model"], tokens=paths(data_home)["tokens"],
                             heldout=heldout, canaries=canaries)
    result = evaluate_model(pretrained["model"], data, max_new_tokens=12)
    metrics = result["metrics"]
    for key in ("perplexity", "bits_per_byte", "bleu", "rouge1", "rouge2", "rougeL", "exact_match", "distinct_1",
                "distinct_2", "pii_leak_rate", "behaviour_pass_rate"):
        assert isinstance(metrics[key], float), key
    # the same numbers the training run measured, through a different code path
    assert metrics["perplexity"] < 1024 and 0 < metrics["bits_per_byte"] < 8
    assert metrics["pii_leak_rate"] == 0.0 and result["leakage"]["canaries"] == 2
    assert metrics["eval_data_hash"] == data.digest()
    other = EvalData(data.tokens, data.heldout, CANARIES[:1], data.cases_file, "x")
    assert other.digest() != data.digest()  # another evaluation set, another hash


def test_missing_inputs_are_clear(pretrained, tmp_path):
    with pytest.raises(EvaluationInputError, match="pass --tokens"):
        resolve_eval_data(pretrained["cfg"], tmp_path)
    with pytest.raises(EvaluationInputError, match="no PII canaries"):
        resolve_eval_data(pretrained["cfg"], pretrained["model"], tokens=tmp_path, heldout=tmp_path)


def test_the_gate_rejects_a_corrupted_model_and_passes_the_good_one(pretrained, data_home, tmp_path):
    """Scrambled embedding rows (what a model/tokenizer mix-up does): the gate names what broke."""
    import shutil

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
        return evaluate_model(model_dir, data, max_new_tokens=8)["metrics"]

    good, bad = metrics(good_dir), metrics(bad_dir)
    # Floors set between the two the way include/eval/gate.yaml's are: just beyond the good model.
    thresholds = GateThresholds.model_validate({"floors": {"bits_per_byte": {"max": good["bits_per_byte"] * 1.1},
                                                           "pii_leak_rate": {"max": 0.0}}})
    assert run_gate(good, None, thresholds).passed
    rejected = run_gate(bad, None, thresholds)
    assert not rejected.passed and [c.metric for c in rejected.failed] == ["bits_per_byte"]
    assert f"bits_per_byte {bad['bits_per_byte']:.4g}" in rejected.failure_message()
