import json
from pathlib import Path

import pytest

from llmops.artifacts import MANIFEST, build_stage, latest_output, stage_key


def _writer(calls: list):
    def build(tmp: Path):
        calls.append(tmp)
        (tmp / "out.txt").write_text("hello")
        return {"n": 1}
    return build


def test_same_inputs_reuse_finished_output(tmp_path: Path):
    calls: list = []
    first = build_stage(tmp_path, "demo", {"a": 1}, {"x": 2}, _writer(calls))
    second = build_stage(tmp_path, "demo", {"a": 1}, {"x": 2}, _writer(calls))
    assert len(calls) == 1 and not first.reused and second.reused
    assert first.path == second.path == tmp_path / "artifacts" / "demo" / first.key
    manifest = json.loads((first.path / MANIFEST).read_text())
    assert manifest["inputs"] == {"a": 1} and manifest["summary"] == {"n": 1}
    assert set(manifest["outputs"]) == {"out.txt"}
    assert first.asset_extra()["hash"] == first.key


def test_different_config_gets_a_different_directory(tmp_path: Path):
    assert stage_key("s", {"a": 1}, {"x": 1}) != stage_key("s", {"a": 1}, {"x": 2})


def test_failed_build_leaves_nothing_behind(tmp_path: Path):
    def boom(tmp: Path):
        (tmp / "partial").write_text("x")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        build_stage(tmp_path, "demo", {}, {}, boom)
    assert list((tmp_path / "artifacts" / "demo").iterdir()) == []
    assert latest_output(tmp_path, "demo") is None


def test_explicit_out_never_overwrites_unrelated_files(tmp_path: Path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("important")
    with pytest.raises(FileExistsError, match="not an llmops stage output"):
        build_stage(tmp_path, "demo", {}, {}, _writer([]), out_dir=precious)
    assert (precious / "keep.txt").read_text() == "important"


def test_explicit_out_replaces_an_earlier_stage_output(tmp_path: Path):
    out = tmp_path / "out"
    first = build_stage(tmp_path, "demo", {"v": 1}, {}, _writer([]), out_dir=out)
    second = build_stage(tmp_path, "demo", {"v": 2}, {}, _writer([]), out_dir=out)
    assert first.key != second.key and not second.reused
    assert json.loads((out / MANIFEST).read_text())["key"] == second.key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .old-/.tmp- left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_stage(tmp_path, "demo", {}, {}, _writer([]), out_dir=empty).path == empty


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
    build_stage(tmp_path, "demo", {}, {}, _writer([]))
    assert not stale.exists() and fresh.exists()
