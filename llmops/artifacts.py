"""The artifact layout every stage and every DAG shares.

    $LLMOPS_HOME/artifacts/<stage>/<key>/        one finished stage output
    $LLMOPS_HOME/artifacts/<stage>/<key>/manifest.json
    $LLMOPS_HOME/artifacts/<stage>/.tmp-<key>-<nonce>/   work in progress

``key`` is a hash of (stage, stage version, inputs, config), where an input is named
by the *content digest* of the output it comes from, not by its path or its key: the
same content with the same settings always lands in the same directory, so a retry,
a re-run, or a second crawl of an unchanged site finds the finished output and
returns it instead of redoing it. Only the crawl is keyed by its run (an observation
of the web at a time); everything after it follows from what the crawl holds.

Each stage has an explicit version in :data:`STAGE_VERSIONS`, bumped when its output
changes for the same inputs; ``tests/test_stage_versions.py`` runs every stage on a
tiny fixture and fails when an output changed without a bump. The code's identity
(git commit, or package version and a source hash) is recorded in every manifest for
lineage but is not part of the key: a fix elsewhere in the package does not redo
finished work, nor send a retried training job to a new run directory.

Work is written to a temporary directory and renamed into place, and
``manifest.json`` is written last inside it, so a directory with a manifest is
always complete.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import llmops
from llmops.layout import Layout
from llmops.records.common import CodeIdentity, InputRef, OutputRef
from llmops.records.stages import StageInput, StageManifest

MANIFEST = StageManifest.NAME


# ---- stage versions ------------------------------------------------------------------


@dataclass(frozen=True)
class StageVersion:
    """A stage's version, and what it produced at that version on the tiny fixture of
    ``tests/test_stage_versions.py`` (which fails, saying what to record, when they drift)."""

    version: int
    """Bumped whenever the stage's output changes for the same inputs and settings (a new
    filter, a fixed bug, another file format): every output of the old version is rebuilt."""
    fixture_key: str | None = None
    """The stage's key on the fixture: its input content, settings and version."""
    fixture_digest: str | None = None
    """The first 16 hex digits of the stage's output content digest on the fixture."""


# A stage whose output changes without a bump keeps serving outputs built by the old code
# wherever its key is unchanged; the fixture test catches that.
STAGE_VERSIONS: dict[str, StageVersion] = {
    # Keyed by its run (crawl id), not by content: its version only matters to a retry,
    # and a change in what it writes reaches extract through the crawl's content digest.
    "scrape": StageVersion(1),
    "extract": StageVersion(1, fixture_key="267cf37f2bd3a5e5", fixture_digest="dbf664b2752beb58"),
    "clean": StageVersion(1, fixture_key="4fb07886c5a4dfac", fixture_digest="3478216fc65ee09c"),
    "dedup": StageVersion(1, fixture_key="c0f22ed1223fc95a", fixture_digest="904a31c321e236b6"),
    "redact": StageVersion(3, fixture_key="dbff3357a7413561", fixture_digest="d777df5894d99ae8"),
    "qa": StageVersion(1, fixture_key="21900b6323d818d0", fixture_digest="f8116ac3144959c5"),
    "tokenizer": StageVersion(1, fixture_key="a1d0d45858bf4a7e", fixture_digest="f5b15717dc2bf207"),
    "tokens": StageVersion(1, fixture_key="5851bf449a2c73a6", fixture_digest="3bb8909bad74ee98"),
    # New per crawl by design (it records that crawl): nothing to compare on a fixture.
    "data_card": StageVersion(1),
    # A retraining's selection and Q&A set (llmops.retrain.incremental): their inputs are a
    # registered champion's data cards, which the fixture has none of; tests/retrain checks
    # what they hold.
    "increment": StageVersion(1),
    "qa_increment": StageVersion(1),
    # Training is not bit-reproducible across machines (threaded float reductions, the
    # CPU's SIMD kernels, the all-reduce order), so its fixture digest covers what is
    # deterministic: the model config, the data each rank reads at each step, the LR
    # schedule. Bump these too when the loss, the optimizer or the loop changes.
    "pretrain": StageVersion(1, fixture_key="d52f6e3b155b3f84", fixture_digest="8d72bc5dc3040932"),
    "finetune": StageVersion(1, fixture_key="e42decb9b6ae4316", fixture_digest="f443a80bf47da1c5"),
    # Export of a fixed checkpoint is deterministic: the HF directory's content digest.
    "model": StageVersion(1, fixture_key="95e1f950a3ae7497", fixture_digest="0c6a48ba6ad2a681"),
    # Reports: keyed by what was evaluated or deployed; they record a measurement or an
    # action (timings, a live server's answers), so there is no fixture digest to compare.
    "evaluation": StageVersion(1),
    "deploy": StageVersion(1),
}


def stage_version(stage: str) -> int:
    try:
        return STAGE_VERSIONS[stage].version
    except KeyError:
        raise KeyError(f"stage {stage!r} has no version: add it to llmops.artifacts.STAGE_VERSIONS "
                       f"(and its fixture to tests/test_stage_versions.py)") from None


# ---- hashes and digests --------------------------------------------------------------


def jsonable(obj: Any) -> Any:
    """``obj`` with every record replaced by its JSON form, unset (None) fields left out:
    how inputs enter a key, so a record names an input exactly as its dict form did."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", exclude_none=True)
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def stable_hash(obj: Any, length: int = 16) -> str:
    """SHA-256 of the canonical JSON form of ``obj`` (sorted keys), shortened."""
    blob = json.dumps(jsonable(obj), sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


REPORT_FILES = frozenset({MANIFEST, "summary.json", "tokenizer_stats.json"})
"""Files that measure a build (counts, timings, where a reused input came from) rather than
hold its output: not content."""

VOLATILE_FIELDS = frozenset({
    "fetched_at", "discovered_via",  # documents: when and by which link this crawl met the page
    "encode_seconds", "encode_mb_per_s", "num_workers",  # the token shards' meta.json: how it was made
    "transformers_version",  # a model's config.json: which library wrote it
})
"""Columns and JSON keys that vary between two builds of the same content; left out of
content digests. Fetch order and discovery path differ between two crawls of one site."""

FLOAT_DIGITS = 6
"""Floats enter a content digest with this many significant digits: a language score may
differ in its last bits between CPUs (SIMD paths) without the content being different."""


def _canonical(value: Any, volatile: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v, volatile) for k, v in value.items() if k not in volatile}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, volatile) for v in value]
    if isinstance(value, float):
        return float(f"{value:.{FLOAT_DIGITS}g}")
    return value


def _dump(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":")).encode()


def parquet_digest(path: Path, volatile: frozenset[str] = VOLATILE_FIELDS) -> str:
    """Digest of a document table's content: every column but the volatile ones, rows
    sorted by ``id`` (when there is one), so fetch order and fetch times do not count."""
    import pyarrow.parquet as pq

    columns = [name for name in pq.read_schema(path).names if name not in volatile]
    table = pq.read_table(path, columns=columns)
    if "id" in columns:
        table = table.sort_by("id")
    digest = hashlib.sha256(_dump([[f.name, str(f.type)] for f in table.schema]))
    for batch in table.to_batches(max_chunksize=4096):
        for row in batch.to_pylist():
            digest.update(_dump(_canonical(row, volatile)) + b"\n")
    return digest.hexdigest()


def file_digest(path: Path, volatile: frozenset[str] = VOLATILE_FIELDS) -> str:
    """Content digest of one output file: tables and JSON by their canonical content
    (volatile fields left out), anything else by its bytes."""
    path = Path(path)
    if path.suffix == ".parquet":
        return parquet_digest(path, volatile)
    if path.suffix == ".json":
        return hashlib.sha256(_dump(_canonical(json.loads(path.read_text()), volatile))).hexdigest()
    if path.suffix == ".jsonl":
        digest = hashlib.sha256()
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    digest.update(_dump(_canonical(json.loads(line), volatile)) + b"\n")
        return digest.hexdigest()
    return file_sha256(path)


def content_digest(root: Path, *, skip: frozenset[str] = REPORT_FILES,
                   volatile: frozenset[str] = VOLATILE_FIELDS) -> str:
    """Content digest of a stage output directory: every file but the reports, each by
    :func:`file_digest`. Two builds of the same content agree on it even where their
    bytes differ (fetch times, Parquet row order, timings)."""
    root = Path(root)
    files = {str(p.relative_to(root)): file_digest(p, volatile)
             for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip}
    return stable_hash(files, length=64)


# ---- code identity (lineage, not key) ------------------------------------------------


def _source_hash(pkg: Path) -> str:
    digest = hashlib.sha256()
    for src in sorted(pkg.rglob("*.py")):
        digest.update(str(src.relative_to(pkg)).encode())
        digest.update(src.read_bytes())
    return digest.hexdigest()[:12]


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


@lru_cache(maxsize=1)
def code_identity() -> CodeIdentity:
    """Which code built an output: the git commit (and whether the tree had local changes)
    when the package runs from a checkout, and always the package version and a hash of
    its sources (an installed wheel has no commit). Recorded for lineage only."""
    pkg = Path(llmops.__file__).parent
    identity = CodeIdentity(version=llmops.__version__, source_sha256=_source_hash(pkg))
    if (pkg.parent / ".git").exists():
        commit = _git(pkg.parent, "rev-parse", "--verify", "HEAD")
        if commit:
            status = _git(pkg.parent, "status", "--porcelain")
            identity = identity.model_copy(update={"commit": commit.strip(),
                                                   "dirty": None if status is None else bool(status.strip())})
    return identity


def code_version() -> str:
    """:func:`code_identity` in one line: ``git:<commit12>[+dirty]`` or ``<version>+src.<hash>``."""
    ident = code_identity()
    if ident.commit:
        return f"git:{ident.commit[:12]}" + ("+dirty" if ident.dirty else "")
    return f"{ident.version}+src.{ident.source_sha256}"


# ---- stage outputs -------------------------------------------------------------------


@dataclass
class StageResult:
    """A finished stage output: where it is, its key, whether it was reused, its manifest."""

    stage: str
    path: Path
    key: str
    reused: bool
    manifest: StageManifest

    @property
    def summary(self) -> dict[str, Any]:
        return self.manifest.summary

    @property
    def content_hash(self) -> str:
        """The output's content digest: what names it as another stage's input."""
        return self.manifest.content_hash

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> StageResult:
        """A finished output, read back from its manifest (e.g. from an XCom path)."""
        manifest = read_manifest(Path(path))
        return cls(manifest.stage, Path(path), manifest.key, True, manifest)

    def ref(self) -> OutputRef:
        """Where this output is and what it holds (an Asset event's or a report's reference)."""
        return OutputRef(path=str(self.path), hash=self.key, content_hash=self.content_hash,
                         output_hash=self.manifest.output_hash)

    def input_ref(self) -> InputRef:
        """This output as another stage's input."""
        return InputRef(path=str(self.path), hash=self.content_hash)


def input_ref(path: Path) -> InputRef:
    """How an input is named: its path (lineage) and a hash of its content (the key).

    A stage output, or a file inside one, is named by the output's content digest from
    its manifest; a loose file (CLI use) by its SHA-256, so editing it by hand
    invalidates what was built from it.
    """
    path = Path(path)
    stage_dir = path if path.is_dir() else path.parent
    if (stage_dir / MANIFEST).exists():
        return InputRef(path=str(path), hash=read_manifest(stage_dir).content_hash)
    if path.is_file():
        return InputRef(path=str(path), hash=file_sha256(path)[:16])
    if path.exists():
        raise FileNotFoundError(f"input {path} is not a stage output (no {MANIFEST}) nor a file")
    raise FileNotFoundError(f"input {path} does not exist")


def key_view(obj: Any) -> Any:
    """``obj`` without the paths of its input references (dicts holding a ``hash``): the
    same content found at another place is the same input."""
    obj = jsonable(obj)
    if isinstance(obj, dict):
        return {k: key_view(v) for k, v in obj.items() if not (k == "path" and "hash" in obj)}
    if isinstance(obj, list):
        return [key_view(v) for v in obj]
    return obj


def stage_key(stage: str, inputs: Mapping[str, StageInput], config: dict[str, Any], version: int | None = None) -> str:
    """The output directory's name: (stage, its version, inputs by content, config)."""
    version = stage_version(stage) if version is None else version
    return stable_hash({"stage": stage, "version": version, "inputs": key_view(inputs), "config": config})


def read_manifest(path: Path) -> StageManifest:
    """The manifest of the finished output directory ``path``."""
    return StageManifest.read(Path(path) / MANIFEST)


def _output_hashes(root: Path, unlisted: frozenset[str] = frozenset()) -> dict[str, str]:
    """SHA-256 of every file under ``root`` but the manifest and the top-level directories ``unlisted``."""
    return {
        str(p.relative_to(root)): file_sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST and p.relative_to(root).parts[0] not in unlisted
    }


STALE_TMP_SECONDS = 24 * 3600


def _sweep_stale_tmp(parent: Path) -> None:
    """Remove work-in-progress directories left by a killed worker (SIGKILL, OOM) long ago.

    A day is far beyond any stage's execution_timeout, so nothing live is touched.
    """
    now = time.time()
    for cand in parent.glob(".tmp-*"):
        try:
            if now - cand.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(cand, ignore_errors=True)
        except FileNotFoundError:
            pass


def _check_explicit_out(final: Path) -> None:
    """An explicit ``--out`` may replace an earlier stage output, never anything else."""
    if final.exists() and (not final.is_dir() or (any(final.iterdir()) and not (final / MANIFEST).exists())):
        raise FileExistsError(f"{final} exists and is not an llmops stage output (no {MANIFEST}); "
                              "refusing to overwrite it: choose another --out")


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Replace the stage output at ``final`` by ``tmp``; the old one is moved aside first
    and put back if the swap fails, so a crash never leaves neither."""
    old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _manifest(root: Path, stage: str, key: str, version: int, inputs: Mapping[str, StageInput], config: dict[str, Any],
              summary: dict[str, Any] | BaseModel, digest: Callable[[Path], str],
              unlisted: frozenset[str] = frozenset()) -> StageManifest:
    outputs = _output_hashes(root, unlisted)
    summary = summary.model_dump(mode="json") if isinstance(summary, BaseModel) else jsonable(summary)
    return StageManifest(
        stage=stage, key=key, version=version, inputs=jsonable(inputs), config=jsonable(config),
        content_hash=digest(root), code_version=code_version(), code=code_identity(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), outputs=outputs,
        output_hash=stable_hash(outputs, length=64), summary=jsonable(summary))


def build_stage(
    home: Path,
    stage: str,
    inputs: Mapping[str, StageInput],
    config: dict[str, Any],
    build: Callable[[Path], dict[str, Any] | BaseModel | None],
    out_dir: Path | None = None,
    *,
    digest: Callable[[Path], str] = content_digest,
    version: int | None = None,
    parent: Path | None = None,
) -> StageResult:
    """Run ``build(tmp_dir) -> summary`` unless the output for this key already exists.

    This is the one keyed-output API: every stage output, the evaluation and deploy
    reports included, is written through it (a training run, which resumes in place,
    uses :func:`finish_in_place`). ``inputs`` are :class:`InputRef` records (or lists and
    scalars of them); ``config`` the settings that key the output; both are recorded.

    ``digest(tmp_dir)`` gives the output's content digest, recorded in the manifest as
    ``content_hash``: it names this output when it is the input of another stage.
    ``version`` defaults to the stage's entry in :data:`STAGE_VERSIONS`. ``parent`` is
    the directory the ``<key>`` directory goes into (default ``artifacts/<stage>/``;
    reports live under ``reports/``).

    ``out_dir`` overrides the layout location (the CLI's ``--out``); the output is
    still written to a temporary sibling and renamed into place. An existing
    ``out_dir`` is replaced only if it is an earlier stage output (or empty).
    """
    version = stage_version(stage) if version is None else version
    key = stage_key(stage, inputs, config, version)
    final = Path(out_dir) if out_dir else (Path(parent) if parent else Layout(home).stage_dir(stage)) / key
    if (final / MANIFEST).exists():
        manifest = read_manifest(final)
        if manifest.key == key:
            return _reused(stage, final, key, manifest)
        if out_dir is None:
            raise RuntimeError(f"{final} holds a manifest for another key; refusing to overwrite")
    if out_dir is not None:
        _check_explicit_out(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_tmp(final.parent)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        summary = build(tmp) or {}
        manifest = _manifest(tmp, stage, key, version, inputs, config, summary, digest)
        manifest.write(tmp / MANIFEST)
        if (final / MANIFEST).exists():  # an explicit --out holding an earlier output
            _swap_into_place(tmp, final)
        else:
            try:
                os.rename(tmp, final)  # also replaces an empty directory
            except OSError:
                if not (final / MANIFEST).exists():
                    raise
                # Another worker finished the same key first: its output is equivalent.
                shutil.rmtree(tmp, ignore_errors=True)
                return _reused(stage, final, key, read_manifest(final))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StageResult(stage, final, key, False, manifest)


def finish_in_place(root: Path, stage: str, key: str, inputs: Mapping[str, StageInput], config: dict[str, Any],
                    summary: dict[str, Any] | BaseModel, *, digest: Callable[[Path], str] = content_digest,
                    version: int | None = None, unlisted: frozenset[str] = frozenset()) -> StageResult:
    """Write the manifest of an output built in place (a training run, which resumes in
    its keyed directory): the same record as :func:`build_stage` writes, written last.

    Files under the top-level directories ``unlisted`` are left out of ``outputs``: a
    training run's checkpoints are tens of gigabytes on a real model, and what it hands
    on (the exported model) is hashed by export."""
    version = stage_version(stage) if version is None else version
    manifest = _manifest(Path(root), stage, key, version, inputs, config, summary, digest, unlisted)
    manifest.write(Path(root) / MANIFEST)
    return StageResult(stage, Path(root), key, False, manifest)


def _reused(stage: str, final: Path, key: str, manifest: StageManifest) -> StageResult:
    # Printed, not logged: task stdout is the Airflow task log, and the CLI shows it too.
    print(f"reused {stage} {key} ({final})", flush=True)
    return StageResult(stage, final, key, True, manifest)


def latest_output(home: Path, stage: str, where: Callable[[StageManifest], bool] | None = None) -> Path | None:
    """Newest finished output of ``stage`` whose manifest satisfies ``where``.

    Used only for *optional* hints, such as the previous crawl for conditional
    re-fetching; data a task consumes always comes from its Asset event or inputs.
    """
    root = Layout(home).stage_dir(stage)
    best: tuple[str, Path] | None = None
    if not root.is_dir():
        return None
    for cand in root.iterdir():
        if cand.name.startswith(".") or not (cand / MANIFEST).exists():
            continue
        manifest = read_manifest(cand)
        if where is not None and not where(manifest):
            continue
        if best is None or manifest.created_at > best[0]:
            best = (manifest.created_at, cand)
    return best[1] if best else None
