"""The data stages bound to the artifact layout: what Airflow tasks and the CLI call.

Each function takes the upstream output's location and returns a ``StageResult``. The
crawl is keyed by its run; every later stage by (its version, the content digests of
its inputs, its settings), so a second call with the same content, even from another
crawl of an unchanged site, returns the finished output instead of redoing it.

A stage's summary (a record) enters its manifest as its JSON: every field, null ones
included, as the stage's own ``summary.json`` holds it.

The end of the module decides what is new enough to publish: the Asset event extras
carry content digests, and :func:`publish_decision` compares them with the last
published event's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.artifacts import StageResult, build_stage, input_ref, latest_output
from llmops.config import LlmopsConfig
from llmops.errors import PermanentError, TransientError
from llmops.layout import Layout
from llmops.records.base import RecordError
from llmops.records.common import InputRef
from llmops.records.crawl import CrawlSummary, ExtractSummary
from llmops.records.data import (
    CardOutput,
    CleanReport,
    CleanSummary,
    CorpusEvent,
    CrawlReport,
    DataCard,
    DataCardFiles,
    DataCardSummary,
    DataEvent,
    DataReport,
    DedupReport,
    ExtractReport,
    LatestDataReport,
    QaEvent,
    TokensEvent,
)
from llmops.records.retrain import IncrementSummary, RetrainBase
from llmops.records.stages import StageInput


class CrawlFailed(TransientError, RuntimeError):
    """A crawl produced no usable page because the site did not answer (5xx, timeouts,
    connection errors, robots.txt unavailable): it may be back by the next try."""


class CrawlRefused(PermanentError, RuntimeError):
    """A crawl produced no usable page and retrying cannot help: the seed is disallowed by
    robots.txt, answers 4xx, redirects off-site, or is not HTML."""


# Failure reasons of a crawl that say nothing about the site's content: a later try may pass.
_TRANSIENT_CRAWL_REASONS = ("robots_unavailable", "timeout", "connection_error", "http_5", "internal:")


def crawl_digest(crawl_dir: Path, shard: int = 0, num_shards: int = 1) -> str:
    """Content digest of a crawl (or of one extract shard of it): (URL, final URL, status,
    body SHA-256, encoding) of every page extract reads, leaving out when, in which order
    and by which link it was fetched.

    A page answered ``304 Not Modified`` on a conditional re-crawl holds the earlier
    fetch's body and response headers (copied from the previous WARC); its status here
    is that stored response's, so the two crawls agree.
    """
    from warcio.archiveiterator import ArchiveIterator

    from llmops.data.extract import shard_of
    from llmops.data.scrape import WARC_FILE, read_index

    pages = []
    with open(Path(crawl_dir) / WARC_FILE, "rb") as fh:
        for record in read_index(crawl_dir):
            if not record.ok or shard_of(record.url, num_shards) != shard:
                continue  # extract never sees it: a failed page is in the report, not the content
            status = record.status
            if record.not_modified and record.warc_offset is not None:
                fh.seek(record.warc_offset)
                status = int(next(iter(ArchiveIterator(fh))).http_headers.get_statuscode())
            pages.append([record.url, record.final_url, status, record.sha256, record.encoding])
    return hashlib.sha256(json.dumps(sorted(pages)).encode()).hexdigest()


def default_crawl_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("cli-%Y%m%dT%H%M%S")


def scrape_stage(cfg: LlmopsConfig, seed_url: str, crawl_id: str, *, sitemap_url: str | None = None,
                 previous: Path | None = None, progress: bool = False, out_dir: Path | None = None) -> StageResult:
    """Crawl ``seed_url``. ``crawl_id`` (the Airflow run id) makes a retry reuse the crawl.

    The previous finished crawl of the same seed, if any, is used for conditional
    re-fetching; it is a bandwidth hint only, the new crawl is complete on its own.
    """
    from llmops.data.scrape import crawl

    if previous is None:
        previous = latest_output(cfg.home, "scrape", where=lambda m: m.inputs.get("seed_url") == seed_url)
    inputs = {"seed_url": seed_url, "sitemap_url": sitemap_url, "crawl_id": crawl_id}

    def build(tmp: Path) -> CrawlSummary:
        summary = crawl(seed_url, tmp, cfg.scrape, sitemap_url=sitemap_url, previous=previous, progress=progress)
        if summary.pages_ok == 0:
            # Nothing usable: fail (so Airflow retries with backoff) instead of publishing an empty
            # crawl, but keep its index, the record of why every URL failed.
            kept = cfg.layout.failed_crawl_index(crawl_id)
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp / "index.jsonl", kept)
            reasons = ", ".join(f"{r}={n}" for r, n in summary.failed_by_reason.items()) or "no URL found"
            transient = any(r.startswith(_TRANSIENT_CRAWL_REASONS) for r in summary.failed_by_reason)
            if transient:
                raise CrawlFailed(f"crawl of {seed_url} fetched no page ({reasons}); is the site up? index: {kept}")
            raise CrawlRefused(f"crawl of {seed_url} fetched no page ({reasons}); check seed_url and the site's "
                               f"robots.txt (retrying cannot help). index: {kept}")
        return summary

    return build_stage(cfg.home, "scrape", inputs, cfg.scrape.model_dump(mode="json"), build, out_dir=out_dir,
                       digest=crawl_digest)


def extract_stage(cfg: LlmopsConfig, crawl_dir: Path, shard: int = 0, num_shards: int = 1, *,
                  progress: bool = False, out_dir: Path | None = None) -> StageResult:
    from llmops.data.extract import run_extract

    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is outside 0..{num_shards - 1}")
    # Keyed on this shard's pages only: a changed page re-extracts its own shard.
    crawl = InputRef(path=str(crawl_dir), hash=crawl_digest(Path(crawl_dir), shard, num_shards))
    inputs: dict[str, StageInput] = {"crawl": crawl, "shard": shard, "num_shards": num_shards}
    return build_stage(
        cfg.home, "extract", inputs, cfg.extract.model_dump(mode="json"),
        lambda tmp: run_extract(Path(crawl_dir), tmp, cfg.extract, shard, num_shards, progress=progress),
        out_dir=out_dir,
    )


def clean_stage(cfg: LlmopsConfig, docs_path: Path, *, progress: bool = False,
                out_dir: Path | None = None) -> StageResult:
    from llmops.data.clean import run_clean

    docs_path = _docs_file(docs_path, "docs.parquet")
    inputs = {"docs": input_ref(docs_path)}
    return build_stage(
        cfg.home, "clean", inputs, cfg.clean.model_dump(mode="json"),
        lambda tmp: run_clean(docs_path, tmp, cfg.clean, progress=progress),
        out_dir=out_dir,
    )


def dedup_stage(cfg: LlmopsConfig, docs_paths: list[Path], *, out_dir: Path | None = None) -> StageResult:
    from llmops.data.dedup import run_dedup

    # A shard named twice would count every document as its own duplicate.
    docs_paths = sorted({_docs_file(p, "docs.parquet").resolve() for p in docs_paths})
    # Sorted by content: run_dedup orders documents by URL, so shard order changes nothing.
    inputs = {"docs": sorted((input_ref(p) for p in docs_paths), key=lambda ref: ref.hash)}
    return build_stage(
        cfg.home, "dedup", inputs, cfg.dedup.model_dump(mode="json"),
        lambda tmp: run_dedup(docs_paths, tmp, cfg.dedup),
        out_dir=out_dir,
    )


def _docs_file(path: Path, name: str) -> Path:
    """Accept a stage directory or the Parquet file inside it."""
    path = Path(path)
    return path / name if path.is_dir() else path


# ---- the whole first half, in one process (CLI `llmops data run`, tests, bench) ---------


def run_data_pipeline(cfg: LlmopsConfig, seed_url: str | None = None, crawl_id: str | None = None,
                      progress: bool = False, full: bool = False) -> DataReport:
    """scrape -> extract/clean per shard -> dedup (-> redact -> Q&A, tokenizer -> encode -> data
    card when ``full``), in this process, the same stages as the DAG. Returns the run report."""
    seed_url = seed_url or cfg.data.seed_url
    crawl = scrape_stage(cfg, seed_url, crawl_id or default_crawl_id(), sitemap_url=cfg.data.sitemap_url,
                         progress=progress)
    n = cfg.data.num_shards
    extracted = [extract_stage(cfg, crawl.path, i, n, progress=progress) for i in range(n)]
    cleaned = [clean_stage(cfg, e.path, progress=progress) for e in extracted]
    corpus = dedup_stage(cfg, [c.path for c in cleaned])
    report = build_report(crawl, extracted, cleaned, corpus)
    if not full:
        return report
    redacted = redact_stage(cfg, corpus.path, progress=progress)
    qa = qa_stage(cfg, redacted.path)
    tokenizer = tokenizer_stage(cfg, redacted.path)
    tokens = encode_stage(cfg, redacted.path, tokenizer.path, progress=progress)
    card = data_card_stage(cfg, report, redacted, qa, tokenizer, tokens)
    return report.model_copy(update={"data_card": data_card_files(card.path)})


def _counts(summaries: list[dict[str, int]]) -> dict[str, int]:
    """Counts by reason, summed over the shards."""
    total: dict[str, int] = {}
    for counts in summaries:
        for reason, n in counts.items():
            total[reason] = total.get(reason, 0) + n
    return dict(sorted(total.items()))


_CRAWL_FIELDS = ("seed_url", "urls_seen", "pages_ok", "pages_failed", "failed_by_reason", "not_modified",
                 "pages_per_s")


def build_report(crawl: StageResult, extracted: list[StageResult], cleaned: list[StageResult],
                 corpus: StageResult) -> DataReport:
    """The run summary people read: pages by outcome, documents by filter, duplicates."""
    extract = [ExtractSummary.load(r.summary, source=f"{r.path} summary") for r in extracted]
    clean = [CleanSummary.load(r.summary, source=f"{r.path} summary") for r in cleaned]
    return DataReport(
        crawl=CrawlReport.model_validate({"path": str(crawl.path), "key": crawl.key,
                                          "content_hash": crawl.content_hash, "reused": crawl.reused,
                                          **{k: crawl.summary.get(k) for k in _CRAWL_FIELDS}}),
        extract=ExtractReport(docs_out=sum(s.docs_out for s in extract),
                              dropped_by_reason=_counts([s.dropped_by_reason for s in extract]),
                              shards=len(extracted), reused=all(r.reused for r in extracted)),
        clean=CleanReport(docs_out=sum(s.docs_out for s in clean),
                          dropped_by_filter=_counts([s.dropped_by_filter for s in clean]),
                          reused=all(r.reused for r in cleaned)),
        dedup=DedupReport.load(corpus.summary | {"reused": corpus.reused}, source=f"{corpus.path} summary"),
        corpus=corpus.ref(),
    )


def format_report(report: DataReport) -> str:
    """A short plain-text rendering of ``build_report``'s result."""
    c, e, k, d = report.crawl, report.extract, report.clean, report.dedup

    def reasons(counts: dict[str, int]) -> str:
        return ", ".join(f"{r}={n}" for r, n in counts.items()) or "none"

    lines = [
        "llmops_data summary",
        f"  crawl      {c.seed_url}: {c.pages_ok} pages fetched, {c.pages_failed} failed "
        f"({reasons(c.failed_by_reason)}); {c.not_modified or 0} not modified",
        f"  extract    {e.docs_out} documents from {e.shards} shards; dropped: {reasons(e.dropped_by_reason)}",
        f"  clean      {k.docs_out} kept; dropped by filter: {reasons(k.dropped_by_filter)}",
        f"  dedup      {d.docs_out} kept of {d.docs_in}: {d.exact_duplicates_removed} exact and "
        f"{d.near_duplicates_removed} near duplicates removed in {d.clusters} clusters",
        f"  deduped    {report.corpus.path}/corpus.parquet (hash {report.corpus.hash})",
    ]
    if report.data_card:
        lines.append(f"  data card  {report.data_card.markdown}")
    return "\n".join(lines)


REPORT_KIND = "llmops_data"
"""``reports/llmops_data/``: the DAG's reports."""


def data_card_files(card_dir: Path) -> DataCardFiles:
    """Where the data card stage output ``card_dir`` holds the card."""
    card_dir = Path(card_dir)
    return DataCardFiles(markdown=str(card_dir / "data_card.md"), json_file=str(card_dir / DataCard.NAME))


def write_report(home: Path, run_id: str, report: DataReport, data_card: Path | None = None) -> Path:
    """Keep the run report under ``reports/llmops_data/<run_id>/`` and point ``latest`` at it."""
    from llmops.data.report_plot import plot_funnel

    layout = Layout(home)
    out = layout.report(REPORT_KIND, run_id)
    out.mkdir(parents=True, exist_ok=True)
    if data_card is not None:
        report = report.model_copy(update={"data_card": data_card_files(data_card)})
    report.write(out / DataReport.NAME)
    (out / "summary.txt").write_text(format_report(report) + "\n")
    plot_funnel(report, out / "funnel.png")
    LatestDataReport(run_id=run_id, path=str(out), data_card=report.data_card).write(layout.latest_report(REPORT_KIND))
    return out


# ---- the second half: redact -> Q&A -> tokenizer -> encode -> data card ----------------


def redact_stage(cfg: LlmopsConfig, corpus: Path, *, progress: bool = False,
                 out_dir: Path | None = None) -> StageResult:
    """PII redaction of the deduplicated corpus (Presidio)."""
    from llmops.data.pii import run_redact

    corpus_path = _docs_file(corpus, "corpus.parquet")
    return build_stage(
        cfg.home, "redact", {"corpus": input_ref(corpus_path)},
        # The salt is a secret: a keyed fingerprint identifies it (a new salt rebuilds the
        # output) without revealing it. Worker counts do not change the output.
        cfg.pii.model_dump(mode="json", exclude={"hash_salt", "processes", "batch_size"})
        | {"salt_fingerprint": cfg.pii.salt_fingerprint()},
        lambda tmp: run_redact(corpus_path, tmp, cfg.pii, progress=progress),
        out_dir=out_dir,
    )


def qa_stage(cfg: LlmopsConfig, redacted: Path, *, out_dir: Path | None = None) -> StageResult:
    from llmops.data.qa import run_qa

    corpus_path = _docs_file(redacted, "corpus.parquet")
    return build_stage(
        cfg.home, "qa", {"corpus": input_ref(corpus_path)}, cfg.qa.model_dump(mode="json"),
        lambda tmp: run_qa(corpus_path, tmp, cfg.qa.heldout_fraction, cfg.qa.seed),
        out_dir=out_dir,
    )


def tokenizer_stage(cfg: LlmopsConfig, redacted: Path, *, out_dir: Path | None = None) -> StageResult:
    """Train a byte-level BPE tokenizer on the redacted corpus, or reuse ``tokenizer.reuse``."""
    from llmops.data.qa import chat_template
    from llmops.tokenizer.train import run_tokenizer

    corpus_path = _docs_file(redacted, "corpus.parquet")
    reuse = cfg.tokenizer.reuse
    # The corpus is an input either way: a reused tokenizer's stats are measured on it.
    inputs = {"corpus": input_ref(corpus_path)}
    if reuse:
        inputs["reuse"] = input_ref(_tokenizer_file(Path(reuse)))
    config = cfg.tokenizer.model_dump(mode="json", include={"vocab_size", "min_frequency", "end_of_text",
                                                            "pad_token", "template_tokens", "reuse"})
    return build_stage(
        cfg.home, "tokenizer", inputs, config,
        lambda tmp: run_tokenizer(corpus_path, tmp, cfg.tokenizer, chat_template=chat_template(cfg.tokenizer)),
        out_dir=out_dir,
    )


def _tokenizer_file(path: Path) -> Path:
    return path / "tokenizer.json" if path.is_dir() else path


def encode_stage(cfg: LlmopsConfig, redacted: Path, tokenizer_dir: Path, *, progress: bool = False,
                 out_dir: Path | None = None) -> StageResult:
    """Token-ID shards (train/validation) of the redacted corpus."""
    from llmops.tokenizer.encode import encode_corpus

    corpus_path = _docs_file(redacted, "corpus.parquet")
    config = cfg.tokenizer.model_dump(mode="json", include={"validation_fraction", "window", "stride",
                                                            "end_of_text", "pad_token"})
    return build_stage(
        cfg.home, "tokens",
        {"corpus": input_ref(corpus_path), "tokenizer": input_ref(_tokenizer_file(Path(tokenizer_dir)))}, config,
        lambda tmp: encode_corpus(corpus_path, Path(tokenizer_dir), tmp, cfg.tokenizer, progress=progress),
        out_dir=out_dir,
    )


def data_card_stage(cfg: LlmopsConfig, report: DataReport, redacted: StageResult, qa: StageResult,
                    tokenizer: StageResult, tokens: StageResult, *, run_name: str = "llmops_data",
                    corpus: StageResult | None = None, retrain: RetrainBase | None = None,
                    increment: IncrementSummary | None = None) -> StageResult:
    """Contamination check + data card (JSON, Markdown; logged to MLflow when configured).

    ``corpus`` is the corpus trained on when it is not the whole ``redacted`` one: a
    retraining's new documents and replay sample (``llmops.retrain.incremental``), whose card
    also records ``retrain`` (the champion it continues from) and ``increment``.
    """
    from llmops.data.decontaminate import contamination_report
    from llmops.data.qa import FINETUNE_FILE, HELDOUT_FILE, read_pairs
    from llmops.data.store import read_docs
    from llmops.records.data import QaSummary, RedactSummary, TokenizerStats, TokenShardMeta
    from llmops.registry.data_card import build_data_card, log_data_card, write_data_card

    stages = {"corpus": corpus or redacted, "qa": qa, "tokenizer": tokenizer, "tokens": tokens}

    def build(tmp: Path) -> DataCardSummary:
        docs = {d["id"]: d["text"] for d in read_docs(stages["corpus"].path / "corpus.parquet")}
        val_ids = set(json.loads((tokens.path / "validation_docs.json").read_text()))
        finetune = read_pairs(qa.path / FINETUNE_FILE)
        heldout = read_pairs(qa.path / HELDOUT_FILE)
        training = [t for i, t in docs.items() if i not in val_ids]
        training += [f"{p.question} {p.answer}" for p in finetune]
        contamination = contamination_report(
            training,
            {"heldout_questions": [p.question for p in heldout],
             "validation_documents": [docs[i] for i in sorted(val_ids)]},
            n=cfg.qa.decontamination_ngram, threshold=cfg.qa.decontamination_threshold)
        # Content hashes (of every file, from the manifests) next to the stage keys.
        outputs = {name: CardOutput(path=str(r.path), hash=r.manifest.output_hash, content_hash=r.content_hash,
                                    stage_key=r.key, files=r.manifest.outputs) for name, r in stages.items()}
        card = build_data_card(
            report=report, pii=RedactSummary.load(redacted.summary), qa=QaSummary.load(qa.summary),
            tokenizer=TokenizerStats.load(tokenizer.summary), tokens=TokenShardMeta.load(tokens.summary),
            contamination=contamination, outputs=outputs, retrain=retrain, increment=increment)
        paths = write_data_card(card, tmp)
        return DataCardSummary(contamination=contamination, mlflow_run_id=log_data_card(paths, card, run_name, cfg=cfg))

    # New per crawl: the card records that crawl (its key holds the run), even when every
    # stage after it was reused.
    inputs: dict[str, StageInput] = {name: r.input_ref() for name, r in stages.items()}
    inputs["crawl"] = {"key": report.crawl.key, "path": report.crawl.path}
    config = cfg.qa.model_dump(mode="json")
    if retrain is not None:
        inputs["redacted"] = redacted.input_ref()
        config["retrain"] = retrain.model_dump(mode="json")
    return build_stage(cfg.home, "data_card", inputs, config, build)


# ---- what to publish: Asset event extras with content digests, and the decision ------
#
# An event's extra says where the output is (``path``, ``hash``: its stage key) and, under
# ``content``, the content digest of every part a consumer depends on. A DAG compares the
# extra it would publish with the last published event's (``inlet_events``) and publishes
# only when some part differs: a re-run on an unchanged site starts no training.


def corpus_event_extra(redacted: StageResult) -> CorpusEvent:
    """Extra of ``llmops://corpus``: the PII-redacted corpus."""
    return CorpusEvent(path=str(redacted.path), hash=redacted.key, file="corpus.parquet",
                       content={"corpus": redacted.content_hash})


def qa_event_extra(qa: StageResult) -> QaEvent:
    """Extra of ``llmops://qa``: the fine-tuning and held-out question/answer pairs."""
    from llmops.data.qa import FINETUNE_FILE, HELDOUT_FILE

    return QaEvent(path=str(qa.path), hash=qa.key, finetune=FINETUNE_FILE, heldout=HELDOUT_FILE,
                   content={"qa": qa.content_hash})


def tokens_event_extra(tokens: StageResult, tokenizer: StageResult, qa: StageResult,
                       data_card: StageResult) -> TokensEvent:
    """Extra of ``llmops://tokens``: the shards, and everything training needs beside them.

    Only the shards, the tokenizer (``vocab``) and the Q&A pairs are content (what training
    keys on); the data card is new per run and is named for lineage only.
    """
    return TokensEvent(path=str(tokens.path), hash=tokens.key, vocab=str(tokenizer.path), qa=str(qa.path),
                       data_card=str(data_card.path), data_card_hash=data_card.key,
                       content={"shards": tokens.content_hash, "vocab": tokenizer.content_hash,
                                "qa": qa.content_hash})


@dataclass(frozen=True)
class PublishDecision:
    publish: bool
    """True when some part's content differs from the last published event's (or none was)."""
    changed: tuple[str, ...]
    """The parts that differ (all of them when nothing comparable was published before)."""
    reason: str
    """One line for the task log: what changed, or since which data card nothing did."""
    last_data_card: str | None = None
    """The data card the last published event named, if any."""


def publish_decision(extra: DataEvent, last_extra: Mapping[str, Any] | DataEvent | None) -> PublishDecision:
    """Whether ``extra`` (built by one of the ``*_event_extra`` functions above) announces
    new content compared with ``last_extra``, the extra of the last event published on
    the same Asset (None when there was none), read as the same record."""
    content = extra.content or {}
    parts = tuple(sorted(content))
    if not last_extra:
        return PublishDecision(True, parts, "nothing published before", None)
    try:
        last = type(extra).load(last_extra, source="the last event's extra")
    except RecordError as exc:
        return PublishDecision(True, parts, f"nothing comparable published before ({exc})", None)
    last_card = last.data_card if isinstance(last, TokensEvent) else None
    if last.content is None:
        return PublishDecision(True, parts, "the last event carries no content digests", last_card)
    changed = tuple(p for p in parts if content[p] != last.content.get(p))
    if changed:
        return PublishDecision(True, changed, f"new content: {', '.join(changed)}", last_card)
    since = f"data card {last_card}" if last_card else last.path
    return PublishDecision(False, (), f"no new data since {since}: {', '.join(parts)} unchanged", last_card)
