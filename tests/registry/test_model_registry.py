from __future__ import annotations

import json

import pytest

from llmops.config import load_config
from llmops.registry import model_registry as reg, tracking


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow must not write ./mlruns into the checkout
    return load_config(environ={}, overrides={"home": str(tmp_path / "home")})


def _model_dir(path, marker: str):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "marker": marker}))
    (path / "model.safetensors").write_bytes(marker.encode() * 8)
    (path / "chat_template.jinja").write_text("{{ messages }}")
    return path


def _register(cfg, tmp_path, marker: str) -> str:
    run_id = tracking.job_run(cfg, f"eval-{marker}", f"eval-{marker}", parent_run_id=None)
    return reg.register_model(cfg, _model_dir(tmp_path / marker, marker), run_id,
                              tags={"gate_result": "passed", "data_card_hash": "abc"})


def test_a_version_is_a_plain_hf_directory_behind_models_uri(cfg, tmp_path):
    version = _register(cfg, tmp_path, "v1")
    assert version == "1" and reg.version_for(cfg, "llmops", "challenger") == "1"
    for uri in ("models:/llmops/1", "models:/llmops@challenger"):
        out = reg.download(cfg, uri, tmp_path / f"dl-{uri[-1]}")
        assert sorted(p.name for p in out.iterdir()) == ["chat_template.jinja", "config.json", "model.safetensors"]
        assert json.loads((out / "config.json").read_text())["marker"] == "v1"
    client = tracking.connect(tracking.tracking_uri(cfg))
    assert client.get_model_version("llmops", "1").tags["gate_result"] == "passed"


def test_promotion_records_the_previous_champion_and_rollback_restores_it(cfg, tmp_path):
    v1, v2 = _register(cfg, tmp_path, "v1"), _register(cfg, tmp_path, "v2")
    assert reg.promote_champion(cfg, v1) is None
    assert reg.promote_champion(cfg, v2) == v1
    assert reg.version_for(cfg, "llmops", "champion") == v2
    assert reg.rollback_champion(cfg) == (v2, v1)
    assert reg.version_for(cfg, "llmops", "champion") == v1
    with pytest.raises(reg.RegistryError, match="first champion"):
        reg.rollback_champion(cfg)


def test_rollback_walks_back_and_a_chosen_version_is_recorded_so_the_next_rollback_returns(cfg, tmp_path):
    v1, v2, v3 = (_register(cfg, tmp_path, m) for m in ("v1", "v2", "v3"))
    for version in (v1, v2, v3):
        reg.promote_champion(cfg, version)
    assert reg.rollback_champion(cfg) == (v3, v2)
    assert reg.rollback_champion(cfg, to_version=v1) == (v2, v1)  # the recorded one: a step back, no tag moves
    assert reg.version_tags(cfg, v1).get(reg.PREVIOUS_CHAMPION_TAG) is None
    # A jump to a chosen version is recorded like a promotion: the next rollback returns from it.
    assert reg.rollback_champion(cfg, to_version=v3) == (v1, v3)
    assert reg.version_tags(cfg, v3)[reg.PREVIOUS_CHAMPION_TAG] == v1
    assert reg.rollback_champion(cfg) == (v3, v1)
    assert reg.version_for(cfg, "llmops", "champion") == v1
    with pytest.raises(reg.RegistryError, match="already the champion"):
        reg.rollback_champion(cfg, to_version=v1)
    with pytest.raises(reg.RegistryError, match="has no version 9"):
        reg.rollback_champion(cfg, to_version="9")
    assert reg.version_for(cfg, "llmops", "champion") == v1  # refusals move nothing


def test_variants_register_under_their_own_name_and_bad_dirs_fail(cfg, tmp_path):
    assert reg.registered_name("qa", served_variant="qa") == "llmops"
    assert reg.registered_name("qa-full", served_variant="qa") == "llmops-qa-full"
    (tmp_path / "empty").mkdir()
    with pytest.raises(reg.RegistryError, match="no config.json"):
        reg.register_model(cfg, tmp_path / "empty", "run")
    assert reg.version_for(cfg, "llmops", "champion") is None


def test_content_sha256_covers_weights_and_configs_not_lineage(tmp_path):
    model = _model_dir(tmp_path / "m", "v1")
    (model / "tokenizer.json").write_text('{"model": {}}')
    digest = reg.content_sha256(model)
    assert len(digest) == 64
    (model / "llmops_model.json").write_text(json.dumps({"run_dir": "/runs/one", "mlflow_run_id": "abc"}))
    (model / "MODEL_CARD.md").write_text("# Model card: trained on Tuesday")
    assert reg.content_sha256(model) == digest  # lineage files are not the model
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in model.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "llmops_model.json").write_text(json.dumps({"run_dir": "/runs/two"}))
    assert reg.content_sha256(copy) == digest  # where the files live does not matter either
    (copy / "model.safetensors").write_bytes(b"other weights")
    assert reg.content_sha256(copy) != digest
    (model / "chat_template.jinja").write_text("{{ messages | reverse }}")
    assert reg.content_sha256(model) != digest  # the chat template changes what the model answers
    (copy / "model.safetensors").unlink()
    with pytest.raises(reg.RegistryError, match="safetensors"):
        reg.content_sha256(copy)


def test_every_version_is_tagged_with_its_content_and_found_by_it(cfg, tmp_path):
    v1 = _register(cfg, tmp_path, "v1")
    client = tracking.connect(tracking.tracking_uri(cfg))
    digest = client.get_model_version("llmops", v1).tags[reg.CONTENT_TAG]
    assert digest == reg.content_sha256(tmp_path / "v1")
    assert reg.find_by_content(cfg, digest) == "models:/llmops/1"
    assert reg.find_by_content(cfg, digest, name="llmops-other") is None
    assert reg.find_by_content(cfg, "0" * 64) is None
    # The registry function registers what it is given, twice if asked (a deploy test does):
    # the earliest version answers.
    run_id = tracking.job_run(cfg, "again", "again", parent_run_id=None)
    assert reg.register_model(cfg, tmp_path / "v1", run_id) == "2"
    assert reg.find_by_content(cfg, digest) == "models:/llmops/1"


def test_versions_registered_before_the_tag_are_ignored(cfg, tmp_path):
    v1 = _register(cfg, tmp_path, "v1")
    client = tracking.connect(tracking.tracking_uri(cfg))
    digest = client.get_model_version("llmops", v1).tags[reg.CONTENT_TAG]
    client.delete_model_version_tag("llmops", v1, reg.CONTENT_TAG)  # as registered before this change
    assert reg.find_by_content(cfg, digest) is None
