"""Rollback refusals against a real MLflow registry (SQLite in the test's home), no Triton:
each is decided from the registry before anything is staged, and changes nothing.
(Rollbacks that serve a version run against a real Triton in ``test_deploy.py``.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.config import load_config
from llmops.registry import model_registry as registry, tracking
from llmops.serving import repository
from llmops.serving.deploy import DeployFailed, plan_rollback, rollback


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow must not write ./mlruns into the checkout
    return load_config(environ={}, overrides={"home": str(tmp_path / "home")})


def _register(cfg, tmp_path: Path, marker: str, gate: str = "passed") -> str:
    """A registered version of ``llmops`` with ``gate_result`` = ``gate`` (its files are never loaded here)."""
    model = tmp_path / marker
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "marker": marker}))
    (model / "model.safetensors").write_bytes(marker.encode() * 8)
    run_id = tracking.job_run(cfg, f"eval-{marker}", f"eval-{marker}", parent_run_id=None)
    return registry.register_model(cfg, model, run_id, tags={"gate_result": gate, "data_card_hash": "abc"})


def test_without_a_champion_there_is_nothing_to_roll_back(cfg, tmp_path):
    _register(cfg, tmp_path, "v1")
    for to_version in (None, "1"):
        with pytest.raises(DeployFailed, match="has no champion: nothing to roll back"):
            rollback(cfg, to_version=to_version)


def test_a_first_champion_has_nothing_before_it(cfg, tmp_path):
    v1 = _register(cfg, tmp_path, "v1")
    registry.promote_champion(cfg, v1)
    with pytest.raises(DeployFailed, match="is the first champion: there is no earlier one"):
        rollback(cfg)


def test_refusals_name_the_reason_and_change_nothing(cfg, tmp_path):
    v1, v2 = _register(cfg, tmp_path, "v1"), _register(cfg, tmp_path, "v2")
    failed = _register(cfg, tmp_path, "v3", gate="failed")
    registry.promote_champion(cfg, v1)
    registry.promote_champion(cfg, v2)
    tags = {v: registry.version_tags(cfg, v) for v in (v1, v2, failed)}
    refusals = {v2: "version 2 is already the champion", "99": r"models:/llmops/99: not in the registry",
                failed: "version 3 has gate_result='failed'", "v1": "'v1' is not a version number",
                "0": "'0' is not a version number", 1.5: "1.5 is not a version number"}
    for to_version, reason in refusals.items():
        with pytest.raises(DeployFailed, match=reason):
            rollback(cfg, to_version=to_version)  # no server: reaching Triton would be ServerUnavailable
    assert registry.version_for(cfg, "llmops", registry.CHAMPION) == v2
    assert {v: registry.version_tags(cfg, v) for v in (v1, v2, failed)} == tags
    assert repository.served_versions(cfg, "llmops") == []  # nothing was staged or built


def test_the_default_target_is_the_version_the_champion_replaced(cfg, tmp_path):
    v1, v2, v3 = (_register(cfg, tmp_path, m) for m in ("v1", "v2", "v3"))
    for version in (v1, v2, v3):
        registry.promote_champion(cfg, version)
    assert plan_rollback(cfg) == (3, 2)
    assert plan_rollback(cfg, "") == (3, 2)  # a trigger form's empty field
    assert plan_rollback(cfg, " 1 ") == (3, 1) and plan_rollback(cfg, 1) == (3, 1)


def test_cli_rollback_passes_to_version_and_refuses_in_one_line(cfg, tmp_path, monkeypatch, capsys):
    from llmops.cli import main

    v1, v2 = _register(cfg, tmp_path, "v1"), _register(cfg, tmp_path, "v2")
    registry.promote_champion(cfg, v1)
    registry.promote_champion(cfg, v2)
    monkeypatch.setenv("LLMOPS_HOME", str(cfg.home))
    assert main(["rollback", "--to-version", v2]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after MLflow's own log lines
    assert err.startswith("llmops: error: DeployFailed: llmops version 2 is already the champion")
    assert main(["rollback", "--to-version", "7"]) == 1
    assert "models:/llmops/7: not in the registry" in capsys.readouterr().err
    assert registry.version_for(cfg, "llmops", registry.CHAMPION) == v2
