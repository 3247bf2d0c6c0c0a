from pathlib import Path

import pytest

from llmops.config import ConfigError, LlmopsConfig, load_config


def test_shipped_yaml_is_valid_and_matches_defaults_where_unset():
    cfg = load_config(environ={})
    assert cfg.scrape.max_pages == 500
    assert cfg.home.is_absolute()


def test_env_override_is_typed():
    cfg = load_config(environ={"LLMOPS_SCRAPE__MAX_PAGES": "7", "LLMOPS_CLEAN__LOWERCASE": "true",
                               "LLMOPS_CLEAN__LANGUAGES": "[en, de]"})
    assert cfg.scrape.max_pages == 7
    assert cfg.clean.lowercase is True
    assert cfg.clean.languages == ["en", "de"]


def test_llmops_home_env(tmp_path: Path):
    assert load_config(environ={"LLMOPS_HOME": str(tmp_path)}).home == tmp_path


@pytest.mark.parametrize(
    "environ, key",
    [
        ({"LLMOPS_SCRAPE__MAX_PAGES": "abc"}, "scrape.max_pages"),
        ({"LLMOPS_SCRAPE__MAX_PAGEZ": "3"}, "scrape.max_pagez"),
        ({"LLMOPS_DEDUP__THRESHOLD": "1.5"}, "dedup.threshold"),
    ],
)
def test_bad_value_names_the_key(environ, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(environ=environ)


def test_bad_yaml_file(tmp_path: Path):
    bad = tmp_path / "c.yaml"
    bad.write_text("clean:\n  min_chars: -5\n")
    with pytest.raises(ConfigError, match=r"clean\.min_chars"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(environ={"LLMOPS_CONFIG": str(tmp_path / "missing.yaml")})


def test_every_field_is_documented():
    def walk(model):
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, LlmopsConfig.__base__):
                yield from walk(ann)
            else:
                yield f"{model.__name__}.{name}", field.description

    missing = [name for name, doc in walk(LlmopsConfig) if not doc]
    assert missing == []


def test_named_config_file_must_exist(tmp_path: Path):
    with pytest.raises(ConfigError, match="--config points to"):
        load_config(tmp_path / "typo.yaml", environ={})
