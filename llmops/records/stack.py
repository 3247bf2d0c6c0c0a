"""Records of the embedded stack."""

from __future__ import annotations

from llmops.records.base import Record


class ComponentPidFile(Record):
    """``stack/<component>.pid``: which process a component is, for a later ``stop`` or ``status``."""

    pid: int
    started: float
    """The process's create time: a pid reused by another process has another one."""
    argv: list[str] = []
    """For people reading the file: only ``pid`` and ``started`` identify the process."""
    log: str | None = None
    started_at: str | None = None
