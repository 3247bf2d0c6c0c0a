"""Document storage: the fixed Parquet schemas and the dropped-records files.

Each stage adds columns to the previous stage's schema, so a corpus row carries its
whole history (where it came from, what clean measured, which duplicate cluster it
represents). Files are written inside a stage's temporary directory, which
``llmops.artifacts.build_stage`` renames into place, so no half-written file is
ever visible.
"""

from __future__ import annotations

import collections
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

EXTRACT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("canonical_url", pa.string()),
        ("title", pa.string()),
        ("author", pa.string()),
        ("date_published", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("fetched_at", pa.string()),
        ("discovered_via", pa.string()),
        ("payload_sha256", pa.string()),
    ]
)

CLEAN_SCHEMA = pa.schema(
    list(EXTRACT_SCHEMA)
    + [
        pa.field("n_chars", pa.int32()),
        pa.field("n_words", pa.int32()),
        pa.field("n_sentences", pa.int32()),
        pa.field("sentences", pa.list_(pa.string())),
        pa.field("lang", pa.string()),
        pa.field("lang_score", pa.float32()),
    ]
)

CORPUS_SCHEMA = pa.schema(
    list(CLEAN_SCHEMA)
    + [
        pa.field("text_sha256", pa.string()),
        pa.field("dup_cluster", pa.string()),
        pa.field("dup_count", pa.int32()),
    ]
)


def short_hash(value: str, length: int = 16) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def write_docs(rows: list[dict[str, Any]], path: Path, schema: pa.Schema) -> None:
    """Write rows with exactly ``schema`` (missing columns are an error, not a null)."""
    columns = {field.name: [row[field.name] for row in rows] for field in schema}
    table = pa.table(columns, schema=schema)
    pq.write_table(table, path, compression="zstd")


def read_docs(paths: Path | Iterable[Path]) -> list[dict[str, Any]]:
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    rows: list[dict[str, Any]] = []
    for path in paths:
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def write_jsonl(records: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def write_dropped(records: list[dict[str, Any]], path: Path) -> None:
    """Every dropped page or document, one JSON line each, with its reason.

    Sorted by (id, reason): stages see pages in fetch order, which varies between two
    crawls of the same site, and the file is part of the stage's content digest.
    """
    write_jsonl(sorted(records, key=lambda r: (str(r.get("id", "")), str(r.get("reason", "")))), path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def count_by(records: Iterable[dict[str, Any]], key: str) -> dict[str, int]:
    return dict(sorted(collections.Counter(r[key] for r in records).items()))
