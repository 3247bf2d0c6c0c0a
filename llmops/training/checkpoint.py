"""Which DeepSpeed checkpoints are complete, and which to resume from or delete.

DeepSpeed writes a tag directory per ``save_checkpoint`` from every rank and then a
``latest`` file; a crash in between leaves a directory that looks like a checkpoint
but lacks some rank's shard. So llmops marks a tag complete itself: after every rank
has returned from ``save_checkpoint`` (a barrier), rank 0 writes ``complete.json`` (a
``CheckpointMarker``) atomically into the tag. Only marked tags are ever resumed from
or exported, and the unmarked ones are reported, never silently used.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from llmops.records.training import CheckpointMarker

CHECKPOINTS = "checkpoints"
"""A run directory's checkpoint directory: ``step_NNNNNNNN/`` tags and ``latest``."""
COMPLETE = CheckpointMarker.NAME
TAG_RE = re.compile(r"^step_(\d{8})$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def _tags(ckpt_dir: Path) -> list[tuple[int, Path]]:
    if not Path(ckpt_dir).is_dir():
        return []
    found = []
    for child in Path(ckpt_dir).iterdir():
        m = TAG_RE.match(child.name)
        if m and child.is_dir():
            found.append((int(m.group(1)), child))
    return sorted(found)


def complete_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``[(step, tag_dir)]`` of complete checkpoints, oldest first."""
    return [(s, p) for s, p in _tags(ckpt_dir) if (p / COMPLETE).exists()]


def incomplete_checkpoints(ckpt_dir: Path) -> list[Path]:
    return [p for _, p in _tags(ckpt_dir) if not (p / COMPLETE).exists()]


def newest_complete(ckpt_dir: Path) -> tuple[int, Path] | None:
    done = complete_checkpoints(ckpt_dir)
    return done[-1] if done else None


def prune(ckpt_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints, and incomplete ones older
    than the newest complete (a crash's leftovers). Returns what was deleted."""
    done = complete_checkpoints(ckpt_dir)
    if not done:
        return []
    newest_step = done[-1][0]
    doomed = [p for _, p in done[:-keep]] if keep > 0 else []
    doomed += [p for s, p in _tags(ckpt_dir) if not (p / COMPLETE).exists() and s < newest_step]
    for path in doomed:
        # Unmark first: a crash mid-delete must not leave a "complete" but partial tag.
        (path / COMPLETE).unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)
    return doomed
