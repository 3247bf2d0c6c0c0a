"""Data stages: scrape, extract, clean, dedup, PII redaction, the Q&A set and its
decontamination check, and ``pipeline``, which binds them to the artifact layout (the
token shards are ``llmops.tokenizer``'s; the demo site is ``llmops.demo_site``)."""
