"""The drift report for people: what ``llmops drift check`` decided, on which numbers, and how
the served model's traffic moved away from its reference.

``drift.json`` (a :class:`DriftReport`, written by the caller) is the record; this module renders
it as Markdown and one HTML page referring to two PNGs beside them by file name, the same way
the evaluation report does (its table and number helpers are reused so both read alike), and
logs it to MLflow next to the training and evaluation runs of the same experiment.

A verdict alone ("drift detected: token_js=0.52 > 0.35") says *that* the traffic moved; the
pictures show *how*: ``distributions.png`` puts the latest window's prompts beside the
reference's (lengths, surprise, bytes per token, token buckets, languages) and
``signals.png`` draws every data and quality signal over the past checks against its
threshold, so one odd window is told apart from a trend.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmops.evaluation.report import HTML_TEMPLATE, fmt, html_table
from llmops.records.monitoring import DriftReport, Signal, WindowResult

if TYPE_CHECKING:
    from llmops.config import LlmopsConfig

log = logging.getLogger(__name__)

REFERENCE_COLOUR, WINDOW_COLOUR, DRIFT_COLOUR = "#dd8452", "#4c72b0", "#cf222e"
TOP_TOKEN_BUCKETS = 20  # token buckets drawn: those whose share moved most, plus "other"
TOP_LANGUAGES = 8  # languages drawn; the rest are summed into one bar
VOTING_KINDS = ("data", "quality")  # the signals that decide drift (service ones are shown only)
DPI = 100


@dataclass
class ReportSamples:
    """The raw values behind the latest window's comparison, for the pictures only.

    Every field may be empty (a ``not_enough_data`` check has little to show); each panel
    then says there is nothing to draw. Token shares are over the top-K corpus token buckets
    plus a final ``other`` bucket; counts work too (they are normalised when drawn).
    """

    reference_lengths: Sequence[float] = field(default_factory=list)
    """Prompt tokens of the reference's questions."""
    window_lengths: Sequence[float] = field(default_factory=list)
    reference_bits_per_byte: Sequence[float] = field(default_factory=list)
    window_bits_per_byte: Sequence[float] = field(default_factory=list)
    reference_bytes_per_token: Sequence[float] = field(default_factory=list)
    window_bytes_per_token: Sequence[float] = field(default_factory=list)
    reference_tokens: Sequence[float] = field(default_factory=list)
    """Shares of the K buckets then ``other`` (K + 1 values)."""
    window_tokens: Sequence[float] = field(default_factory=list)
    reference_languages: dict[str, int] = field(default_factory=dict)
    """Questions per detected language."""
    window_languages: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reference_tokens and self.window_tokens and len(self.reference_tokens) != len(self.window_tokens):
            raise ValueError(f"reference_tokens has {len(self.reference_tokens)} buckets but window_tokens has "
                             f"{len(self.window_tokens)}: both are the same top-K buckets plus 'other'")


def _utc(timestamp: float | None) -> str:
    if timestamp is None:
        return "—"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: object) -> str:
    """Text (a message, a file's reason) for Markdown: renderers pass HTML through, so ``&`` and
    ``<`` are escaped; ``>`` is left alone (no tag starts with it), because every verdict
    message holds one (``token_js=0.52 > 0.35``) and ``&gt;`` would spoil ``drift.md`` in a terminal."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return _text(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])


def _latest(report: DriftReport) -> WindowResult | None:
    return report.windows[-1] if report.windows else None


def _title(report: DriftReport) -> str:
    return f"Drift check: {report.model} v{report.version}"


# --- Pictures ---------------------------------------------------------------------------------------------------

def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    return plt


def _nothing(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", color="grey", fontsize=10, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _ecdf_panel(ax: Any, title: str, reference: Sequence[float], window: Sequence[float]) -> None:
    """Two empirical CDFs on one axis: unlike histograms they need no bin width, and a shift
    of the whole distribution reads as one curve beside the other."""
    ax.set_title(title, fontsize=9)
    drawn = False
    for label, values, colour in (("reference", reference, REFERENCE_COLOUR), ("window", window, WINDOW_COLOUR)):
        finite = np.asarray(values, dtype=float)
        finite = finite[np.isfinite(finite)]
        if finite.size:
            ax.ecdf(finite, label=f"{label} (n={finite.size})", color=colour)
            drawn = True
    if not drawn:
        _nothing(ax, "values")
        return
    ax.set_ylabel("share ≤ x", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def _shares(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    total = array.sum()
    return array / total if total > 0 else array


def _paired_bars(ax: Any, title: str, labels: list[str], reference: np.ndarray, window: np.ndarray) -> None:
    x = np.arange(len(labels))
    ax.bar(x - 0.2, reference, width=0.4, color=REFERENCE_COLOUR, label="reference")
    ax.bar(x + 0.2, window, width=0.4, color=WINDOW_COLOUR, label="window")
    ax.set_xticks(x, labels, rotation=60, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("share", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)


def _token_panel(ax: Any, reference: Sequence[float], window: Sequence[float]) -> None:
    """The buckets whose share moved most, then ``other``: with K in the hundreds, all of them
    would be an unreadable comb where the few that matter are lost."""
    if not reference or not window:
        ax.set_title("question tokens", fontsize=9)
        _nothing(ax, "token counts")
        return
    ref, win = _shares(reference), _shares(window)
    moved = np.argsort(-np.abs(win[:-1] - ref[:-1]), kind="stable")[:TOP_TOKEN_BUCKETS]
    picked = [*moved.tolist(), len(ref) - 1]
    labels = [f"#{i + 1}" for i in moved.tolist()] + ["other"]
    _paired_bars(ax, f"question tokens: the {len(moved)} buckets that moved most (#rank in the corpus) + other",
                 labels, ref[picked], win[picked])


def _language_panel(ax: Any, reference: dict[str, int], window: dict[str, int]) -> None:
    if not sum(reference.values()) and not sum(window.values()):
        ax.set_title("languages", fontsize=9)
        _nothing(ax, "languages")
        return
    names = sorted(set(reference) | set(window))
    ref = _shares([reference.get(n, 0) for n in names])
    win = _shares([window.get(n, 0) for n in names])
    order = sorted(range(len(names)), key=lambda i: (-max(ref[i], win[i]), names[i]))
    shown, rest = order[:TOP_LANGUAGES], order[TOP_LANGUAGES:]
    labels = [names[i] for i in shown]
    ref_bars, win_bars = list(ref[shown]), list(win[shown])
    if rest:
        labels.append(f"{len(rest)} more")
        ref_bars.append(float(ref[rest].sum()))
        win_bars.append(float(win[rest].sum()))
    _paired_bars(ax, "languages", labels, np.asarray(ref_bars), np.asarray(win_bars))


def distribution_plots(report: DriftReport, samples: ReportSamples, out_png: Path) -> Path:
    """Reference vs latest window: three ECDFs on top (prompt tokens, bits per byte, bytes per
    token), token buckets and languages below. Returns ``out_png``."""
    plt = _pyplot()
    fig = plt.figure(figsize=(12, 6.5))
    grid = fig.add_gridspec(2, 3)
    _ecdf_panel(fig.add_subplot(grid[0, 0]), "prompt length (tokens)", samples.reference_lengths,
                samples.window_lengths)
    _ecdf_panel(fig.add_subplot(grid[0, 1]), "bits per byte (the model's surprise)", samples.reference_bits_per_byte,
                samples.window_bits_per_byte)
    _ecdf_panel(fig.add_subplot(grid[0, 2]), "bytes per token", samples.reference_bytes_per_token,
                samples.window_bytes_per_token)
    _token_panel(fig.add_subplot(grid[1, :2]), samples.reference_tokens, samples.window_tokens)
    _language_panel(fig.add_subplot(grid[1, 2]), samples.reference_languages, samples.window_languages)
    fig.suptitle(f"{report.model} v{report.version}: {report.verdict} (reference vs latest window)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=DPI)
    plt.close(fig)
    return out_png


def _checks(report: DriftReport, history: Sequence[DriftReport]) -> list[DriftReport]:
    """The earlier checks by time, then this one."""
    return [*sorted(history, key=lambda r: r.time), report]


def window_points(report: DriftReport, history: Sequence[DriftReport]) -> list[tuple[WindowResult, bool]]:
    """Every window the checks looked at, oldest first, once each, with whether the check whose
    latest window it was decided drift. Consecutive checks share windows (persistence looks
    back), and a later check's reading of a window replaces an earlier one's. Windows too
    small to judge (``not_enough_data``) are left out: their distances are noise."""
    points: dict[tuple[float, float], tuple[WindowResult, bool]] = {}
    for checked in _checks(report, history):
        for window in checked.windows:
            if not window.enough_data:
                continue
            key = (round(window.start, 3), round(window.end, 3))
            was_drift = points.get(key, (window, False))[1]
            points[key] = (window, was_drift or (window is checked.windows[-1] and checked.verdict == "drift"))
    return sorted(points.values(), key=lambda p: p[0].end)


def _signal_names(points: list[tuple[WindowResult, bool]]) -> list[str]:
    """Data and quality signals, in the order the latest window lists them, then older ones."""
    names: dict[str, None] = {}
    for window, _ in reversed(points):
        for signal in window.signals:
            if signal.kind in VOTING_KINDS:
                names.setdefault(signal.name)
    return list(names)


def signal_history(report: DriftReport, history: Sequence[DriftReport], out_png: Path) -> Path:
    """One small axis per data or quality signal: its value per window (a line), its threshold
    (dashed), crossings as red dots and the checks that decided drift as red vertical lines.
    Signals have their own scales (a ratio near 1, distances in 0..1), hence one axis each.
    ``history`` holds the previous reports (sorted here by time). Returns ``out_png``."""
    plt = _pyplot()
    import matplotlib.dates as mdates

    points = window_points(report, history)
    names = _signal_names(points)
    title = f"{report.model} v{report.version}: {report.verdict}"
    if not names:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.axis("off")
        ax.text(0.5, 0.5, "no signal values yet", ha="center", va="center", color="grey", fontsize=14)
        fig.suptitle(title, fontsize=11)
    else:
        ncols = min(4, len(names))
        nrows = math.ceil(len(names) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows + 0.4), squeeze=False)
        drift_times = [datetime.fromtimestamp(w.end, UTC) for w, was_drift in points if was_drift]
        for ax, name in zip(axes.flat, names, strict=False):
            found = [(datetime.fromtimestamp(w.end, UTC), s) for w, _ in points for s in w.signals if s.name == name]
            drawn = [(t, s) for t, s in found if s.value is not None and math.isfinite(s.value)]
            for when in drift_times:
                ax.axvline(when, color=DRIFT_COLOUR, alpha=0.25, linewidth=3)
            if drawn:
                ax.plot([t for t, _ in drawn], [s.value for _, s in drawn], marker="o", markersize=3,
                        color=WINDOW_COLOUR)
                crossed = [(t, s.value) for t, s in drawn if s.drifted]
                if crossed:
                    ax.scatter(*zip(*crossed, strict=True), color=DRIFT_COLOUR, zorder=3, s=25)
            else:
                reason = next((s.reason for _, s in reversed(found) if s.reason), None)
                ax.text(0.5, 0.75, f"no value\n{reason or ''}", ha="center", va="center", color="grey", fontsize=8,
                        wrap=True, transform=ax.transAxes)
            ax.plot([t for t, _ in found], [s.threshold for _, s in found], linestyle="--", color="grey",
                    linewidth=1)
            ax.set_title(name, fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        fig.suptitle(f"{title}: signals per window (dashed: threshold; red: crossed / drift decided)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=DPI)
    plt.close(fig)
    return out_png


# --- Sections (heading, Markdown, HTML), so both documents say the same ------------------------------------------

Section = tuple[str, str, str]


def _table_section(heading: str, intro: str, header: list[str], rows: list[list[str]], empty: str) -> Section:
    """A paragraph, then a table, or ``empty`` when there are no rows."""
    md = [_text(intro)] if intro else []
    htm = [f"<p>{html.escape(intro)}</p>"] if intro else []
    md.append(_md_table(header, rows) if rows else _text(empty))
    htm.append(html_table(header, rows) if rows else f"<p>{html.escape(empty)}</p>")
    return heading, "\n\n".join(md), "\n".join(htm)


def _verdict_section(report: DriftReport) -> Section:
    facts = (f"Checked {_utc(report.time)}: model {report.model} version {report.version}"
             f"{f' ({report.model_uri})' if report.model_uri else ''}, windows of {report.window}; a window "
             f"drifts when {report.vote} signals cross their thresholds, and drift is decided after "
             f"{report.persistence} drifted windows in a row.")
    css = "failed" if report.verdict == "drift" else "passed"
    return ("Verdict",
            f"**{report.verdict}**: {_text(report.message)}\n\n{_text(facts)}",
            f'<p><span class="{css}">{html.escape(report.verdict)}</span>: {html.escape(report.message)}</p>'
            f"<p>{html.escape(facts)}</p>")


def _signal_rows(signals: list[Signal]) -> list[list[str]]:
    return [[s.name, s.kind, fmt(s.reference), fmt(s.window), fmt(s.value), fmt(s.threshold),
             "—" if s.value is None else ("yes" if s.drifted else "no"), fmt(s.p_value), s.reason or ""]
            for s in signals]


def _signals_section(report: DriftReport) -> Section:
    latest = _latest(report)
    intro = "" if latest is None else (
        f"Latest window, {_utc(latest.start)} to {_utc(latest.end)}: {latest.requests} answered requests, "
        f"{latest.votes} data and quality signals crossed their thresholds. Service signals are shown, never voted.")
    header = ["signal", "kind", "reference", "window", "value", "threshold", "crossed", "p-value", "note"]
    return _table_section("Signals of the latest window", intro, header,
                          _signal_rows(latest.signals) if latest else [], "No window was checked.")


def _windows_section(report: DriftReport) -> Section:
    header = ["#", "start (UTC)", "end (UTC)", "requests", "refused", "errors", "votes", "drifted", "enough data"]
    rows = [[str(i), _utc(w.start), _utc(w.end), str(w.requests), str(w.refused), str(w.errors), str(w.votes),
             "yes" if w.drifted else "no", "yes" if w.enough_data else "no"]
            for i, w in enumerate(report.windows, 1)]
    return _table_section("Windows", "Oldest first; the last is the latest.", header, rows, "No windows.")


def _plots_section() -> Section:
    images = [("distributions.png", "reference vs latest window"), ("signals.png", "signals per window")]
    return ("Plots",
            "\n\n".join(f"![{alt}]({name})" for name, alt in images),
            "\n".join(f'<p><img src="{name}" alt="{alt}"></p>' for name, alt in images))


def _service_section(report: DriftReport) -> Section:
    service = report.service
    alerts = report.service_alerts
    alert_md = "\n".join(f"- {_text(a)}" for a in alerts) if alerts else "No service alerts."
    alert_html = ("<ul>" + "".join(f"<li>{html.escape(a)}</li>" for a in alerts) + "</ul>") if alerts \
        else "<p>No service alerts.</p>"
    if not service.available:
        why = f"Triton's metrics are unavailable: {service.reason or 'no reason given'}."
        return "Service", f"{_text(why)}\n\n{alert_md}", f"<p>{html.escape(why)}</p>{alert_html}"
    answered = (service.success or 0) + (service.failure or 0)
    rows = [["seconds", fmt(service.seconds)], ["successful requests", fmt(service.success)],
            ["failed requests", fmt(service.failure)],
            ["failure rate", fmt((service.failure or 0) / answered if answered else None)],
            ["queue ms (mean)", fmt(service.queue_ms_mean)], ["compute ms (mean)", fmt(service.compute_ms_mean)],
            ["request ms (mean)", fmt(service.request_ms_mean)]]
    intro = "Triton's counters since the previous check" + (
        " (a counter went down: Triton restarted in between, so these cover less)." if service.counter_reset else ".")
    heading, md, htm = _table_section("Service", intro, ["quantity", "value"], rows, "")
    return heading, f"{md}\n\n{alert_md}", htm + alert_html


def _calibration_section(report: DriftReport) -> Section:
    calibration = report.calibration
    if calibration is None:
        return "Calibration", "No calibration was run.", "<p>No calibration was run.</p>"
    intro = (f"{calibration.false_alarms} of {calibration.windows} windows of {calibration.window_requests} requests "
             f"resampled from the reference drifted: false-alarm rate {fmt(calibration.false_alarm_rate)}.")
    latest = _latest(report)
    thresholds = {s.name: s.threshold for s in latest.signals} if latest else {}
    rows = [[name, fmt(rate), fmt(thresholds.get(name))] for name, rate in calibration.signal_rates.items()]
    return _table_section("Calibration", intro, ["signal", "share of windows crossed", "threshold"], rows,
                          "No per-signal rates.")


def _log_section(report: DriftReport) -> Section:
    stats = report.log
    intro = (f"{stats.records} records from {stats.files} files; {stats.bad_lines} bad lines skipped, "
             f"{stats.dropped} records dropped by the model's writer (queue full).")
    rows = [[reason] for reason in stats.skipped_files]
    return _table_section("Inference log", intro, ["skipped file"], rows, "No file was skipped.")


def _reference_section(report: DriftReport) -> Section:
    ref = report.reference
    rows = [["held-out questions", str(ref.heldout_questions)], ["held-out file", ref.heldout_path or "—"],
            ["traffic requests", str(ref.traffic_requests)],
            ["traffic from (UTC)", _utc(ref.traffic_start)], ["traffic to (UTC)", _utc(ref.traffic_end)],
            ["deployed at (UTC)", _utc(ref.deployed_at)]]
    return _table_section("Reference", "What the windows were compared with.", ["quantity", "value"], rows, "")


def _history_section(report: DriftReport, history: Sequence[DriftReport]) -> Section:
    rows = [[_utc(r.time), r.version, r.verdict, str(r.windows[-1].votes) if r.windows else "—", r.message]
            for r in _checks(report, history)]
    return _table_section("Checks", "This check and the earlier ones drawn in signals.png, oldest first.",
                          ["time (UTC)", "version", "verdict", "votes", "message"], rows, "")


def write_report(out_dir: Path, report: DriftReport, samples: ReportSamples,
                 history: Sequence[DriftReport] = ()) -> list[Path]:
    """Write ``distributions.png``, ``signals.png``, ``drift.md`` and ``drift.html`` into
    ``out_dir`` and return their paths. ``history`` holds earlier reports (any order) for
    the signals over time. ``drift.json`` is the caller's: the record is written once, by
    whoever decided it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [distribution_plots(report, samples, out_dir / "distributions.png"),
             signal_history(report, history, out_dir / "signals.png")]
    sections = [_verdict_section(report), _signals_section(report), _windows_section(report), _plots_section(),
                _service_section(report), _calibration_section(report), _log_section(report),
                _reference_section(report), _history_section(report, history)]
    title = _title(report)
    markdown = [f"# {_text(title)}"] + [f"## {heading}\n\n{md}" for heading, md, _ in sections]
    (out_dir / "drift.md").write_text("\n\n".join(markdown) + "\n", encoding="utf-8")
    body = [f"<h1>{html.escape(title)}</h1>"] + [f"<h2>{html.escape(heading)}</h2>\n{h}" for heading, _, h in sections]
    (out_dir / "drift.html").write_text(HTML_TEMPLATE.format(title=html.escape(title), body="\n".join(body)),
                                        encoding="utf-8")
    return [*paths, out_dir / "drift.md", out_dir / "drift.html"]


# --- MLflow -----------------------------------------------------------------------------------------------------

def log_to_mlflow(cfg: LlmopsConfig, report: DriftReport, report_dir: Path | None) -> str:
    """Record the check as one MLflow run in ``cfg.mlflow.experiment``; returns its run id.

    Metrics are ``drift_<signal>`` for every signal of the latest window with a value, plus
    ``drift_requests``, ``drift_votes`` and ``drift_false_alarm_rate``; tags say the verdict
    and the model; ``report_dir``'s files become the run's ``drift/`` artifacts. The run is
    found by the check's identity (model, version, time) before one is created, so an Airflow
    retry logs into the same run instead of adding a second one.
    """
    from llmops.registry import tracking

    tags = {"drift_verdict": report.verdict, "llmops.kind": "drift_check", "llmops.model": report.model,
            "llmops.model_version": report.version}
    if report.model_uri:
        tags["llmops.model_uri"] = report.model_uri
    run_id = tracking.job_run(cfg, f"drift-check/{report.model}/{report.version}/{report.time!r}",
                              f"drift-check-v{report.version}", parent_run_id=None, tags=tags)
    latest = _latest(report)
    metrics: dict[str, float] = {f"drift_{s.name}": s.value for s in (latest.signals if latest else [])
                                 if s.value is not None}
    metrics["drift_requests"] = latest.requests if latest else 0
    metrics["drift_votes"] = latest.votes if latest else 0
    if report.calibration is not None:
        metrics["drift_false_alarm_rate"] = report.calibration.false_alarm_rate
    with tracking.RunLogger(run_id, tracking.tracking_uri(cfg)) as logger:
        logger.log_params({"window": report.window, "persistence": report.persistence, "vote": report.vote})
        logger.log_metrics(metrics, step=0)
        if report_dir is not None:
            logger.log_artifact(report_dir, artifact_path="drift")
    return run_id
