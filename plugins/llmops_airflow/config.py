"""DAG Params declared from the llmops configuration, and a run's Params turned back into it.

A knob is one configuration field (``llmops/config.py``). A DAG names the fields it
exposes, ``{"max_pages": "scrape.max_pages", ...}``, and :func:`config_params` makes each a
``Param`` whose type, bounds and description are the field's JSON schema. Its default is
``None``, meaning "the configured value": a default frozen when the scheduler parsed the DAG
file would override the ``LLMOPS_*`` environment of the worker that runs the task. The
value configured at parse time ends the description, so the trigger form still shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param

from llmops.config import (
    LlmopsConfig,
    configured_value,
    field_description,
    field_schema,
    load_config,
    shown_value,
)

_SCHEMA_KEYS = ("type", "enum", "items", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                "pattern", "minLength", "maxLength", "minItems", "maxItems")
"""The JSON-schema keywords a Param takes from its field (``title`` and ``default`` are the field's own)."""


def config_params(mapping: Mapping[str, str], configured: LlmopsConfig | None = None) -> dict[str, Param]:
    """One ``Param`` per ``param name -> dotted config key``, its schema the field's (nullable).

    ``configured`` (default: :func:`load_config`, cheap enough for parse time) supplies the
    value the description shows.
    """
    configured = configured or load_config()
    return {name: Param(None, description=f"{field_description(dotted)} (default: "
                                          f"{shown_value(configured_value(configured, dotted))})",
                        **param_schema(dotted))
            for name, dotted in mapping.items()}


def param_schema(dotted: str) -> dict[str, Any]:
    """The JSON schema of config field ``dotted`` (its type and bounds), with ``null`` allowed."""
    schema = field_schema(dotted)
    branches = [b for b in schema.get("anyOf", [schema]) if b != {"type": "null"}]
    if len(branches) != 1 or "type" not in branches[0]:
        raise TypeError(f"{dotted}: a DAG Param needs a field of one plain JSON type, got {schema}")
    merged = {**branches[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
    out = {key: merged[key] for key in _SCHEMA_KEYS if key in merged}
    out["type"] = ["null", out["type"]]
    if "enum" in out:
        out["enum"] = [None, *out["enum"]]
    return out


def config_from_params(params: Mapping[str, object], mapping: Mapping[str, str]) -> LlmopsConfig:
    """The configuration with a run's Params applied: ``mapping`` maps a Param name to a dotted
    config key. A Param left ``None`` keeps the configured value; a bad value fails with the
    config key in the message (the same validation as the YAML file)."""
    overrides: dict[str, Any] = {}  # free-form: a partial configuration tree
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


def run_config(mapping: Mapping[str, str]) -> LlmopsConfig:
    """The current task's configuration from its DAG run's Params. A bad setting raises
    ``ConfigError``, a permanent error: the task fails at once (``llmops_airflow.errors``)."""
    from airflow.sdk import get_current_context

    return config_from_params(get_current_context()["params"], mapping)


def monitor_timetable() -> Any:
    """``llmops_monitor``'s schedule: ``monitor.schedule`` (read at parse time) as a cron
    timetable that does not run at once when the DAG appears (``run_immediately=False``), so
    starting a stack starts no monitor run; None (by hand only) when the schedule is null."""
    from airflow.sdk import CronTriggerTimetable

    cron = load_config().monitor.schedule
    return CronTriggerTimetable(cron, timezone="UTC", run_immediately=False) if cron else None


def retrain_schedule(drift: Any) -> Any:
    """``llmops_retrain``'s schedule: on ``drift`` (the ``llmops://drift`` Asset) or on
    ``retrain.schedule`` (read at parse time), whichever comes first. The cron part does not
    run at once when the DAG appears (``run_immediately=False``), so starting a stack starts no
    retraining; with the schedule null, drift alone (and people) start it."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    cron = load_config().retrain.schedule
    if not cron:
        return [drift]
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC", run_immediately=False),
                               assets=[drift])
