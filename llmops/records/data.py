"""Records of the data stages: what each stage measured, the token shards' ``meta.json``,
the Q&A pairs, the data card, the run report, and the Asset events that announce them.

Stage summaries (:class:`StageSummary`) are parts of a stage output, versioned by the
stage's version (``llmops.artifacts.STAGE_VERSIONS``): they are written, into their own
file, the manifest, the data card and the run report, exactly as the stage measured them,
without a ``schema_version`` of their own. The run report, the data card and the Asset
events are records of their own and carry one.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict, Field, TypeAdapter

from llmops.records.base import Record
from llmops.records.common import OutputRef, Ref
from llmops.records.retrain import IncrementSummary, RetrainBase
from llmops.records.stages import LatestReport

# ---- what each stage measured --------------------------------------------------------


class StageSummary(Record):
    """A stage's summary (``summary.json``, and the manifest's ``summary``).

    ``schema_version`` is read but never written: ``meta.json`` is content (the tokens
    stage's digest covers it, so a new key would change every key after it), and a
    summary changes with its stage, whose version is bumped then. A stored summary is
    therefore always read as version 0, which has the fields of version 1.
    """

    NAME: ClassVar[str] = "summary.json"

    schema_version: int = Field(1, exclude=True)


class CleanSummary(StageSummary):
    """What clean kept of one shard, and why it dropped the rest."""

    docs_in: int
    docs_out: int
    dropped_by_filter: dict[str, int]
    """Documents dropped by each filter (``length``, ``language``, …)."""
    sentences: int
    chars: int


class DedupSummary(StageSummary):
    """Documents in and out of dedup, by kind of duplicate."""

    docs_in: int
    docs_out: int
    exact_duplicates_removed: int
    near_duplicates_removed: int
    clusters: int
    duplicate_rate: float
    tokens_estimate_words: int


class ClusterMember(Ref):
    url: str
    reason: str
    """``exact_duplicate`` or ``near_duplicate``."""
    similarity: float | None


class DuplicateCluster(Ref):
    """One entry of dedup's ``clusters.json``: a representative and the members removed for it."""

    cluster_id: str
    representative: str
    """The kept document's URL."""
    members: list[ClusterMember]


class RedactSummary(StageSummary):
    """PII found and redacted (counts only: never a value)."""

    docs: int
    docs_with_pii: int
    pii_counts_by_type: dict[str, int]
    docs_per_s: float | None
    seconds: float
    operator: str
    entities: list[str]
    processes: int


class QaSummary(StageSummary):
    """Question/answer pairs on each side of the page split."""

    finetune_pairs: int
    heldout_pairs: int
    finetune_pages: int
    heldout_pages: int
    pages_without_pairs: int
    heldout_fraction: float
    seed: int


class TextStats(Ref):
    """How a tokenizer encodes a set of texts."""

    n_docs: int
    n_tokens: int
    n_bytes: int
    tokens_per_doc: float
    bytes_per_token: float
    fertility: float
    """Tokens per whitespace-separated word."""
    unk_rate: float


class TokenizerStats(StageSummary):
    """``tokenizer_stats.json``: the tokenizer's special ids, its SHA-256, its fit to the corpus."""

    NAME: ClassVar[str] = "tokenizer_stats.json"

    vocab_size: int
    num_merges: int
    special_tokens: dict[str, int]
    eos_token: str
    eos_id: int
    pad_token: str
    pad_id: int
    has_chat_template: bool
    tokenizer_sha256: str
    training_texts: TextStats | None = None
    """Measured on the corpus texts (absent when the tokenizer was saved without them)."""
    reused: bool | None = None
    reused_from: str | None = None
    """The ``tokenizer.json`` copied instead of training one."""
    train_seconds: float | None = None


class TokenSplit(Ref):
    n_docs: int
    n_tokens: int
    n_bytes: int


class TokenShardMeta(StageSummary):
    """``meta.json`` next to the token shards: how to read them (dtype, special ids) and
    what they hold. Training and evaluation read it; its keys are the file's."""

    NAME: ClassVar[str] = "meta.json"

    format_version: int
    """The layout of the shard files (``train.bin``, ``train.idx.npy``, …)."""
    dtype: str
    vocab_size: int
    eos_token: str
    eos_id: int
    pad_token: str
    pad_id: int | None
    tokenizer_sha256: str
    """The SHA-256 of the ``tokenizer.json`` the shards were encoded with."""
    validation_fraction: float
    window: int
    """The trainer's default sliding window, in tokens."""
    stride: int
    splits: dict[str, TokenSplit]
    """``train`` and ``validation``."""
    n_tokens: int
    n_docs: int
    n_bytes: int
    bytes_per_token: float
    eos_after_every_document: bool
    special_token_strings_in_text: str
    num_workers: int
    encode_seconds: float
    encode_mb_per_s: float | None


class ContaminationRow(Ref):
    """One evaluation set against the training text (``llmops.data.decontaminate``)."""

    items: int
    contaminated: int
    rate: float
    mean_ngram_overlap: float


class DataCardSummary(StageSummary):
    """What the data card stage measured: contamination, and the MLflow run the card went to."""

    contamination: dict[str, ContaminationRow]
    mlflow_run_id: str | None


# ---- the Q&A pairs: one line of finetune.jsonl / heldout.jsonl ------------------------


class QaPair(Ref):
    """A question about a page and a sentence of that page answering it."""

    id: str
    question: str
    answer: str
    page_id: str
    url: str
    title: str


QA_PAIR = TypeAdapter(QaPair)
"""Validates one line of ``finetune.jsonl`` / ``heldout.jsonl``."""


# ---- the run report (reports/llmops_data/<run>/) --------------------------------------


class CrawlReport(Ref):
    """The crawl's output and what it fetched (from the scrape stage's summary)."""

    path: str
    key: str
    content_hash: str
    reused: bool
    seed_url: str
    urls_seen: int | None = None
    pages_ok: int
    pages_failed: int
    failed_by_reason: dict[str, int]
    not_modified: int | None = None
    pages_per_s: float | None = None


class ExtractReport(Ref):
    docs_out: int
    dropped_by_reason: dict[str, int]
    shards: int
    reused: bool


class CleanReport(Ref):
    docs_out: int
    dropped_by_filter: dict[str, int]
    reused: bool


class DedupReport(DedupSummary):
    reused: bool


class DataCardFiles(Ref):
    """Where a run's data card is, as JSON and as Markdown."""

    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    markdown: str
    json_file: str = Field(alias="json")


class DataReport(Record):
    """``summary.json`` of ``reports/llmops_data/<run>/``: pages by outcome, documents by
    filter, duplicates, the deduplicated corpus, and the data card once written."""

    NAME: ClassVar[str] = "summary.json"

    crawl: CrawlReport
    extract: ExtractReport
    clean: CleanReport
    dedup: DedupReport
    corpus: OutputRef
    data_card: DataCardFiles | None = None


class LatestDataReport(LatestReport):
    """``reports/llmops_data/latest.json``: the newest run report, and its data card."""

    data_card: DataCardFiles | None = None


# ---- the data card ---------------------------------------------------------------------


class DataSource(Ref):
    seed_url: str
    pages_fetched: int
    pages_failed: int
    failed_by_reason: dict[str, int]
    not_modified: int | None = None


class DocumentCounts(Ref):
    extracted: int
    extract_dropped_by_reason: dict[str, int]
    kept_by_quality_filters: int
    dropped_by_filter: dict[str, int]
    after_dedup: int
    exact_duplicates_removed: int
    near_duplicates_removed: int
    duplicate_rate: float


class CardOutput(Ref):
    """A stage output the card describes."""

    path: str
    hash: str
    """The hash of every file's bytes (the manifest's ``output_hash``)."""
    content_hash: str
    stage_key: str
    files: dict[str, str]
    """Every file and its SHA-256."""


class DataCard(Record):
    """``data_card.json``: what went into a training corpus. Counts only: never a
    document's text or a PII value."""

    NAME: ClassVar[str] = "data_card.json"

    sources: list[DataSource]
    documents: DocumentCounts
    pii: RedactSummary
    qa: QaSummary
    tokenizer: TokenizerStats
    tokens: TokenShardMeta
    contamination: dict[str, ContaminationRow]
    outputs: dict[str, CardOutput]
    """``corpus``, ``qa``, ``tokenizer``, ``tokens``."""
    retrain: RetrainBase | None = None
    """An incremental card (``llmops_retrain``): the champion it continues from, and why."""
    increment: IncrementSummary | None = None
    """An incremental card: the new documents, the replay sample, the Q&A pairs kept and added."""


# ---- Asset events: llmops://corpus, llmops://qa, llmops://tokens ------------------------


class DataEvent(Record):
    """The extra of a data Asset event: where the output is and its content digests."""

    path: str
    hash: str
    """The stage key."""
    content: dict[str, str] | None = None
    """The content digest of every part a consumer depends on (None on events published
    before digests were recorded): what decides whether an event is new."""


class CorpusEvent(DataEvent):
    """``llmops://corpus``: the PII-redacted corpus."""

    file: str


class QaEvent(DataEvent):
    """``llmops://qa``: the fine-tuning and held-out pairs."""

    finetune: str
    heldout: str


class TokensEvent(DataEvent):
    """``llmops://tokens``: the shards, and what training needs beside them.

    No key contains "token": Airflow's secrets masker hides the value of any such key
    ("tokenizer", "tokens") in the UI and the REST API.
    """

    vocab: str
    """The tokenizer stage output."""
    qa: str
    data_card: str
    data_card_hash: str
    """The data card's stage key: named for lineage, not content."""
    retrain: RetrainBase | None = None
    """Set by ``llmops_retrain``: continue from this champion's weights (``retrain.*`` recipe)."""
