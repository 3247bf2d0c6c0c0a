"""DAG Params become the validated llmops configuration; bad ones name the config key."""

import runpy

import pytest

from llmops.config import ConfigError
from tests.dags.conftest import DAGS


def _dag_module(name: str = "llmops_data"):
    return runpy.run_path(str(DAGS / f"{name}.py"))


def test_params_override_config_and_bad_values_name_the_key(dagbag):
    from llmops_airflow.config import config_from_params

    mapping = _dag_module()["PARAM_TO_CONFIG"]
    params = {"max_pages": 7, "pii_entities": ["PERSON"], "vocab_size": 512, "tokenizer_reuse": None}
    cfg = config_from_params(params, mapping)
    assert (cfg.scrape.max_pages, cfg.pii.entities, cfg.tokenizer.vocab_size) == (7, ["PERSON"], 512)
    assert cfg.tokenizer.reuse is None  # None keeps the configured value
    with pytest.raises(ConfigError, match="pii"):
        config_from_params({"pii_operator": "hash"}, mapping)  # no salt configured
    with pytest.raises(ConfigError, match="tokenizer"):
        config_from_params({"window": 8, "stride": 16}, mapping)


def test_every_param_maps_to_a_config_key_or_is_the_seed(dagbag):
    dag = dagbag.dags["llmops_data"]
    assert set(dag.params) == set(_dag_module()["PARAM_TO_CONFIG"]) | {"seed_url"}


def test_train_params_map_to_training_config(dagbag):
    from llmops_airflow.config import config_from_params

    mapping = _dag_module("llmops_train")["PARAM_TO_CONFIG"]
    cfg = config_from_params({"preset": "125m", "steps": 7, "ranks": 1, "zero_stage": 3,
                              "finetune_method": "full", "lr": 1e-4}, mapping)
    assert (cfg.pretrain.preset, cfg.pretrain.steps, cfg.deepspeed.ranks, cfg.deepspeed.zero_stage) == \
        ("125m", 7, 1, 3)
    assert cfg.finetune.method == "full" and cfg.pretrain.lr == 1e-4
    with pytest.raises(ConfigError, match="deepspeed.zero_stage"):
        config_from_params({"zero_stage": 4}, mapping)
    dag = dagbag.dags["llmops_train"]
    assert set(dag.params) == set(mapping) | {"base_model", "data_card"}
