"""DAG Params are configuration fields: their schema is the field's, their default null (the
configured value), and a run's Params become the validated llmops configuration."""

import json
import re
import runpy

import annotated_types
import pytest
import yaml

from llmops.config import ConfigError, LlmopsConfig, load_config
from tests.dags.conftest import DAGS, REPO

DAG_IDS = ("llmops_data", "llmops_train", "llmops_evaluate", "llmops_deploy", "llmops_monitor", "llmops_retrain",
           "llmops_rollback")
BOUNDS = {annotated_types.Ge: ("minimum", "ge"), annotated_types.Le: ("maximum", "le"),
          annotated_types.Gt: ("exclusiveMinimum", "gt"), annotated_types.Lt: ("exclusiveMaximum", "lt")}


def _dag_module(name: str = "llmops_data"):
    return runpy.run_path(str(DAGS / f"{name}.py"))


def _mapping(dag_id: str) -> dict[str, str]:
    return _dag_module(dag_id).get("PARAM_TO_CONFIG", {})


def _field(dotted: str):
    *sections, leaf = dotted.split(".")
    model = LlmopsConfig
    for part in sections:
        model = model.model_fields[part].annotation
    return model.model_fields[leaf]


def _value(cfg: LlmopsConfig, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


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


def test_a_null_param_keeps_the_workers_environment(dagbag, monkeypatch):
    from llmops_airflow.config import config_from_params

    monkeypatch.setenv("LLMOPS_SCRAPE__MAX_PAGES", "7")
    params = {name: param.value for name, param in dagbag.dags["llmops_data"].params.items()}
    assert params["max_pages"] is None
    assert config_from_params(params, _dag_module()["PARAM_TO_CONFIG"]).scrape.max_pages == 7


def test_every_data_param_is_a_config_key(dagbag):
    assert set(dagbag.dags["llmops_data"].params) == set(_dag_module()["PARAM_TO_CONFIG"])


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


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_a_dag_params_schema_is_its_config_fields(dagbag, dag_id):
    """Type, bounds, choices and docstring come from the field; the default is null and the
    description ends with the value configured at parse time."""
    configured = load_config()
    for name, dotted in _mapping(dag_id).items():
        param, field = dagbag.dags[dag_id].params.get_param(name), _field(dotted)
        assert param.value is None, f"{dag_id}.{name}: default {param.value!r}, not null"
        bounds = {BOUNDS[type(m)][0]: getattr(m, BOUNDS[type(m)][1]) for m in field.metadata if type(m) in BOUNDS}
        assert {k: v for k, v in param.schema.items() if k in {b for b, _ in BOUNDS.values()}} == bounds, name
        assert "null" in param.schema["type"], name
        first_words = " ".join(field.description.split()[:3]).replace("``", "`")
        assert param.description.startswith(first_words), name
        shown = _value(configured, dotted)
        shown = shown if isinstance(shown, str) else json.dumps(shown)
        assert param.description.endswith(f"(default: {shown})"), name


def test_param_validation_follows_the_field(dagbag):
    params = dagbag.dags["llmops_data"].params
    assert params.get_param("max_pages").schema == {"type": ["null", "integer"], "minimum": 1}
    assert params.get_param("pii_operator").schema["enum"] == [None, "replace", "mask", "hash", "pseudonymize"]
    for name, good, bad in (("max_pages", 5, 0), ("dedup_threshold", 0.5, 1.0), ("pii_operator", "mask", "drop"),
                            ("languages", ["en"], "en")):
        param = params.get_param(name)
        assert param.resolve(None) is None and param.resolve(good) == good
        with pytest.raises(ValueError):
            param.resolve(bad)


def _readme_section(dag_id: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"### `{dag_id}`")
    return text[start:text.index("\n### ", start + 1)]


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _readme_value(cell: str) -> tuple[bool, object]:
    """``(True, value)`` of a default cell; ``(False, None)`` for prose (``the eight types below``)."""
    if cell == "none":
        return True, None
    parsed = yaml.safe_load(cell.strip("`"))
    if isinstance(parsed, str) and not cell.startswith("`"):
        try:
            return True, float(parsed)  # 3e-3: YAML 1.1 reads a float only with a dot
        except ValueError:
            return False, None
    return True, parsed


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_readme_params_tables_name_each_param_its_key_and_default(dagbag, dag_id):
    section, mapping = _readme_section(dag_id), _mapping(dag_id)
    configured = load_config(environ={})  # include/llmops.yaml, as the README shows it
    table = section.partition("| Param | configuration key | default | meaning |\n|---|---|---|---|\n")[2]
    rows = [_cells(r) for r in table.split("\n\n")[0].splitlines() if table]
    for row in rows:
        names = [n.strip(" `") for n in row[0].split(",")]
        keys = [k.strip(" `") for k in row[1].split(",")]
        defaults = [d.strip() for d in row[2].split(",")] if len(names) > 1 else [row[2]]
        for name, key, default in zip(names, keys, defaults, strict=True):
            assert mapping.get(name, "—") == key, f"README: {dag_id}.{name} is {mapping.get(name)}, not {key}"
            checked, value = _readme_value(default)
            if checked and key != "—":
                assert value == _value(configured, key), f"README: {dag_id}.{name} default {default}"
    named = set(re.findall(r"`(\w+)`", section))
    assert set(dagbag.dags[dag_id].params) <= named, f"README's {dag_id} section misses a Param"
