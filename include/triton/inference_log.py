"""The served model's inference log: one record per request, written off the request path.

Copied next to ``model.py`` (and ``tensors.py``) into every version directory, because the
model runs in the Triton image where llmops is not installed: standard library only
(``py3langid`` is used when it is importable). llmops loads this same file by its path
(``llmops.monitoring.log``) to read the records back, so the record is declared once.

What a record holds, and what it must never hold: counts and measurements only. No text
and no token ids beyond the counts over the champion's most frequent ids: byte-level BPE
ids decode back to the exact prompt, and prompts can hold personal data.

Files: ``<log dir>/<model name>/<YYYY-MM-DDTHH>_<instance>.jsonl``, one file per model
instance per hour (UTC), one JSON object per line. A writer thread drains a bounded queue;
a full queue drops the record and counts it (the next written record carries the count in
``dropped_before``), so logging never slows or fails a request. Lines are flushed as soon
as the queue is empty, so a record is on disk well within a second of its request. Files
older than the retention are deleted when the writer starts and at every hour boundary.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

FINISH_REASONS = ("stop", "length", "error", "refused")
"""``stop``: a stop token ended the answer; ``length``: it ran into ``max_tokens``;
``error``: generation failed; ``refused``: a bad request (no features then)."""
SUFFIX = ".jsonl"


@dataclass
class InferenceRecord:
    """One request the served model answered (or refused)."""

    time: float
    """When the request's batch finished, Unix seconds (UTC)."""
    model: str
    """The Triton model name (``llmops``; the staging name during a deployment's smoke test)."""
    version: str
    """The registered version that answered (``model_info.json``)."""
    instance: str
    """The Triton model instance that wrote the record."""
    finish_reason: str
    """One of ``FINISH_REASONS``."""
    compute_ms: float
    """Time the model spent on the batch this request was part of (validation to last token)."""
    batch_size: int
    """Rows generated together in that batch."""
    prompt_tokens: int = 0
    """Tokens of the prompt after the chat template."""
    completion_tokens: int = 0
    """Generated tokens, the stop token included."""
    empty_answer: bool = False
    """The decoded answer was empty after stripping."""
    question_bytes: int = 0
    """UTF-8 bytes of the user's question (the prompt without the chat template)."""
    question_tokens: int = 0
    """Tokens of the question inside the templated prompt."""
    bytes_per_token: float = 0.0
    """``question_bytes / question_tokens``: how well the tokenizer compresses what users ask."""
    language: str = ""
    """ISO 639-1 code from py3langid (empty when it is not installed)."""
    top_token_counts: dict[str, int] = field(default_factory=dict)
    """Occurrences in the question of each of the champion corpus's K most frequent token ids
    (key: the id as text); ids outside the K are only counted in ``other_tokens``."""
    other_tokens: int = 0
    """Question tokens that are not among the K most frequent ids."""
    nll: float = 0.0
    """Negative log-likelihood of the question tokens under the served model, nats (summed),
    from the logits of the forward pass over the prompt that generation does anyway."""
    bits_per_byte: float = 0.0
    """``nll / ln 2 / question_bytes``: how surprised the model is by the question."""
    dropped_before: int = 0
    """Records dropped (queue full) since the previous record this instance wrote."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False)


@dataclass
class PendingRecord:
    """What the request path hands the writer thread: the record so far, and the question
    and its token ids, which the thread reduces to a language and counts, then forgets."""

    record: InferenceRecord
    question: str = ""
    question_ids: Sequence[int] = ()


def measure_question(record: InferenceRecord, question: str, question_tokens: int, nll: float) -> InferenceRecord:
    """Fill the question's size and likelihood fields of ``record`` (in place; returned)."""
    record.question_bytes = len(question.encode("utf-8"))
    record.question_tokens = question_tokens
    record.bytes_per_token = record.question_bytes / question_tokens if question_tokens else 0.0
    record.nll = nll
    record.bits_per_byte = nll / math.log(2) / record.question_bytes if record.question_bytes else 0.0
    return record


def complete(pending: PendingRecord, top_ids: set[int] | frozenset[int], detect_language) -> InferenceRecord:
    """The record with the question reduced to its language and its token counts over
    ``top_ids`` (the text and the ids themselves are not kept)."""
    record = pending.record
    if pending.question:
        record.language = detect_language(pending.question)
    if pending.question_ids:
        counts = Counter(int(t) for t in pending.question_ids)
        record.top_token_counts = {str(t): n for t, n in sorted(counts.items()) if t in top_ids}
        record.other_tokens = sum(n for t, n in counts.items() if t not in top_ids)
    return record


def hour_file(directory: Path, model: str, instance: str, when: float) -> Path:
    """The file of ``instance`` of ``model`` for the UTC hour of ``when``."""
    hour = datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%dT%H")
    return directory / _safe(model) / f"{hour}_{_safe(instance)}{SUFFIX}"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def prune(directory: Path, retention_s: float, now: float | None = None) -> list[Path]:
    """Delete log files last written more than ``retention_s`` ago; returns what went."""
    now = time.time() if now is None else now
    removed = []
    for path in Path(directory).glob(f"*/*{SUFFIX}"):
        try:
            if now - path.stat().st_mtime > retention_s:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:  # another instance pruned it first
            pass
    return removed


def detect_language():  # -> Callable[[str], str]
    try:
        import py3langid  # type: ignore[import-untyped]
    except ImportError:  # the log still works; the language signal then stays empty
        return lambda text: ""
    return lambda text: str(py3langid.classify(text)[0])


class InferenceLogWriter:
    """A bounded queue and one daemon thread that appends records to the hour's file.

    ``submit`` never blocks: when the queue is full the record is dropped and counted.
    ``close`` (the model's ``finalize``) writes what is queued and stops the thread.
    """

    def __init__(self, directory: str | Path, *, model: str, instance: str, top_token_ids: Sequence[int] = (),
                 queue_size: int = 10_000, retention_s: float = 7 * 86_400.0) -> None:
        self.directory = Path(directory)
        self.model, self.instance = model, instance
        self.top_ids = {int(t) for t in top_token_ids}
        self.retention_s = retention_s
        self.dropped = 0
        """Records dropped since the last one written."""
        self.dropped_total = 0
        self.written = 0
        self._queue: queue.Queue[PendingRecord | None] = queue.Queue(maxsize=queue_size)
        self._language = detect_language()
        (self.directory / _safe(model)).mkdir(parents=True, exist_ok=True)
        prune(self.directory, retention_s)
        self._thread = threading.Thread(target=self._run, name=f"inference-log-{instance}", daemon=True)
        self._thread.start()

    def submit(self, pending: PendingRecord) -> bool:
        """Queue one record; False (and counted) if the queue is full."""
        try:
            self._queue.put_nowait(pending)
            return True
        except queue.Full:
            self.dropped += 1  # one writer of this counter per request thread; a lost increment is harmless
            self.dropped_total += 1
            return False

    def close(self, timeout_s: float = 10.0) -> None:
        """Write everything queued, then stop the thread."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    # -- the thread ---------------------------------------------------------------------

    def _complete(self, pending: PendingRecord) -> InferenceRecord:
        record = complete(pending, self.top_ids, self._language)
        record.dropped_before, self.dropped = self.dropped, 0
        return record

    def _run(self) -> None:
        handle, path = None, None
        try:
            while True:
                item = self._queue.get()
                batch = [item]
                while True:  # drain what else is queued, then flush once
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                for pending in batch:
                    if pending is None:
                        if self.dropped:  # no later record will carry them: say so in the server log
                            print(f"inference log: {self.dropped} records dropped at the end (queue full)",
                                  flush=True)
                        return
                    record = self._complete(pending)
                    target = hour_file(self.directory, self.model, self.instance, record.time)
                    if target != path:
                        if handle is not None:
                            handle.close()
                            prune(self.directory, self.retention_s)  # a new hour: drop what expired
                        path = target
                        handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the hour
                    handle.write(record.to_json() + "\n")
                    self.written += 1
                if handle is not None:
                    handle.flush()
        except Exception as exc:  # noqa: BLE001 - a broken log must never take the model down
            print(f"inference log: the writer stopped: {exc.__class__.__name__}: {exc}", flush=True)
        finally:
            if handle is not None:
                handle.close()


def instance_name(model_name: str, instance_name_arg: str) -> str:
    """A file-safe, unique-per-process instance name (Triton's ``model_instance_name`` plus the pid)."""
    return f"{_safe(instance_name_arg or model_name)}-{os.getpid()}"
