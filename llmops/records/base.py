"""The base of every record: a pydantic model that refuses unknown fields, carries a
``schema_version``, reads the previous version, and is written atomically.

Writers call :meth:`Record.write` (a file) or :meth:`Record.dump` (JSON for an XCom or an
Asset event's ``extra``, which the Airflow UI and REST API show as they are); readers call
:meth:`Record.read` or :meth:`Record.load`, so a renamed or misspelt field fails where the
file is read, naming the file and the field, not deep inside a training rank.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from llmops.errors import PermanentError

PREVIOUS_VERSION = 0
"""Files written before records had a ``schema_version`` (llmops up to 070b37c+issue 12)."""


class RecordError(PermanentError, ValueError):
    """A stored record does not validate: a renamed field, a missing one, or a newer schema."""


class Record(BaseModel):
    """One hand-off between processes, tasks or DAGs.

    ``schema_version`` is the field's default in each record class; bump it (and teach
    :meth:`upgrade` the step from the previous version) when a field is renamed, removed
    or changes meaning. A file without ``schema_version`` is version 0: what llmops wrote
    before records were typed.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1

    NAME: ClassVar[str] = ""
    """The file name this record is stored under, where it has one (``job.json``)."""

    @classmethod
    def current_version(cls) -> int:
        return int(cls.model_fields["schema_version"].default)

    @classmethod
    def upgrade(cls, version: int, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` (a stored record of ``version``) as version ``version + 1``. Version 0
        (no ``schema_version``) has the same fields as version 1 unless a record says otherwise."""
        return data

    @model_validator(mode="before")
    @classmethod
    def _accept_previous_versions(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "schema_version" not in data:
            return data
        version, current = data["schema_version"], cls.current_version()
        if not isinstance(version, int) or version > current:
            raise ValueError(f"schema_version {version!r} is newer than this llmops reads ({current}): "
                             f"upgrade llmops to read it")
        upgraded = dict(data)
        while version < current:
            upgraded = cls.upgrade(version, upgraded)
            version += 1
        upgraded["schema_version"] = current
        return upgraded

    # ---- reading --------------------------------------------------------------------

    @classmethod
    def load(cls, data: Mapping[str, Any] | BaseModel | None, *, source: str = "") -> Self:
        """Validate a stored record (an XCom, an Asset event's extra, a parsed file); a
        mapping without ``schema_version`` is the previous version."""
        if isinstance(data, cls):
            return data
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        if not isinstance(data, Mapping):
            raise RecordError(f"{source or cls.__name__}: expected a JSON object, got {type(data).__name__}")
        payload = dict(data)
        payload.setdefault("schema_version", PREVIOUS_VERSION)
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise RecordError(f"{source or 'record'} is not a valid {cls.__name__}: {_errors(exc)}") from None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Self:
        """Read and validate the record stored at ``path`` (a file, or a directory holding :attr:`NAME`)."""
        path = Path(path)
        if path.is_dir() and cls.NAME:
            path = path / cls.NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RecordError(f"{path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise RecordError(f"{path} is not JSON: {exc}") from None
        return cls.load(data, source=str(path))

    # ---- writing --------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """The JSON form: what an XCom or an Asset event's ``extra`` carries."""
        return self.model_dump(mode="json")

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (a temporary sibling, then a rename); a directory gets :attr:`NAME`."""
        path = Path(path)
        if path.is_dir():
            if not self.NAME:
                raise ValueError(f"{type(self).__name__} has no file name: pass a file path, not {path}")
            path = path / self.NAME
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:5])
