"""The Assets DAGs hand data through. URIs are ``llmops://<stage>``; every event's
extra carries ``{"path": ..., "hash": ...}`` of the stage output it announces, and a
consumer reads the triggering event instead of guessing a path."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset


def llmops_asset(stage: str) -> Asset:
    # Airflow normalises the URI to "llmops://<stage>/" (trailing slash).
    return Asset(uri=f"llmops://{stage}", name=f"llmops_{stage}", group="llmops")


CORPUS = llmops_asset("corpus")  # the PII-redacted, deduplicated corpus
QA = llmops_asset("qa")  # fine-tuning and held-out question/answer pairs
# Token-ID shards + meta.json. Announced once the data card is written, so the extra
# names everything training needs: shards, tokenizer, Q&A set and the data card.
TOKENS = llmops_asset("tokens")
MODEL = llmops_asset("model")  # fine-tuned models (HF directories); extra: the served variant + all
CHALLENGER = llmops_asset("challenger")  # a registered model version that passed the gate; extra: model_uri, version
CHAMPION = llmops_asset("champion")  # the version Triton serves, after a verified swap; extra: model_uri, version


def event_extra(path: str, hash_: str, **more: Any) -> dict[str, Any]:
    """The extra of an llmops Asset event: always a path and a hash."""
    return {"path": str(path), "hash": hash_, **more}
