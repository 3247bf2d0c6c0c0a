"""One model, one version: a model whose content is registered already is not evaluated,
registered or recorded again, whatever its lineage files say (a real MLflow SQLite store)."""

from __future__ import annotations

import json
import shutil

import pytest

from llmops.config import load_config
from llmops.evaluation import evaluate as ev
from llmops.records.evaluation import AlreadyRegistered, load_evaluation
from llmops.registry import model_registry as reg, tracking


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow must not write ./mlruns into the checkout
    return load_config(environ={}, overrides={"home": str(tmp_path / "home")})


def _model(path, weights: bytes, run_dir: str):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (path / "model.safetensors").write_bytes(weights)
    (path / "tokenizer.json").write_text('{"model": {}}')
    (path / "chat_template.jinja").write_text("{{ messages }}")
    (path / "llmops_model.json").write_text(json.dumps({"run_dir": run_dir}))
    return path


@pytest.fixture
def registered(cfg, tmp_path):
    """Version 1 of ``llmops``, registered the way register_candidate does (tagged by register_model)."""
    model = _model(tmp_path / "first", b"weights" * 8, "/runs/first")
    run_id = tracking.job_run(cfg, "evaluate-first", "evaluate-first", parent_run_id=None)
    assert reg.register_model(cfg, model, run_id, tags={"gate_result": "passed"}) == "1"
    return model


def test_the_same_weights_from_another_run_are_not_evaluated_again(cfg, tmp_path, registered, monkeypatch):
    retrained = tmp_path / "retrained"  # same bits, other lineage (what a replayed event brings)
    shutil.copytree(registered, retrained)
    (retrained / "llmops_model.json").write_text(json.dumps({"run_dir": "/runs/second"}))
    (retrained / "MODEL_CARD.md").write_text("# Model card: another day")

    def must_not_run(*args, **kwargs):
        raise AssertionError("an already registered model was evaluated")

    monkeypatch.setattr(ev, "run_evaluation", must_not_run)
    client = tracking.connect(tracking.tracking_uri(cfg))
    runs_before = len(client.search_runs([tracking.ensure_experiment(cfg, client)]))

    assert ev.registered_as(cfg, retrained) == "models:/llmops/1"
    result = ev.evaluate_candidate(cfg, retrained, variant="qa", served_variant="qa")
    assert isinstance(result, AlreadyRegistered) and result.already_registered == "models:/llmops/1"
    assert result.message == f"{retrained}: already registered as models:/llmops/1"
    assert load_evaluation(result.dump()) == result  # the XCom reads back as the same kind
    assert ev.register_candidate(cfg, result) is result

    assert len(client.search_runs([tracking.ensure_experiment(cfg, client)])) == runs_before  # nothing recorded
    assert [str(v.version) for v in client.search_model_versions("name = 'llmops'")] == ["1"]  # nothing registered


def test_other_weights_or_another_registered_name_are_evaluated(cfg, tmp_path, registered):
    other = _model(tmp_path / "other", b"other weights", "/runs/other")
    assert ev.registered_as(cfg, other) is None
    # a variant registers under its own name: the served model's version does not count for it
    assert ev.registered_as(cfg, registered, name="llmops-qa-full") is None
    assert ev.registered_as(cfg, tmp_path) is None  # no model at all: the evaluation says what is missing


def test_the_cli_says_already_registered_and_exits_0(cfg, tmp_path, registered, monkeypatch, capsys):
    from llmops.cli import main

    monkeypatch.setenv("LLMOPS_HOME", str(cfg.home))
    assert main(["evaluate", "--model", str(registered)]) == 0
    assert f"{registered}: already registered as models:/llmops/1" in capsys.readouterr().out
