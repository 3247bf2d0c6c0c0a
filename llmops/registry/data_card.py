"""The data card: what went into a training corpus, as JSON for tools and Markdown for people.

Every run of the data pipeline gets one: sources, pages fetched and failed by reason,
documents dropped per filter, duplicate rates, PII found per entity type, token
counts, the contamination rate, and the content hash of every output, so a model
card can point at exactly the data it was trained on. Counts only: a card never
holds a document's text or a PII value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from llmops.records.data import (
    CardOutput,
    ContaminationRow,
    DataCard,
    DataReport,
    DataSource,
    DocumentCounts,
    QaSummary,
    RedactSummary,
    TokenizerStats,
    TokenShardMeta,
)
from llmops.records.retrain import IncrementSummary, RetrainBase

if TYPE_CHECKING:
    from llmops.config import LlmopsConfig


def build_data_card(*, report: DataReport, pii: RedactSummary, qa: QaSummary, tokenizer: TokenizerStats,
                    tokens: TokenShardMeta, contamination: dict[str, ContaminationRow],
                    outputs: dict[str, CardOutput], retrain: RetrainBase | None = None,
                    increment: IncrementSummary | None = None) -> DataCard:
    """Assemble the card from the run report and each stage's summary (and, for a
    retraining's incremental card, the champion it continues from and the new documents)."""
    crawl, clean, dedup = report.crawl, report.clean, report.dedup
    return DataCard(
        sources=[DataSource(seed_url=crawl.seed_url, pages_fetched=crawl.pages_ok, pages_failed=crawl.pages_failed,
                            failed_by_reason=crawl.failed_by_reason, not_modified=crawl.not_modified)],
        documents=DocumentCounts(
            extracted=report.extract.docs_out,
            extract_dropped_by_reason=report.extract.dropped_by_reason,
            kept_by_quality_filters=clean.docs_out,
            dropped_by_filter=clean.dropped_by_filter,
            after_dedup=dedup.docs_out,
            exact_duplicates_removed=dedup.exact_duplicates_removed,
            near_duplicates_removed=dedup.near_duplicates_removed,
            duplicate_rate=dedup.duplicate_rate,
        ),
        pii=pii, qa=qa, tokenizer=tokenizer, tokens=tokens, contamination=contamination, outputs=outputs,
        retrain=retrain, increment=increment,
    )


def _table(section: BaseModel, skip: str = "") -> list[str]:
    """A section as a two-column table, its fields in their order (maps as ``k: v, …``)."""
    lines = ["| | |", "|---|---|"]
    for key, value in section.model_dump(mode="json").items():
        if key == skip:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
        lines.append(f"| {key} | {value} |")
    return lines


def render_markdown(card: DataCard) -> str:
    lines = ["# Data card", ""]
    if card.retrain and card.increment:
        r, inc = card.retrain, card.increment
        lines += [f"Incremental: continues {r.model_uri} ({r.trigger}"
                  + (f", drift report `{r.drift_report}`" if r.drift_report else "") + f"; run {r.run_id}).", "",
                  "## Increment", "", *_table(inc, skip="new_pages"), ""]
    for source in card.sources:
        lines += [f"## Source: {source.seed_url}", "", *_table(source, skip="seed_url"), ""]
    sections: dict[str, BaseModel] = {"Documents": card.documents, "PII": card.pii, "Qa": card.qa,
                                      "Tokenizer": card.tokenizer, "Tokens": card.tokens}
    for title, section in sections.items():
        lines += [f"## {title}", "", *_table(section), ""]
    lines += ["## Contamination", "", "| evaluation set | items | contaminated | rate | mean n-gram overlap |",
              "|---|---|---|---|---|"]
    for name, row in card.contamination.items():
        lines.append(f"| {name} | {row.items} | {row.contaminated} | {row.rate} | {row.mean_ngram_overlap} |")
    lines += ["", "## Outputs", "", "| output | path | content hash (SHA-256 over its files) |", "|---|---|---|"]
    for name, ref in card.outputs.items():
        lines.append(f"| {name} | `{ref.path}` | `{ref.hash}` |")
    return "\n".join(lines) + "\n"


def write_data_card(card: DataCard, out_dir: Path) -> dict[str, Path]:
    """``data_card.json`` and ``data_card.md`` in ``out_dir``: their paths by format."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": card.write(out_dir / DataCard.NAME), "markdown": out_dir / "data_card.md"}
    paths["markdown"].write_text(render_markdown(card))
    return paths


def log_data_card(paths: dict[str, Path], card: DataCard, run_name: str, *,
                  cfg: LlmopsConfig | None = None, parent_run_id: str | None = None) -> str | None:
    """Log the card to MLflow; returns the run id, or None when MLflow is not configured.

    With ``cfg`` the card always goes to the configured store and experiment
    (``tracking.tracking_uri``: the embedded SQLite file by default), nested under
    ``parent_run_id`` when given. Without it the card is logged only when
    ``MLFLOW_TRACKING_URI`` is set, into the ``llmops_data`` experiment, so library use
    without any MLflow setup stays free of side effects.
    """
    from llmops.registry import tracking

    if cfg is None:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            return None
        client = tracking.connect(uri)
        experiment_id = tracking.get_or_create_experiment(client, "llmops_data")
    else:
        uri = tracking.tracking_uri(cfg)
        client = tracking.connect(uri)
        experiment_id = tracking.ensure_experiment(cfg, client)
    tags = {tracking.MLFLOW_PARENT_RUN_ID: parent_run_id} if parent_run_id else {}
    run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
    with tracking.RunLogger(run_id, uri) as logger:
        for path in paths.values():
            logger.log_artifact(path, artifact_path="data_card")
        docs = card.documents
        logger.log_metrics({"documents": docs.after_dedup, "duplicate_rate": docs.duplicate_rate,
                            **{f"tokens_{k}": v for k, v in card.tokens.dump().items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)}}, step=0)
    return run_id
