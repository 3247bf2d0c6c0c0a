"""Turn a DAG run's Params into the validated llmops configuration."""

from __future__ import annotations

from typing import Any

from llmops.config import LlmopsConfig, load_config


def config_from_params(params: dict[str, Any], mapping: dict[str, str]) -> LlmopsConfig:
    """``mapping`` maps a param name to a dotted config key, e.g. ``max_pages -> scrape.max_pages``.

    Params left as ``None`` keep the configured value; a bad value fails with the
    config key in the message (the same validation as the YAML file).
    """
    overrides: dict[str, Any] = {}
    for param, dotted in mapping.items():
        value = params.get(param)
        if value is None:
            continue
        node = overrides
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return load_config(overrides=overrides)


def run_config(mapping: dict[str, str]) -> LlmopsConfig:
    """The current task's configuration from its DAG run's Params. A bad setting raises
    ``ConfigError``, a permanent error: the task fails at once (``llmops_airflow.errors``)."""
    from airflow.sdk import get_current_context

    return config_from_params(get_current_context()["params"], mapping)

