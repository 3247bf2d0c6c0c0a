"""The Assets DAGs hand data through. URIs are ``llmops://<stage>``; every event's extra is
a record of ``llmops.records.events`` (``path`` and ``hash`` of what it announces, and more),
published as JSON, and a consumer validates the triggering event instead of guessing a path."""

from __future__ import annotations

from airflow.sdk import Asset


def llmops_asset(stage: str) -> Asset:
    # Airflow normalises the URI to "llmops://<stage>/" (trailing slash).
    return Asset(uri=f"llmops://{stage}", name=f"llmops_{stage}", group="llmops")


CORPUS = llmops_asset("corpus")  # the PII-redacted, deduplicated corpus; extra: CorpusEvent
QA = llmops_asset("qa")  # fine-tuning and held-out question/answer pairs; extra: QaEvent
# Token-ID shards + meta.json. Announced once the data card is written, so the extra
# names everything training needs: shards, tokenizer, Q&A set and the data card (TokensEvent).
TOKENS = llmops_asset("tokens")
MODEL = llmops_asset("model")  # fine-tuned models (HF directories); extra: ModelEvent, the served variant + all
CHALLENGER = llmops_asset("challenger")  # a registered version that passed the gate; extra: ChallengerEvent
CHAMPION = llmops_asset("champion")  # the version Triton serves, after a verified swap; extra: ChampionEvent
# The served model's traffic drifted (llmops_monitor); extra: DriftEvent (report, signals, champion version)
DRIFT = llmops_asset("drift")
