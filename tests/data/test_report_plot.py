from llmops.data.pipeline import format_report, write_report
from llmops.records.data import DataReport

REPORT = DataReport.load({
    "crawl": {"seed_url": "http://h/", "pages_ok": 10, "pages_failed": 2, "failed_by_reason": {"http_404": 2},
              "not_modified": 0, "path": "/x", "key": "c", "content_hash": "cc", "reused": False, "urls_seen": 12,
              "pages_per_s": 1.0},
    "extract": {"docs_out": 9, "dropped_by_reason": {"no_text": 1}, "shards": 2, "reused": False},
    "clean": {"docs_out": 8, "dropped_by_filter": {"length": 1}, "reused": False},
    "dedup": {"docs_in": 8, "docs_out": 7, "exact_duplicates_removed": 1, "near_duplicates_removed": 0,
              "clusters": 1, "duplicate_rate": 0.125, "tokens_estimate_words": 700, "reused": False},
    "corpus": {"path": "/a/dedup/k", "hash": "k", "content_hash": "kk"},
})


def test_write_report_renders_text_json_and_plot(tmp_path):
    out = write_report(tmp_path, "manual__2026-01-01T00:00:00+00:00", REPORT)
    assert out.name == "manual__2026-01-01T00_00_00_00_00"
    assert (out / "funnel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "summary.txt").read_text()
    assert text.strip() == format_report(REPORT)
    assert "http_404=2" in text and "1 exact and 0 near duplicates removed" in text
    assert (tmp_path / "reports" / "llmops_data" / "latest.json").exists()
