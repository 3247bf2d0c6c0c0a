from __future__ import annotations

from llmops.records.training import CheckpointMarker
from llmops.training import checkpoint as ckpt


def _tag(root, step, complete=True):
    d = root / ckpt.tag_for(step)
    d.mkdir(parents=True)
    (d / "mp_rank_00_model_states.pt").write_bytes(b"x")
    if complete:
        CheckpointMarker(step=step, world_size=2, zero_stage=0, saved_at="2026-01-01T00:00:00+00:00").write(d)
    return d


def test_newest_complete_never_picks_a_half_written_checkpoint(tmp_path):
    _tag(tmp_path, 10)
    _tag(tmp_path, 20)
    half = _tag(tmp_path, 30, complete=False)
    assert ckpt.newest_complete(tmp_path)[0] == 20
    assert ckpt.incomplete_checkpoints(tmp_path) == [half]
    assert ckpt.newest_complete(tmp_path / "missing") is None


def test_prune_keeps_the_newest_and_removes_stale_partials(tmp_path):
    for step in (10, 20, 30):
        _tag(tmp_path, step)
    old_partial = _tag(tmp_path, 15, complete=False)
    new_partial = _tag(tmp_path, 40, complete=False)
    removed = ckpt.prune(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == [ckpt.tag_for(10), ckpt.tag_for(15)]
    assert [s for s, _ in ckpt.complete_checkpoints(tmp_path)] == [20, 30]
    assert not old_partial.exists() and new_partial.exists()  # a newer partial may be a save in progress
