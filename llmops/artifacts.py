"""The artifact layout every stage and every DAG shares.

    $LLMOPS_HOME/artifacts/<stage>/<key>/        one finished stage output
    $LLMOPS_HOME/artifacts/<stage>/<key>/manifest.json
    $LLMOPS_HOME/artifacts/<stage>/.tmp-<key>-<nonce>/   work in progress

``key`` is a content hash of (stage, inputs, config, code version): the same inputs
and settings always land in the same directory, so a retry or a re-run finds the
finished output and returns it instead of redoing it. Work is written to a temporary
directory and renamed into place, and ``manifest.json`` is written last inside it,
so a directory with a manifest is always complete.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import llmops

MANIFEST = "manifest.json"


def stable_hash(obj: Any, length: int = 16) -> str:
    """SHA-256 of the canonical JSON form of ``obj`` (sorted keys), shortened."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus a hash of the library's sources.

    Any change to the code that produces an artifact must invalidate it, and a git
    SHA is not available in an installed wheel, so the sources themselves are hashed.
    """
    pkg = Path(llmops.__file__).parent
    digest = hashlib.sha256()
    for src in sorted(pkg.rglob("*.py")):
        digest.update(str(src.relative_to(pkg)).encode())
        digest.update(src.read_bytes())
    return f"{llmops.__version__}+{digest.hexdigest()[:12]}"


def artifacts_root(home: Path) -> Path:
    return Path(home) / "artifacts"


@dataclass
class StageResult:
    """A finished stage output: where it is, its key, and whether it was reused."""

    stage: str
    path: Path
    key: str
    reused: bool
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        return self.manifest.get("summary", {})

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> "StageResult":
        """A finished output, read back from its manifest (e.g. from an XCom path)."""
        manifest = read_manifest(Path(path))
        return cls(manifest["stage"], Path(path), manifest["key"], True, manifest)

    def asset_extra(self) -> dict[str, Any]:
        """What an Airflow Asset event for this output carries."""
        return {"path": str(self.path), "hash": self.key, "output_hash": self.manifest.get("output_hash")}


def stage_key(stage: str, inputs: dict[str, Any], config: dict[str, Any]) -> str:
    return stable_hash({"stage": stage, "inputs": inputs, "config": config, "code": code_version()})


def read_manifest(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / MANIFEST).read_text())


def _output_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): file_sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
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


def build_stage(
    home: Path,
    stage: str,
    inputs: dict[str, Any],
    config: dict[str, Any],
    build: Callable[[Path], dict[str, Any]],
    out_dir: Path | None = None,
) -> StageResult:
    """Run ``build(tmp_dir) -> summary`` unless the output for this key already exists.

    ``out_dir`` overrides the layout location (the CLI's ``--out``); the output is
    still written to a temporary sibling and renamed into place. An existing
    ``out_dir`` is replaced only if it is an earlier stage output (or empty).
    """
    key = stage_key(stage, inputs, config)
    final = Path(out_dir) if out_dir else artifacts_root(home) / stage / key
    if (final / MANIFEST).exists():
        manifest = read_manifest(final)
        if manifest.get("key") == key:
            return StageResult(stage, final, key, True, manifest)
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
        outputs = _output_hashes(tmp)
        manifest = {
            "stage": stage,
            "key": key,
            "inputs": inputs,
            "config": config,
            "code_version": code_version(),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "outputs": outputs,
            "output_hash": stable_hash(outputs, length=64),
            "summary": summary,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
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
                return StageResult(stage, final, key, True, read_manifest(final))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StageResult(stage, final, key, False, manifest)


def latest_output(home: Path, stage: str, where: Callable[[dict[str, Any]], bool] | None = None) -> Path | None:
    """Newest finished output of ``stage`` whose manifest satisfies ``where``.

    Used only for *optional* hints, such as the previous crawl for conditional
    re-fetching; data a task consumes always comes from its Asset event or inputs.
    """
    root = artifacts_root(home) / stage
    best: tuple[str, Path] | None = None
    if not root.is_dir():
        return None
    for cand in root.iterdir():
        if cand.name.startswith(".") or not (cand / MANIFEST).exists():
            continue
        manifest = read_manifest(cand)
        if where is not None and not where(manifest):
            continue
        stamp = manifest.get("created_at", "")
        if best is None or stamp > best[0]:
            best = (stamp, cand)
    return best[1] if best else None
