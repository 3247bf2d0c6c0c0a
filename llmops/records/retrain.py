"""Records of retraining: what ``llmops_retrain`` decided and why, the champion a retraining
starts from (carried by the incremental data card and its ``llmops://tokens`` event), and the
selection of the documents that are new to the champion."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar, Literal

from llmops.records.base import Record
from llmops.records.common import Ref

RetrainTrigger = Literal["drift", "schedule", "manual"]
"""What started a retraining: an ``llmops://drift`` event, the weekly timetable, a person."""


class RetrainBase(Ref):
    """The champion a retraining starts from, and why it was retrained: recorded in the
    incremental data card and announced with its shards (``TokensEvent.retrain``), so
    ``llmops_train`` continues from these weights and the new version's tags name them."""

    version: str
    """The champion's registered version (tag ``llmops.base_version`` of the new one)."""
    model_uri: str
    """``models:/<name>/<version>``: the weights continued pretraining starts from."""
    data_card: str
    """The champion's data card (its Q&A set and tokenizer are reused)."""
    drift_report: str | None = None
    """The ``drift.json`` that triggered it (tag ``llmops.drift_report``); None when scheduled or by hand."""
    trigger: RetrainTrigger
    run_id: str
    """The ``llmops_retrain`` run."""


class IncrementSummary(Record):
    """``summary.json`` of the ``increment`` stage: which documents are new to the champion."""

    champion_version: str
    chain: list[str]
    """The versions whose training documents count as known: the champion and its bases
    (``llmops.base_version``, transitively), newest first."""
    known_documents: int
    """Distinct documents (content hashes of the redacted text) along the chain."""
    corpus_documents: int
    """Documents of the current (re-crawled, redacted) corpus."""
    new_documents: int
    """Of those, the ones no version of the chain was trained on (new or changed pages)."""
    replay_documents: int
    """Documents of the champion's corpus sampled beside them (``retrain.replay_fraction``)."""
    new_pages: list[str]
    """URLs of the new documents."""
    new_qa_pairs: int
    """Q&A pairs of the new pages (fine-tuning and held-out)."""
    base_qa_pairs: int
    """Q&A pairs of the champion's set, kept (fine-tuning and held-out)."""


RetrainOutcome = Literal["started", "skipped"]


class RetrainDecision(Record):
    """One line of ``retrain/decisions.jsonl``: what a ``llmops_retrain`` run decided and why."""

    NAME: ClassVar[str] = "decisions.jsonl"

    time: dt.datetime
    run_id: str
    trigger: RetrainTrigger
    outcome: RetrainOutcome
    reason: str
    """``no champion yet: …``, ``retrain in progress …``, ``cooldown …``, ``no new data since …``,
    ``already failed the gate (run …)``, or what was published."""
    champion_version: str | None = None
    drift_report: str | None = None
    data_card: str | None = None
    """The incremental data card, once built."""
    content: dict[str, str] | None = None
    """Content digests of the incremental data (shards, tokenizer, Q&A): what "the same data" means."""


class RetrainPlan(Record):
    """The ``guards`` task's XCom: the champion to start from and what triggered the run."""

    champion: RetrainBase
    clear_failed_gate: bool = False
    """A person cleared an earlier failed-gate attempt with the same data (the Param)."""
