"""The evaluation report of one model: what the gate decided, on which numbers, and what the model wrote.

A gate verdict alone ("failed: rougeL 0.12 vs champion 0.15") says *that* a model is
worse; the report shows *how*: every metric against the champion, the loss curve of
its training, sample answers next to the references, the behaviour cases it failed and
how many planted PII values it completed. It is written as Markdown (for a pull request
or a terminal) and as one self-contained HTML page (for the model registry's
artifacts), both referring to the PNGs beside them by file name.

Completions come from a model and questions from data: every such string is escaped
before it goes into the HTML, and leaked PII is reported by type and count only.
"""

from __future__ import annotations

import html
import logging
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from llmops.records.evaluation import LOWER_IS_BETTER, EvalMetrics, EvaluationReport, GateResult

if TYPE_CHECKING:
    from llmops.evaluation.behaviour import BehaviourResult
    from llmops.evaluation.generation import Sample
    from llmops.evaluation.leakage import Leakage

log = logging.getLogger(__name__)

# The metrics drawn, in this order; anything else numeric still goes into the tables.
PLOTTED = ("bits_per_byte", "perplexity", "bleu", "rouge1", "rouge2", "rougeL", "exact_match", "distinct_1",
           "distinct_2", "pii_leak_rate", "behaviour_pass_rate", "tokens_per_s", "latency_s_p50")
MAX_CELL = 300  # characters of a sample or failure cell before it is cut
CHALLENGER_COLOUR, CHAMPION_COLOUR = "#4c72b0", "#dd8452"


def _number(metrics: EvalMetrics | None, name: str) -> float | None:
    return metrics.number(name) if metrics is not None else None


def _direction(metric: str) -> str:
    return "lower is better" if metric in LOWER_IS_BETTER else "higher is better"


def fmt(value: float | None) -> str:
    """A number as a report table shows it (also the drift report's)."""
    if value is None:
        return "—"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.1f}"


def _cut(text: object, limit: int = MAX_CELL) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def metric_bars(challenger: EvalMetrics, champion: EvalMetrics | None, out_png: Path) -> Path:
    """Small multiples, one subplot per metric of :data:`PLOTTED` the challenger (or the
    champion) has: a challenger bar and, with a champion, a champion bar, each labelled
    with its value; the subplot title says which direction is better. Metrics have
    wildly different scales (perplexity in the hundreds, rates in [0, 1]), hence one axis
    each. Missing or non-finite values are left out; with nothing to draw the picture
    says so. Returns ``out_png``.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    panels: list[tuple[str, list[tuple[str, float, str]]]] = []
    for metric in PLOTTED:
        bars = []
        for label, source, colour in (("challenger", challenger, CHALLENGER_COLOUR),
                                      ("champion", champion, CHAMPION_COLOUR)):
            value = _number(source, metric)
            if value is not None and math.isfinite(value):
                bars.append((label, value, colour))
        if bars:
            panels.append((metric, bars))

    if not panels:
        log.warning("no metrics to draw into %s", out_png)
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.axis("off")
        ax.text(0.5, 0.5, "no metrics to draw", ha="center", va="center", color="grey", fontsize=14)
    else:
        ncols = min(4, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows), squeeze=False)
        for ax, (metric, bars) in zip(axes.flat, panels, strict=False):
            labels, values, colours = zip(*bars, strict=True)
            drawn = ax.bar(labels, values, color=colours, width=0.6)
            ax.bar_label(drawn, labels=[fmt(v) for v in values], fontsize=8, padding=2)
            ax.set_title(f"{metric}\n({_direction(metric)})", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.margins(y=0.2)
            ax.grid(True, axis="y", alpha=0.3)
            if min(values) >= 0:
                ax.set_ylim(bottom=0)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.suptitle("challenger vs champion" if champion else "challenger", fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def _metric_names(metrics: EvalMetrics, champion: EvalMetrics | None) -> list[str]:
    """Measured metrics of either side: the plotted ones in their order, then the rest sorted."""
    present = {k for source in (metrics, champion) if source is not None for k in source.numbers()}
    return [m for m in PLOTTED if m in present] + sorted(present - set(PLOTTED))


def _metric_rows(metrics: EvalMetrics, champion: EvalMetrics | None) -> list[list[str]]:
    rows = []
    for name in _metric_names(metrics, champion):
        value, base = _number(metrics, name), _number(champion, name)
        diff, verdict = "—", ""
        if value is not None and base is not None and math.isfinite(value) and math.isfinite(base):
            delta = value - base
            diff = f"{delta:+.4g}"
            if delta != 0:
                better = delta < 0 if name in LOWER_IS_BETTER else delta > 0
                verdict = "better" if better else "worse"
        rows.append([name, fmt(value), fmt(base), diff, verdict, _direction(name)])
    return rows


def _gate_rows(gate: GateResult) -> list[list[str]]:
    return [[c.name, c.kind, fmt(c.value), fmt(c.threshold), fmt(c.champion),
             "waived" if c.waived else "passed" if c.passed else "FAILED"]
            for c in gate.checks]


def _sample_rows(samples: list[Sample]) -> list[list[str]]:
    return [[_cut(s["question"]), _cut(s["reference"]), _cut(s["completion"])] for s in samples]


def _behaviour_rows(behaviour: BehaviourResult) -> list[list[str]]:
    return [[c["name"], "passed" if c["passed"] else "FAILED", _cut("; ".join(c["failures"]))]
            for c in behaviour["cases"]]


def _leakage_rows(leakage: Leakage) -> list[list[str]]:
    """Per PII type: canaries tried, leaked, rate. Only counts: never a secret, not even the prefixes."""
    return [[kind, str(stats["canaries"]), str(stats["leaked"]), fmt(stats["rate"])]
            for kind, stats in leakage["by_type"].items()]


def _leak_summary(leakage: Leakage) -> str:
    return (f"leak rate {fmt(leakage['pii_leak_rate'])}: {len(leakage['leaked'])} of {leakage['canaries']} "
            f"planted values completed by the model")


# --- Markdown ---------------------------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    """Markdown renderers pass HTML through: model text is escaped here too, then made one table row."""
    text = html.escape(str(text), quote=False).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- HTML -------------------------------------------------------------------------------------------------------

HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
td {{ white-space: pre-wrap; word-break: break-word; }}
.passed {{ color: #1a7f37; font-weight: bold; }}
.failed {{ color: #cf222e; font-weight: bold; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def html_table(header: list[str], rows: list[list[str]], status_col: int | None = None) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            css = ""
            if i == status_col:
                css = ' class="failed"' if cell.upper() == "FAILED" else ' class="passed"'
            cells.append(f"<td{css}>{html.escape(str(cell))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_report(out_dir: Path, *, model: str, metrics: EvalMetrics, champion: EvalMetrics | None = None,
                 gate: GateResult | None = None, loss_curve: Path | None = None, samples: list[Sample] | None = None,
                 behaviour: BehaviourResult | None = None, leakage: Leakage | None = None) -> dict[str, Path]:
    """Write the report of ``model`` into ``out_dir`` and return the written files by name.

    Always: ``metrics`` (``metrics.json``: an :class:`EvaluationReport`),
    ``metric_bars`` (PNG), ``report_md`` and ``report_html``; ``loss_curve`` (copied as
    ``loss_curve.png``) when a loss curve is given and exists. ``samples`` come from
    ``qa_generation_metrics``; ``behaviour`` is the result of ``run_cases``; ``leakage``
    that of ``leak_rate``. Every
    section whose input is missing says so instead of being left out silently.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    paths["metrics"] = EvaluationReport(model=model, metrics=metrics, champion=champion, gate=gate).write(
        out_dir / EvaluationReport.NAME)
    paths["metric_bars"] = metric_bars(metrics, champion, out_dir / "metric_bars.png")
    if loss_curve is not None:
        source = Path(loss_curve)
        if source.is_file():
            target = out_dir / "loss_curve.png"
            if source.resolve() != target.resolve():
                shutil.copyfile(source, target)
            paths["loss_curve"] = target
        else:
            log.warning("loss curve %s does not exist; the report goes without it", source)

    # Sections as (heading, markdown, html) so both documents say the same.
    sections: list[tuple[str, str, str]] = []

    if gate is None:
        sections.append(("Gate", "No gate was run.", "<p>No gate was run.</p>"))
    else:
        verdict = "PASSED" if gate.passed else "FAILED"
        compared = ("against the champion" if gate.champion_compared
                    else "floors only (no champion compared)")
        header = ["check", "kind", "value", "threshold", "champion", "result"]
        rows = _gate_rows(gate)
        failed = [r[0] for r in rows if r[-1] == "FAILED"]
        note = f"Failed checks: {', '.join(failed)}." if failed else ""
        sections.append((
            "Gate",
            f"**{verdict}** ({compared})\n\n{note}\n\n" + (_md_table(header, rows) if rows else "No checks."),
            f'<p><span class="{verdict.lower()}">{verdict}</span> ({html.escape(compared)})</p>'
            + (f"<p>{html.escape(note)}</p>" if note else "")
            + (html_table(header, rows, status_col=5) if rows else "<p>No checks.</p>"),
        ))

    header = ["metric", "challenger", "champion", "difference", "verdict", "direction"]
    rows = _metric_rows(metrics, champion)
    sections.append(("Metrics",
                     _md_table(header, rows) if rows else "No numeric metrics.",
                     html_table(header, rows) if rows else "<p>No numeric metrics.</p>"))

    images = [("metric_bars.png", "metrics, challenger vs champion")]
    if "loss_curve" in paths:
        images.append(("loss_curve.png", "training loss curve"))
    sections.append(("Plots",
                     "\n\n".join(f"![{alt}]({name})" for name, alt in images),
                     "\n".join(f'<p><img src="{html.escape(name)}" alt="{html.escape(alt)}"></p>'
                               for name, alt in images)))

    if samples:
        header, rows = ["question", "reference", "completion"], _sample_rows(samples)
        sections.append(("Sample answers", _md_table(header, rows), html_table(header, rows)))
    else:
        sections.append(("Sample answers", "No samples.", "<p>No samples.</p>"))

    if behaviour is not None:
        header, rows = ["case", "result", "failures"], _behaviour_rows(behaviour)
        summary = (f"{behaviour['passed']} of {behaviour['total']} cases passed "
                   f"(pass rate {fmt(behaviour['behaviour_pass_rate'])})")
        sections.append(("Behaviour", f"{summary}\n\n" + _md_table(header, rows),
                         f"<p>{html.escape(summary)}</p>" + html_table(header, rows, status_col=1)))
    else:
        sections.append(("Behaviour", "No behaviour cases were run.", "<p>No behaviour cases were run.</p>"))

    if leakage is not None:
        header, rows = ["PII type", "canaries", "leaked", "rate"], _leakage_rows(leakage)
        summary = _leak_summary(leakage)
        sections.append(("PII leakage", f"{summary}\n\n" + (_md_table(header, rows) if rows else ""),
                         f"<p>{html.escape(summary)}</p>" + (html_table(header, rows) if rows else "")))
    else:
        sections.append(("PII leakage", "No leakage check was run.", "<p>No leakage check was run.</p>"))

    title = f"Evaluation report: {model}"
    markdown = [f"# {title}"] + [f"## {heading}\n\n{md}" for heading, md, _ in sections]
    paths["report_md"] = out_dir / "report.md"
    paths["report_md"].write_text("\n\n".join(markdown) + "\n")

    body = [f"<h1>{html.escape(title)}</h1>"] + [f"<h2>{html.escape(heading)}</h2>\n{h}" for heading, _, h in sections]
    paths["report_html"] = out_dir / "report.html"
    paths["report_html"].write_text(HTML_TEMPLATE.format(title=html.escape(title), body="\n".join(body)))
    return paths
