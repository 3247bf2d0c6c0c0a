"""The manifest of every keyed output (``artifacts/<stage>/<key>/manifest.json``, and the
evaluation and deploy reports)."""

from __future__ import annotations

from typing import Any, ClassVar

from llmops.records.base import Record
from llmops.records.common import CodeIdentity, InputRef

StageInput = InputRef | list[InputRef] | dict[str, str] | str | int | None
"""An input as a key counts it: a reference by content (or a list of them: the shards of a
mapped stage), a run's output named by its key (``{"key", "path"}``: the crawl a data card
records), or a value that keys the output by itself (a seed URL, a crawl id, a step)."""


class StageManifest(Record):
    """Written last into a finished output directory: a directory with a manifest is complete."""

    NAME: ClassVar[str] = "manifest.json"

    stage: str
    key: str
    """The directory's name: a hash of (stage, version, inputs by content, config)."""
    version: int
    """The stage's version (``llmops.artifacts.STAGE_VERSIONS``)."""
    inputs: dict[str, StageInput]
    """Each input by name: ``{"path", "hash"}``, a list of them, or a keying value."""
    config: dict[str, Any]
    """The settings that key the output: free-form, each stage's own configuration section."""
    content_hash: str
    """The output's content digest: what names it as another stage's input."""
    code_version: str
    code: CodeIdentity
    created_at: str
    outputs: dict[str, str]
    """Every file (relative path) and its SHA-256."""
    output_hash: str
    summary: dict[str, Any]
    """What the stage measured (counts, timings): each stage's own, shown as it is."""


class LatestReport(Record):
    """``reports/<kind>/latest.json``: the newest report of its kind."""

    NAME: ClassVar[str] = "latest.json"

    run_id: str
    path: str
