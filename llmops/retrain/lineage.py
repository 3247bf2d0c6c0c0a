"""What the serving champion was trained on: its data card, the cards of the versions it
continued from, and the documents and Q&A pairs they hold, by content.

A retrained version is trained on an incremental card (its new documents, a replay sample
and the Q&A set), so what "the champion knows" is the union along its ``llmops.base_version``
chain, not its own card alone. Documents and pairs count by the content of their redacted
text: a changed page is a new document, an unchanged one under a new crawl is not.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from llmops.artifacts import read_manifest
from llmops.config import LlmopsConfig
from llmops.errors import PermanentError
from llmops.records.common import InputRef
from llmops.records.data import QaPair

MAX_CHAIN = 100
"""A base-version chain longer than this is a loop in the tags, not history."""


class LineageError(PermanentError, RuntimeError):
    """The champion's lineage cannot be followed: a version without a data card, a card deleted."""


@dataclass(frozen=True)
class Champion:
    """The version ``champion`` points to, and the data it was trained on."""

    name: str
    version: str
    data_card: Path
    """``artifacts/data_card/<key>/`` of the card the version was trained on."""
    base_version: str | None
    """The version it continued from (a retrained version), else None."""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def text_hash(text: str) -> str:
    """The content hash a document counts by (its redacted text)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def pair_hash(pair: QaPair) -> str:
    """The content hash a Q&A pair counts by (question and answer)."""
    return hashlib.sha256(f"{pair.question}\0{pair.answer}".encode()).hexdigest()[:32]


def registered_version(cfg: LlmopsConfig, version: str, *, name: str | None = None) -> Champion:
    """Version ``version`` of the served model, with its data card (tag ``data_card_hash``)."""
    from mlflow.exceptions import MlflowException

    from llmops.registry import model_registry as reg

    name = name or reg.SERVED_MODEL
    try:
        tags = reg.version_tags(cfg, version, name=name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            raise
        raise LineageError(f"models:/{name}/{version} is not in the registry (deleted?): the versions it was "
                           f"retrained from cannot be followed") from None
    key = tags.get(reg.DATA_CARD_TAG)
    if not key or key == "None":
        raise LineageError(f"models:/{name}/{version} names no data card (tag {reg.DATA_CARD_TAG}): what it was "
                           f"trained on is unknown, so a retraining cannot tell new data from old; trigger "
                           f"llmops_data to train a new model from scratch")
    card = cfg.layout.stage_output("data_card", key)
    if not card.is_dir():
        raise LineageError(f"models:/{name}/{version} was trained on data card {key}, which is not in {card.parent} "
                           f"(deleted?)")
    return Champion(name=name, version=str(version), data_card=card,
                    base_version=tags.get(reg.BASE_VERSION_TAG) or None)


def serving_champion(cfg: LlmopsConfig) -> Champion | None:
    """The version alias ``champion`` points to (None when nothing was deployed yet)."""
    from llmops.registry import model_registry as reg

    version = reg.version_for(cfg, reg.SERVED_MODEL, reg.CHAMPION)
    return registered_version(cfg, version) if version else None


def chain(cfg: LlmopsConfig, champion: Champion) -> list[Champion]:
    """``champion`` and every version it continued from, newest first."""
    versions = [champion]
    while versions[-1].base_version:
        if len(versions) > MAX_CHAIN or versions[-1].base_version in {v.version for v in versions}:
            raise LineageError(f"the {'llmops.base_version'} tags of models:/{champion.name} loop: "
                               f"{[v.version for v in versions]}")
        versions.append(registered_version(cfg, versions[-1].base_version, name=champion.name))
    return versions


def card_input(card: Path, name: str) -> Path:
    """The path of input ``name`` (``corpus``, ``qa``, ``tokenizer``, ``tokens``) of a data card."""
    inputs = read_manifest(card).inputs
    if name not in inputs:
        raise LineageError(f"data card {card} names no {name} input")
    return Path(InputRef.model_validate(inputs[name]).path)


@dataclass(frozen=True)
class Known:
    """What a chain of versions was trained on, by content."""

    documents: dict[str, Path]
    """Document content hash -> the corpus file holding it (the newest card's, when several)."""
    pairs: set[str]
    """Q&A pair content hashes (fine-tuning and held-out)."""


def known(versions: list[Champion]) -> Known:
    """The documents and Q&A pairs of every card along ``versions``."""
    from llmops.data.qa import FINETUNE_FILE, HELDOUT_FILE, read_pairs
    from llmops.data.store import RedactedDoc, read_docs

    documents: dict[str, Path] = {}
    pairs: set[str] = set()
    for version in versions:
        corpus = card_input(version.data_card, "corpus") / "corpus.parquet"
        for doc in read_docs(corpus, RedactedDoc):
            documents.setdefault(text_hash(doc["text"]), corpus)
        qa = card_input(version.data_card, "qa")
        pairs.update(pair_hash(p) for name in (FINETUNE_FILE, HELDOUT_FILE) for p in read_pairs(qa / name))
    return Known(documents, pairs)


def nothing_new(cfg: LlmopsConfig, corpus: Path, qa: Path) -> str | None:
    """Why a data run's output is nothing new for the serving champion: every document of
    ``corpus`` (a redacted ``corpus.parquet``) and every pair of the Q&A set ``qa`` was trained
    on along its chain. None when there is no champion or something is new."""
    from llmops.data.qa import FINETUNE_FILE, HELDOUT_FILE, read_pairs
    from llmops.data.store import RedactedDoc, read_docs

    try:
        champion = serving_champion(cfg)
        seen = known(chain(cfg, champion)) if champion else None
    except LineageError as exc:  # a version registered by hand: judge by the last event alone
        logging.getLogger(__name__).warning("%s", exc)
        return None
    if champion is None or seen is None:
        return None
    if any(text_hash(d["text"]) not in seen.documents for d in read_docs(corpus, RedactedDoc)):
        return None
    if any(pair_hash(p) not in seen.pairs for name in (FINETUNE_FILE, HELDOUT_FILE) for p in read_pairs(qa / name)):
        return None
    return f"no new data since data card {champion.data_card} (champion v{champion.version})"
