"""Document storage: the Parquet tables of the document stages and the dropped-records files.

A document row is a :class:`typing.TypedDict` per table, declared once below: the Parquet
schema each table is written with is derived from it (:func:`arrow_schema`), so the
type checker and the file agree on every column. A ``dropped.jsonl`` line is a record
of :mod:`llmops.records.crawl` (:data:`~llmops.records.crawl.DroppedRecord`).

Each stage adds columns to the previous stage's row, so a corpus row carries its
whole history (where it came from, what clean measured, which duplicate cluster it
represents). Files are written inside a stage's temporary directory, which
``llmops.artifacts.build_stage`` renames into place, so no half-written file is
ever visible.
"""

from __future__ import annotations

import collections
import hashlib
import json
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, get_args, get_origin, get_type_hints, overload

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, with_config
from typing_extensions import TypedDict  # pydantic validates only this TypedDict before Python 3.12

from llmops.records.base import RecordError

if TYPE_CHECKING:
    from llmops.records.crawl import Dropped, DroppedRecord

Int32 = Annotated[int, pa.int32()]
"""An ``int`` column stored as int32 (a bare ``int`` is int64)."""
Float32 = Annotated[float, pa.float32()]
"""A ``float`` column stored as float32 (a bare ``float`` is float64)."""


@with_config(ConfigDict(extra="forbid"))
class ExtractDoc(TypedDict):
    """A document extract made of one crawled page: a row of extract's ``docs.parquet``."""

    id: str
    """A short hash of ``url``."""
    url: str
    canonical_url: str | None
    """The page's ``<link rel="canonical">`` target, absolute."""
    title: str | None
    author: str | None
    date_published: str | None
    text: str
    source: str
    """The URL's host."""
    fetched_at: str | None
    discovered_via: str
    """``seed``, ``sitemap`` or ``link``."""
    payload_sha256: str | None


class CleanDoc(ExtractDoc):
    """A cleaned document (normalised text and what clean measured): a row of clean's ``docs.parquet``."""

    n_chars: Int32
    n_words: Int32
    n_sentences: Int32
    sentences: list[str]
    lang: str
    lang_score: Float32


class CorpusDoc(CleanDoc):
    """A document dedup kept: a row of dedup's ``corpus.parquet``."""

    text_sha256: str
    dup_cluster: str
    """The id of the cluster's representative (the document's own id when it has no duplicate)."""
    dup_count: Int32


class RedactedDoc(CorpusDoc):
    """A redacted document: a row of redact's ``corpus.parquet``."""

    pii_counts: str
    """The findings per entity type, as a JSON object string."""


Row = TypeVar("Row", bound=ExtractDoc)

_ARROW_TYPES: dict[object, pa.DataType] = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def arrow_schema(row: type[ExtractDoc]) -> pa.Schema:
    """The Parquet schema of a row type, its columns in declaration order: ``str`` is
    string, ``list[str]`` list<string>, ``Annotated[int, pa.int32()]`` int32; every column
    nullable (pyarrow's default, which every table was written with)."""
    return pa.schema([(name, _arrow_type(hint)) for name, hint in get_type_hints(row, include_extras=True).items()])


def _arrow_type(hint: object) -> pa.DataType:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        return next(m for m in args[1:] if isinstance(m, pa.DataType))
    if origin is types.UnionType:  # ``X | None``: nullable, which every column is
        (inner,) = (a for a in args if a is not type(None))
        return _arrow_type(inner)
    if origin is list:
        return pa.list_(_arrow_type(args[0]))
    return _ARROW_TYPES[hint]


EXTRACT_SCHEMA = arrow_schema(ExtractDoc)
CLEAN_SCHEMA = arrow_schema(CleanDoc)
CORPUS_SCHEMA = arrow_schema(CorpusDoc)
REDACTED_SCHEMA = arrow_schema(RedactedDoc)


def short_hash(value: str, length: int = 16) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def write_docs(rows: Sequence[ExtractDoc], path: Path, schema: pa.Schema) -> None:
    """Write rows with exactly ``schema`` (missing columns are an error, not a null).

    Every table's row is an :class:`ExtractDoc` with more columns; ``schema`` says which
    table's columns are written.
    """
    by_name: Sequence[Mapping[str, object]] = rows  # the schema's names are runtime strings
    columns = {field.name: [row[field.name] for row in by_name] for field in schema}
    table = pa.table(columns, schema=schema)
    pq.write_table(table, path, compression="zstd")


@overload
def read_docs(paths: Path | Iterable[Path]) -> list[ExtractDoc]: ...
@overload
def read_docs(paths: Path | Iterable[Path], row: type[Row]) -> list[Row]: ...
def read_docs(paths: Path | Iterable[Path], row: type[Row] = ExtractDoc) -> list[Row]:  # type: ignore[assignment]
    """The rows of document tables, as ``row`` (any table's rows read as :class:`ExtractDoc`).

    Each file must hold ``row``'s columns with their types (a later stage's table has
    more, and its rows are ``row``s too); a missing or retyped column raises
    :class:`RecordError` naming the file and the column.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    expected = arrow_schema(row)
    rows: list[Row] = []
    for path in paths:
        table = pq.read_table(path)
        for field in expected:
            found = table.schema.field(field.name).type if field.name in table.schema.names else None
            if found != field.type:
                raise RecordError(f"{path} is not a table of {row.__name__}: column {field.name} is "
                                  f"{found or 'missing'}, not {field.type}")
        rows.extend(table.to_pylist())
    return rows


def write_lines(entries: Iterable[BaseModel], path: Path) -> None:
    """One JSON line per entry (non-ASCII kept as is); read back with
    :func:`llmops.records.crawl.read_lines` and the entry's adapter."""
    with open(path, "w") as fh:
        for entry in entries:
            fh.write(json.dumps(entry.model_dump(), ensure_ascii=False) + "\n")


def write_dropped(records: Iterable[Dropped], path: Path) -> None:
    """Every dropped page or document, one JSON line each, with its reason.

    Sorted by (id, reason): stages see pages in fetch order, which varies between two
    crawls of the same site, and the file is part of the stage's content digest.
    """
    ordered = sorted(records, key=lambda r: (r.id, r.reason))
    write_lines(ordered, path)


def read_dropped(path: Path) -> list[DroppedRecord]:
    """A stage's ``dropped.jsonl``, each line validated as its stage's record."""
    from llmops.records.crawl import DROPPED, read_lines  # records.crawl imports this module's CleanDoc

    return read_lines(path, DROPPED)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def count_by(records: Iterable[Dropped], key: str) -> dict[str, int]:
    """How many dropped records have each value of the field ``key`` (their ``reason``), by value."""
    return dict(sorted(collections.Counter(getattr(r, key) for r in records).items()))
