"""The demo's own logic, without a stack: which report it prints, when the loop already ran,
and its phase table. (The demo itself runs the e2e tests' path; ``make demo`` is tried by hand
and in ``make bench``.)"""

from __future__ import annotations

from llmops.data import pipeline as P
from llmops.demo import DemoPhases, _latest_report, _loop_ran
from tests.retrain.test_lineage import cfg_fixture, model_dir_fixture, register  # noqa: F401 (fixtures)
from tests.stage_fixture import crawl_stage, fixture_config


def test_the_data_runs_latest_report_is_read_with_its_data_card(cfg, tmp_path):
    data_cfg = fixture_config(cfg.home)
    crawl = crawl_stage(data_cfg, "demo")
    extract = P.extract_stage(data_cfg, crawl.path)
    clean = P.clean_stage(data_cfg, extract.path)
    corpus = P.dedup_stage(data_cfg, [clean.path])
    report = P.build_report(crawl, [extract], [clean], corpus)
    out = P.write_report(cfg.home, "manual__1", report, data_card=tmp_path / "card")
    assert _latest_report(cfg, "llmops_data") == out


def test_the_loop_ran_only_when_the_champion_came_from_a_retraining(cfg, model_dir):
    fresh = cfg.model_copy(update={"home": cfg.home.parent / "fresh"})
    assert _loop_ran(fresh) is None  # no registry at all: nothing ran
    register(cfg, model_dir, "card1", champion=True)
    assert _loop_ran(cfg) is None
    register(cfg, model_dir, "card2", base="1", champion=True)
    assert _loop_ran(cfg) == "2"


def test_the_phase_table_adds_up(monkeypatch):
    clock = iter([0.0, 65.0, 200.0, 200.0])
    monkeypatch.setattr("llmops.demo.time.monotonic", lambda: next(clock))
    phases = DemoPhases()
    phases.done("first")
    phases.done("second")
    assert phases.rows == [("first", 65.0), ("second", 135.0)]
    assert phases.table().splitlines()[-1].split() == ["3m20s", "in", "all"]
