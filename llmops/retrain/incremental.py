"""The incremental data run of a retraining: only what the champion has not seen.

The same stages as a full data run up to redaction (a conditional re-crawl: unchanged
pages answer 304 and every keyed stage is reused), then:

* ``increment``: the redacted documents no version along the champion's
  ``llmops.base_version`` chain was trained on (new or changed pages, by the content of
  their redacted text), plus a replay sample of the champion's documents
  (``retrain.replay_fraction``) against forgetting;
* ``qa_increment``: the champion's Q&A set, kept whole, plus the pairs of the new pages (a
  changed page's old pairs give way to its new ones), each page on the side of the
  fine-tuning/held-out split it always had, so the evaluation set holds the old held-out
  questions and the new pages' ones;
* the champion's tokenizer, reused (its ids are the ones the weights were trained on);
* the token shards of the increment, and a data card that records the champion it
  continues from (``DataCard.retrain``) and what is new (``DataCard.increment``).

Every stage is keyed like the others: the same re-crawl, champion and settings reuse
every output, so a retraining retried or repeated with the same data trains nothing new.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmops.artifacts import StageResult, build_stage, input_ref
from llmops.config import LlmopsConfig
from llmops.data import pipeline as P
from llmops.records.data import DataReport, QaSummary, TokensEvent
from llmops.records.retrain import IncrementSummary, RetrainBase
from llmops.retrain.lineage import Champion, card_input, known, text_hash

NEW_DOCS_FILE = "new_documents.json"
"""The ids of the increment's new documents (the rest of its corpus is the replay sample)."""


def increment_stage(cfg: LlmopsConfig, redacted: Path, versions: list[Champion]) -> StageResult:
    """The new documents of the redacted corpus ``redacted`` against ``versions`` (the champion
    first, then its bases), plus the replay sample of the champion's documents."""
    from llmops.data.store import REDACTED_SCHEMA, RedactedDoc, read_docs, write_docs

    corpus_path = P._docs_file(redacted, "corpus.parquet")
    champion = versions[0]
    cards = [input_ref(v.data_card / "data_card.json") for v in versions]
    config = {"replay_fraction": cfg.retrain.replay_fraction, "seed": cfg.retrain.seed,
              "versions": [v.version for v in versions]}

    def build(tmp: Path) -> IncrementSummary:
        seen = known(versions)
        docs = read_docs(corpus_path, RedactedDoc)
        new = sorted((d for d in docs if text_hash(d["text"]) not in seen.documents), key=lambda d: d["id"])
        new_ids = {d["id"] for d in new}
        # The replay pool: the champion's own training documents (its card's corpus), not
        # the whole chain's, as the recipe says; a changed page's old text stays out.
        pool = {text_hash(d["text"]): d for d in read_docs(card_input(champion.data_card, "corpus") / "corpus.parquet",
                                                            RedactedDoc)
                if d["id"] not in new_ids}
        ordered = [pool[h] for h in sorted(pool)]
        replay = random.Random(cfg.retrain.seed).sample(ordered, round(cfg.retrain.replay_fraction * len(ordered)))
        write_docs(new + sorted(replay, key=lambda d: d["id"]), tmp / "corpus.parquet", REDACTED_SCHEMA)
        (tmp / NEW_DOCS_FILE).write_text(json.dumps(sorted(new_ids)) + "\n")
        return IncrementSummary(champion_version=champion.version, chain=[v.version for v in versions],
                                known_documents=len(seen.documents), corpus_documents=len(docs),
                                new_documents=len(new), replay_documents=len(replay),
                                new_pages=[d["url"] for d in new], new_qa_pairs=0, base_qa_pairs=0)

    return build_stage(cfg.home, "increment", {"corpus": input_ref(corpus_path), "cards": cards}, config, build)


def qa_increment_stage(cfg: LlmopsConfig, increment: StageResult, champion: Champion) -> StageResult:
    """The champion's Q&A pairs plus those of the increment's new pages (``qa.*`` settings)."""
    from llmops.data.qa import FINETUNE_FILE, HELDOUT_FILE, read_pairs, split_pairs, write_qa
    from llmops.data.store import RedactedDoc, read_docs

    base = card_input(champion.data_card, "qa")
    inputs = {"increment": increment.input_ref(), "base_finetune": input_ref(base / FINETUNE_FILE),
              "base_heldout": input_ref(base / HELDOUT_FILE)}

    def build(tmp: Path) -> QaSummary:
        new_ids = set(json.loads((increment.path / NEW_DOCS_FILE).read_text()))
        docs = [d for d in read_docs(increment.path / "corpus.parquet", RedactedDoc) if d["id"] in new_ids]
        finetune, heldout, skipped = split_pairs(docs, cfg.qa.seed, cfg.qa.heldout_fraction)
        kept = {name: [p for p in read_pairs(base / name) if p.page_id not in new_ids]
                for name in (FINETUNE_FILE, HELDOUT_FILE)}
        return write_qa(kept[FINETUNE_FILE] + finetune, kept[HELDOUT_FILE] + heldout, tmp, skipped=skipped,
                        heldout_fraction=cfg.qa.heldout_fraction, seed=cfg.qa.seed)

    return build_stage(cfg.home, "qa_increment", inputs, cfg.qa.model_dump(mode="json"), build)


@dataclass(frozen=True)
class Selection:
    """The data run up to the choice of the new documents."""

    report: DataReport
    redacted: StageResult
    increment: StageResult

    @property
    def summary(self) -> IncrementSummary:
        return IncrementSummary.load(self.increment.summary, source=f"{self.increment.path} summary")


def select_new(cfg: LlmopsConfig, crawl: StageResult, versions: list[Champion], *,
               say: Callable[[str], None] = print) -> Selection:
    """extract/clean per shard → dedup → redact → ``increment`` on a finished crawl."""
    n = cfg.data.num_shards
    extracted = [P.extract_stage(cfg, crawl.path, i, n) for i in range(n)]
    cleaned = [P.clean_stage(cfg, e.path) for e in extracted]
    corpus = P.dedup_stage(cfg, [c.path for c in cleaned])
    for stage in (*extracted, *cleaned, corpus):
        say(f"{'reused' if stage.reused else 'built'} {stage.stage} {stage.key}")
    report = P.build_report(crawl, extracted, cleaned, corpus)
    redacted = P.redact_stage(cfg, corpus.path)
    say(f"{'reused' if redacted.reused else 'built'} redact {redacted.key}")
    increment = increment_stage(cfg, redacted.path, versions)
    return Selection(report, redacted, increment)


@dataclass(frozen=True)
class IncrementalData:
    """A finished incremental data run: its card and the ``llmops://tokens`` extra that announces it."""

    card: StageResult
    event: TokensEvent
    summary: IncrementSummary


def prepare_increment(cfg: LlmopsConfig, selection: Selection, base: RetrainBase, champion: Champion, *,
                      run_name: str) -> IncrementalData:
    """Q&A set, the champion's tokenizer, token shards and the incremental data card."""
    from llmops.data.qa import FINETUNE_FILE, HELDOUT_FILE, read_pairs

    qa = qa_increment_stage(cfg, selection.increment, champion)
    reuse = cfg.model_copy(update={"tokenizer": cfg.tokenizer.model_copy(
        update={"reuse": str(card_input(champion.data_card, "tokenizer"))})})
    tokenizer = P.tokenizer_stage(reuse, selection.increment.path)
    tokens = P.encode_stage(reuse, selection.increment.path, tokenizer.path)
    new_ids = set(json.loads((selection.increment.path / NEW_DOCS_FILE).read_text()))
    pairs = [p for name in (FINETUNE_FILE, HELDOUT_FILE) for p in read_pairs(qa.path / name)]
    new_pairs = sum(p.page_id in new_ids for p in pairs)
    summary = selection.summary.model_copy(update={"new_qa_pairs": new_pairs, "base_qa_pairs": len(pairs) - new_pairs})
    card = P.data_card_stage(cfg, selection.report, selection.redacted, qa, tokenizer, tokens, run_name=run_name,
                             corpus=selection.increment, retrain=base, increment=summary)
    event = P.tokens_event_extra(tokens, tokenizer, qa, card).model_copy(update={"retrain": base})
    return IncrementalData(card, event, summary)

