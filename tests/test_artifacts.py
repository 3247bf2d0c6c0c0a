import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmops import artifacts
from llmops.artifacts import MANIFEST, build_stage, content_digest, input_ref, latest_output, parquet_digest, stage_key


def _writer(calls: list, text: str = "hello"):
    def build(tmp: Path):
        calls.append(tmp)
        (tmp / "out.txt").write_text(text)
        return {"n": 1}
    return build


def _build(home: Path, inputs: dict, build, **kwargs):
    return build_stage(home, "demo", inputs, {}, build, version=1, **kwargs)


def test_same_inputs_reuse_finished_output(tmp_path: Path, capsys):
    calls: list = []
    first = build_stage(tmp_path, "demo", {"a": 1}, {"x": 2}, _writer(calls), version=1)
    second = build_stage(tmp_path, "demo", {"a": 1}, {"x": 2}, _writer(calls), version=1)
    assert len(calls) == 1 and not first.reused and second.reused
    assert f"reused demo {first.key}" in capsys.readouterr().out  # the task log says so
    assert first.path == second.path == tmp_path / "artifacts" / "demo" / first.key
    manifest = json.loads((first.path / MANIFEST).read_text())
    assert manifest["inputs"] == {"a": 1} and manifest["summary"] == {"n": 1}
    assert set(manifest["outputs"]) == {"out.txt"}
    assert manifest["content_hash"] == first.content_hash == content_digest(first.path)
    assert manifest["version"] == 1 and manifest["code"]["version"] and manifest["code_version"]
    assert first.ref().hash == first.key


def test_different_config_gets_a_different_directory(tmp_path: Path):
    assert stage_key("s", {"a": 1}, {"x": 1}, 1) != stage_key("s", {"a": 1}, {"x": 2}, 1)


def test_a_version_bump_changes_the_key_and_the_code_identity_does_not(monkeypatch):
    key = stage_key("clean", {"docs": {"path": "/a", "hash": "h"}}, {"x": 1})
    monkeypatch.setattr(artifacts, "code_identity", lambda: {"version": "9", "source_sha256": "other",
                                                             "commit": "f" * 40, "dirty": True})
    assert stage_key("clean", {"docs": {"path": "/a", "hash": "h"}}, {"x": 1}) == key
    bumped = artifacts.StageVersion(artifacts.stage_version("clean") + 1, None)
    monkeypatch.setitem(artifacts.STAGE_VERSIONS, "clean", bumped)
    assert stage_key("clean", {"docs": {"path": "/a", "hash": "h"}}, {"x": 1}) != key


def test_a_stage_without_a_version_is_refused(tmp_path: Path):
    with pytest.raises(KeyError, match="add it to llmops.artifacts.STAGE_VERSIONS"):
        build_stage(tmp_path, "nameless", {}, {}, _writer([]))


def test_inputs_count_by_content_not_by_place(tmp_path: Path):
    """Two upstream outputs with the same content, in two places, key the same downstream output."""
    up_a = _build(tmp_path, {"run": "a"}, _writer([]))
    up_b = _build(tmp_path, {"run": "b"}, _writer([]))
    up_c = _build(tmp_path, {"run": "c"}, _writer([], text="changed"))
    assert up_a.path != up_b.path and up_a.content_hash == up_b.content_hash != up_c.content_hash
    assert input_ref(up_a.path / "out.txt").hash == up_a.content_hash
    down = [stage_key("next", {"in": input_ref(u.path)}, {}, 1) for u in (up_a, up_b, up_c)]
    assert down[0] == down[1] != down[2]


def _docs(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_document_digest_ignores_fetch_times_discovery_and_row_order(tmp_path: Path):
    rows = [{"id": "b", "text": "second page", "fetched_at": "2026-01-01T00:00:00Z", "discovered_via": "link",
             "lang_score": 0.98765432},
            {"id": "a", "text": "first page", "fetched_at": "2026-01-01T00:00:01Z", "discovered_via": "sitemap",
             "lang_score": 0.5}]
    first = parquet_digest(_docs(tmp_path / "1.parquet", rows))
    again = [dict(rows[1], fetched_at="2026-02-02T10:00:00Z", discovered_via="link"),
             dict(rows[0], fetched_at="2026-02-02T10:00:03Z", lang_score=0.98765431)]
    assert parquet_digest(_docs(tmp_path / "2.parquet", again)) == first
    edited = [dict(rows[0], text="second page, edited"), rows[1]]
    assert parquet_digest(_docs(tmp_path / "3.parquet", edited)) != first


def test_failed_build_leaves_nothing_behind(tmp_path: Path):
    def boom(tmp: Path):
        (tmp / "partial").write_text("x")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        _build(tmp_path, {}, boom)
    assert list((tmp_path / "artifacts" / "demo").iterdir()) == []
    assert latest_output(tmp_path, "demo") is None


def test_explicit_out_never_overwrites_unrelated_files(tmp_path: Path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("important")
    with pytest.raises(FileExistsError, match="not an llmops stage output"):
        _build(tmp_path, {}, _writer([]), out_dir=precious)
    assert (precious / "keep.txt").read_text() == "important"


def test_explicit_out_replaces_an_earlier_stage_output(tmp_path: Path):
    out = tmp_path / "out"
    first = _build(tmp_path, {"v": 1}, _writer([]), out_dir=out)
    second = _build(tmp_path, {"v": 2}, _writer([]), out_dir=out)
    assert first.key != second.key and not second.reused
    assert json.loads((out / MANIFEST).read_text())["key"] == second.key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .old-/.tmp- left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _build(tmp_path, {}, _writer([]), out_dir=empty).path == empty


def test_stale_work_in_progress_is_swept(tmp_path: Path):
    import os
    import time

    from llmops.artifacts import STALE_TMP_SECONDS

    root = tmp_path / "artifacts" / "demo"
    stale, fresh = root / ".tmp-abc-1", root / ".tmp-abc-2"
    stale.mkdir(parents=True)
    fresh.mkdir()
    old = time.time() - STALE_TMP_SECONDS - 10
    os.utime(stale, (old, old))
    _build(tmp_path, {}, _writer([]))
    assert not stale.exists() and fresh.exists()


def test_code_identity_names_the_commit_or_the_sources():
    ident = artifacts.code_identity()
    assert ident.version and len(ident.source_sha256) == 12
    line = artifacts.code_version()
    assert line == (f"git:{ident.commit[:12]}" + ("+dirty" if ident.dirty else "") if ident.commit
                    else f"{ident.version}+src.{ident.source_sha256}")
