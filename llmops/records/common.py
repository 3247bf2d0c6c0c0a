"""Small records every other record uses: a reference to an input, the code's identity."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class Ref(BaseModel):
    """A nested, version-less part of a record (the record around it carries the version).

    Unset optional fields are left out of its JSON, so a reference reads as it did when it
    was a dict (``{"path", "hash"}``) and enters content keys unchanged.
    """

    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class InputRef(Ref):
    """An input, named by its path (lineage) and a hash of its content (what keys count)."""

    path: str
    hash: str
    sha256: str | None = None
    """The SHA-256 of the one file that matters (a tokenizer's ``tokenizer.json``), where checked."""
    output_hash: str | None = None
    """The hash of every output file's bytes (a data card's), for lineage."""


class CodeIdentity(Ref):
    """Which code built an output: recorded for lineage, never part of a key."""

    version: str
    source_sha256: str
    commit: str | None = None
    dirty: bool | None = None


class OutputRef(Ref):
    """A finished keyed output, as an Asset event or a report names it."""

    path: str
    hash: str
    """The output's key (its directory name)."""
    content_hash: str
    """Its content digest: what names it as another stage's input."""
    output_hash: str | None = None
    """The hash of every output file's bytes."""
