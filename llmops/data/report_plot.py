"""The run report's picture: where documents went, stage by stage, and why pages failed.

People read a funnel faster than a table of counts; the numbers are in summary.json.
"""

from __future__ import annotations

from pathlib import Path

from llmops.records.data import DataReport


def plot_funnel(report: DataReport, path: Path) -> Path:
    """Left: documents surviving each stage. Right: failures and drops by reason."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    crawl, extract, clean, dedup = report.crawl, report.extract, report.clean, report.dedup
    stages = [
        ("URLs in index", crawl.pages_ok + crawl.pages_failed),
        ("pages fetched", crawl.pages_ok),
        ("documents extracted", extract.docs_out),
        ("kept by quality filters", clean.docs_out),
        ("kept after dedup", dedup.docs_out),
    ]
    reasons = {f"crawl: {k}": v for k, v in crawl.failed_by_reason.items()}
    reasons |= {f"extract: {k}": v for k, v in extract.dropped_by_reason.items()}
    reasons |= {f"clean: {k}": v for k, v in clean.dropped_by_filter.items()}
    reasons |= {"dedup: exact duplicate": dedup.exact_duplicates_removed,
                "dedup: near duplicate": dedup.near_duplicates_removed}
    reasons = {k: v for k, v in reasons.items() if v}

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 1.2]})
    labels, values = zip(*stages, strict=True)
    bars = left.barh(labels[::-1], values[::-1], color="#4c72b0")
    left.bar_label(bars, padding=3)
    left.set_title("Documents through llmops_data")
    left.set_xlim(0, max(values) * 1.15 or 1)
    if reasons:
        names, counts = zip(*sorted(reasons.items(), key=lambda kv: kv[1]), strict=True)
        bars = right.barh(names, counts, color="#dd8452")
        right.bar_label(bars, padding=3)
        right.set_xlim(0, max(counts) * 1.2)
    right.set_title("Failed, dropped or removed, by reason")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
