"""The data stages bound to the artifact layout: what Airflow tasks and the CLI call.

Each function takes the upstream output's location, derives its own content key
from (inputs, config, code version) and returns a ``StageResult``: a second call
with the same inputs returns the finished output instead of redoing it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

from llmops.artifacts import MANIFEST, StageResult, build_stage, file_sha256, latest_output, read_manifest
from llmops.config import LlmopsConfig
from llmops.data import store

class CrawlFailed(RuntimeError):
    """A crawl produced no usable page (site down, seed disallowed, wrong URL)."""


def input_ref(path: Path) -> dict[str, str]:
    """How an input is named in a manifest: its path and a hash that identifies it.

    A stage directory is identified by its manifest key; a loose file (CLI use) by
    its SHA-256, so editing the file by hand invalidates what was built from it.
    """
    path = Path(path)
    stage_dir = path if path.is_dir() else path.parent
    if (stage_dir / MANIFEST).exists():
        return {"path": str(path), "hash": read_manifest(stage_dir)["key"]}
    if path.is_file():
        return {"path": str(path), "hash": file_sha256(path)[:16]}
    if path.exists():
        raise FileNotFoundError(f"input {path} is not a stage output (no {MANIFEST}) nor a file")
    raise FileNotFoundError(f"input {path} does not exist")


def default_crawl_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("cli-%Y%m%dT%H%M%S")


def scrape_stage(cfg: LlmopsConfig, seed_url: str, crawl_id: str, *, sitemap_url: str | None = None,
                 previous: Path | None = None, progress: bool = False, out_dir: Path | None = None) -> StageResult:
    """Crawl ``seed_url``. ``crawl_id`` (the Airflow run id) makes a retry reuse the crawl.

    The previous finished crawl of the same seed, if any, is used for conditional
    re-fetching; it is a bandwidth hint only, the new crawl is complete on its own.
    """
    from llmops.data.scrape import crawl

    if previous is None:
        previous = latest_output(cfg.home, "scrape", where=lambda m: m["inputs"].get("seed_url") == seed_url)
    inputs = {"seed_url": seed_url, "sitemap_url": sitemap_url, "crawl_id": crawl_id}

    def build(tmp: Path) -> dict[str, Any]:
        summary = crawl(seed_url, tmp, cfg.scrape, sitemap_url=sitemap_url, previous=previous, progress=progress)
        if summary["pages_ok"] == 0:
            # Nothing usable: fail (so Airflow retries with backoff) instead of publishing an empty
            # crawl, but keep its index, the record of why every URL failed.
            kept = Path(cfg.home) / "logs" / "failed-crawls" / f"{_safe_name(crawl_id)}-index.jsonl"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp / "index.jsonl", kept)
            reasons = ", ".join(f"{r}={n}" for r, n in summary["failed_by_reason"].items()) or "no URL found"
            raise CrawlFailed(f"crawl of {seed_url} fetched no page ({reasons}); is the site up? index: {kept}")
        return summary | {"previous_crawl": str(previous) if previous else None}

    return build_stage(cfg.home, "scrape", inputs, cfg.scrape.model_dump(mode="json"), build, out_dir=out_dir)


def extract_stage(cfg: LlmopsConfig, crawl_dir: Path, shard: int = 0, num_shards: int = 1, *,
                  progress: bool = False, out_dir: Path | None = None) -> StageResult:
    from llmops.data.extract import run_extract

    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is outside 0..{num_shards - 1}")
    inputs = {"crawl": input_ref(crawl_dir), "shard": shard, "num_shards": num_shards}
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
    inputs = {"docs": [input_ref(p) for p in docs_paths]}
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
                      progress: bool = False, full: bool = False) -> dict[str, Any]:
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
    return report | {"data_card": {"markdown": str(card.path / "data_card.md"),
                                   "json": str(card.path / "data_card.json")}}


def build_report(crawl: StageResult, extracted: list[StageResult], cleaned: list[StageResult],
                 corpus: StageResult) -> dict[str, Any]:
    """The run summary people read: pages by outcome, documents by filter, duplicates."""
    def add(counts: dict[str, int], more: dict[str, int]) -> dict[str, int]:
        for key, value in more.items():
            counts[key] = counts.get(key, 0) + value
        return dict(sorted(counts.items()))

    extract_drops: dict[str, int] = {}
    clean_drops: dict[str, int] = {}
    for result in extracted:
        extract_drops = add(extract_drops, result.summary.get("dropped_by_reason", {}))
    for result in cleaned:
        clean_drops = add(clean_drops, result.summary.get("dropped_by_filter", {}))
    scrape = crawl.summary
    dedup = corpus.summary
    return {
        "crawl": {"path": str(crawl.path), "reused": crawl.reused, **{k: scrape.get(k) for k in (
            "seed_url", "urls_seen", "pages_ok", "pages_failed", "failed_by_reason", "not_modified",
            "pages_per_s")}},
        "extract": {"docs_out": sum(r.summary.get("docs_out", 0) for r in extracted),
                    "dropped_by_reason": extract_drops, "shards": len(extracted),
                    "reused": all(r.reused for r in extracted)},
        "clean": {"docs_out": sum(r.summary.get("docs_out", 0) for r in cleaned),
                  "dropped_by_filter": clean_drops, "reused": all(r.reused for r in cleaned)},
        "dedup": dedup | {"reused": corpus.reused},
        "corpus": corpus.asset_extra(),
    }


def format_report(report: dict[str, Any]) -> str:
    """A short plain-text rendering of ``build_report``'s result."""
    c, e, k, d = report["crawl"], report["extract"], report["clean"], report["dedup"]

    def reasons(counts: dict[str, int]) -> str:
        return ", ".join(f"{r}={n}" for r, n in counts.items()) or "none"

    lines = [
        "llmops_data summary",
        f"  crawl      {c['seed_url']}: {c['pages_ok']} pages fetched, {c['pages_failed']} failed "
        f"({reasons(c['failed_by_reason'] or {})}); {c.get('not_modified') or 0} not modified",
        f"  extract    {e['docs_out']} documents from {e['shards']} shards; dropped: {reasons(e['dropped_by_reason'])}",
        f"  clean      {k['docs_out']} kept; dropped by filter: {reasons(k['dropped_by_filter'])}",
        f"  dedup      {d['docs_out']} kept of {d['docs_in']}: {d['exact_duplicates_removed']} exact and "
        f"{d['near_duplicates_removed']} near duplicates removed in {d['clusters']} clusters",
        f"  deduped    {report['corpus']['path']}/corpus.parquet (hash {report['corpus']['hash']})",
    ]
    if report.get("data_card"):
        lines.append(f"  data card  {report['data_card']['markdown']}")
    return "\n".join(lines)


def _safe_name(run_id: str) -> str:
    """A run id (``manual__2026-11-23T20:54:39+00:00``) as a file name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id)


def write_report(home: Path, run_id: str, report: dict[str, Any], data_card: Path | None = None) -> Path:
    """Keep the run report under ``reports/llmops_data/<run_id>/`` and point ``latest`` at it."""
    out = Path(home) / "reports" / "llmops_data" / _safe_name(run_id)
    out.mkdir(parents=True, exist_ok=True)
    if data_card is not None:
        report = report | {"data_card": {"markdown": str(Path(data_card) / "data_card.md"),
                                         "json": str(Path(data_card) / "data_card.json")}}
    (out / "summary.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "summary.txt").write_text(format_report(report) + "\n")
    from llmops.data.report_plot import plot_funnel

    plot_funnel(report, out / "funnel.png")
    latest = out.parent / "latest.json"
    tmp = latest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"run_id": run_id, "path": str(out), "data_card": report.get("data_card")}))
    tmp.replace(latest)
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


def data_card_stage(cfg: LlmopsConfig, report: dict[str, Any], redacted: StageResult, qa: StageResult,
                    tokenizer: StageResult, tokens: StageResult, *, run_name: str = "llmops_data") -> StageResult:
    """Contamination check + data card (JSON, Markdown; logged to MLflow when configured)."""
    from llmops.data.decontaminate import contamination_report
    from llmops.registry.data_card import build_data_card, log_data_card, write_data_card

    stages = {"corpus": redacted, "qa": qa, "tokenizer": tokenizer, "tokens": tokens}

    def build(tmp: Path) -> dict[str, Any]:
        docs = {d["id"]: d["text"] for d in store.read_docs(redacted.path / "corpus.parquet")}
        val_ids = set(json.loads((tokens.path / "validation_docs.json").read_text()))
        finetune = store.read_jsonl(qa.path / "finetune.jsonl")
        heldout = store.read_jsonl(qa.path / "heldout.jsonl")
        training = [t for i, t in docs.items() if i not in val_ids]
        training += [f"{p['question']} {p['answer']}" for p in finetune]
        contamination = contamination_report(
            training,
            {"heldout_questions": [p["question"] for p in heldout],
             "validation_documents": [docs[i] for i in sorted(val_ids)]},
            n=cfg.qa.decontamination_ngram, threshold=cfg.qa.decontamination_threshold)
        # Content hashes (of every file, from the manifests) next to the stage keys.
        outputs = {name: {"path": str(r.path), "hash": r.manifest["output_hash"], "stage_key": r.key,
                          "files": r.manifest["outputs"]} for name, r in stages.items()}
        card = build_data_card(report=report, pii=redacted.summary, qa=qa.summary, tokenizer=tokenizer.summary,
                               tokens=tokens.summary, contamination=contamination, outputs=outputs)
        paths = write_data_card(card, tmp)
        return {"contamination": contamination, "mlflow_run_id": log_data_card(paths, card, run_name, cfg=cfg)}

    inputs = {name: {"path": str(r.path), "hash": r.key} for name, r in stages.items()}
    return build_stage(cfg.home, "data_card", inputs | {"report": report["corpus"]}, cfg.qa.model_dump(mode="json"),
                       build)

