"""The inference log as llmops reads it: the served model's per-request records, and the
corpus vocabulary the model counts question tokens against.

The record and the writer are declared once, in ``include/triton/inference_log.py`` (the
model runs in the Triton image, where llmops is not installed); this module loads that
file by its path and validates every line with pydantic against its dataclass. Reading is
forgiving: a partial last line (the writer is appending), a bad line or an unreadable file
is skipped with a warning and counted in :class:`LogStats`, never fatal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from llmops.config import REPO_ROOT, LlmopsConfig
from llmops.records.base import RecordError
from llmops.records.data import DataCard
from llmops.records.monitoring import LogStats
from llmops.registry.model_card import model_info
from llmops.serving.tensors import load_file

log = logging.getLogger(__name__)

SOURCE = REPO_ROOT / "include" / "triton" / "inference_log.py"
"""The record and the writer, copied next to ``model.py`` into every version directory."""
_module = load_file("llmops.monitoring._inference_log", SOURCE)

# Typed as Any: mypy does not see include/triton (a file loaded by path, not a package).
InferenceRecord: Any = _module.InferenceRecord
InferenceLogWriter: Any = _module.InferenceLogWriter
PendingRecord: Any = _module.PendingRecord
hour_file = _module.hour_file
prune = _module.prune
measure_question = _module.measure_question
complete = _module.complete
detect_language = _module.detect_language
SUFFIX: str = _module.SUFFIX
ANSWERED = ("stop", "length")
"""Finish reasons of a request that was answered (the others were refused or failed)."""
_validate = TypeAdapter(InferenceRecord).validate_python

DRIFT_VOCABULARY_FILE = "drift_vocabulary.json"
"""In a served version directory: the champion corpus's token ids, most frequent first."""
MAX_VOCABULARY = 65_536
"""Ids kept in that file at most (``monitor.top_k`` is bounded by it)."""


def log_dir(cfg: LlmopsConfig) -> Path:
    """Where the inference log lives: ``monitor.log_dir``, else ``$LLMOPS_HOME/monitoring/inference``."""
    return Path(cfg.monitor.log_dir).expanduser().resolve() if cfg.monitor.log_dir else cfg.layout.inference_log


@dataclass
class LogRead:
    """Records read from the log, oldest first, and what the reading found."""

    records: list[Any] = field(default_factory=list)
    """``InferenceRecord``s."""
    stats: LogStats = field(default_factory=LogStats)


def read_log(directory: Path, model: str, *, since: float | None = None, until: float | None = None,
             version: str | None = None, newest_answered: int | None = None) -> LogRead:
    """Every record of ``model`` (and ``version``, when given) with ``since <= time <= until``.

    Files are chosen by their hour in the name before any is opened, so a check over the
    last hour reads one or two files however long the retention is. ``newest_answered``
    reads hour files newest first and stops after the hour in which that many answered
    requests were reached (a window counted in requests needs no more).
    """
    out = LogRead()
    model_dir = hour_file(Path(directory), model, "x", 0.0).parent
    first_hour = hour_file(Path(directory), model, "x", since).name[:13] if since is not None else ""
    paths = sorted(model_dir.glob(f"*{SUFFIX}")) if model_dir.is_dir() else []
    if newest_answered is not None:
        paths.reverse()
    skipped: list[str] = []
    answered, hour = 0, ""
    for path in paths:
        if path.name[:13] < first_hour:
            continue
        if newest_answered is not None and answered >= newest_answered and path.name[:13] != hour:
            break  # the hours read so far hold enough (every instance's file of the last hour included)
        hour = path.name[:13]
        out.stats.files += 1
        try:
            records, bad = read_file(path)
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("inference log: skipping %s: %s", path, exc)
            skipped.append(f"{path.name}: {exc.__class__.__name__}: {exc}")
            continue
        out.stats.bad_lines += bad
        for record in records:
            if (since is not None and record.time < since) or (until is not None and record.time > until):
                continue
            if version is not None and record.version != version:
                continue
            out.records.append(record)
            out.stats.dropped += record.dropped_before
            answered += record.finish_reason in ANSWERED
    out.records.sort(key=lambda r: r.time)
    out.stats.records = len(out.records)
    out.stats.skipped_files = skipped
    return out


def read_file(path: Path) -> tuple[list[Any], int]:
    """The records of one log file (or a cache of records), and how many lines were not records."""
    records, bad = [], 0
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.endswith("\n"):  # being written: the next check reads it whole
                break
            try:
                records.append(_validate(json.loads(line)))
            except (json.JSONDecodeError, ValidationError, TypeError) as exc:
                bad += 1
                if bad <= 3:
                    log.warning("inference log: %s line %d is not a record: %s", path.name, number,
                                str(exc).splitlines()[0])
    return records, bad


# ---- the corpus vocabulary the model counts against ----------------------------------------


def corpus_token_ids(hf_dir: Path, limit: int = MAX_VOCABULARY) -> list[int] | None:
    """The token ids of the corpus an exported model was trained on, most frequent first (ties
    by id), from the token shards its data card names; None when its lineage names none (a
    model that did not come out of ``llmops_train``) or the shards are gone."""
    from llmops.tokenizer.encode import load_shard

    try:  # the vocabulary only sharpens monitoring: a model without readable lineage is still served
        info = model_info(hf_dir)
        if info is None or info.data_card is None:
            return None
        card_dir = Path(info.data_card.path)
        if not (card_dir / DataCard.NAME).is_file():
            return None
        tokens, _, meta = load_shard(Path(DataCard.read(card_dir / DataCard.NAME).outputs["tokens"].path), "train")
    except (RecordError, FileNotFoundError, KeyError) as exc:
        log.warning("%s: no corpus vocabulary for the inference log (%s); question tokens count as 'other'",
                    hf_dir, exc)
        return None
    counts = np.bincount(np.asarray(tokens, dtype=np.int64), minlength=meta.vocab_size)
    order = np.lexsort((np.arange(len(counts)), -counts))  # by count descending, then id
    return [int(i) for i in order[:limit] if counts[i] > 0]


def write_vocabulary(version_dir: Path, token_ids: Sequence[int]) -> Path:
    """``drift_vocabulary.json`` in a version directory being assembled (not yet live)."""
    path = Path(version_dir) / DRIFT_VOCABULARY_FILE
    path.write_text(json.dumps({"token_ids": [int(t) for t in token_ids]}))
    return path


def read_vocabulary(version_dir: Path, top_k: int) -> list[int]:
    """The first ``top_k`` ids of a served version's vocabulary (empty when it has none)."""
    path = Path(version_dir) / DRIFT_VOCABULARY_FILE
    if not path.is_file():
        return []
    return [int(t) for t in json.loads(path.read_text())["token_ids"][:top_k]]

