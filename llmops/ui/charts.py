"""The LLMOps view's pictures: small matplotlib charts rendered to inline SVG per request.

SVG rather than PNG files: a chart is drawn from the summary the page shows (the same
numbers as the JSON), scales with the page, needs no file route, and with
``svg.fonttype: none`` its text stays text (a few KB a chart). matplotlib is imported on
the first chart only, never when the plugin loads; figures are built with the object API
(no pyplot state), and the rc settings are applied under a lock because they are global.
"""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from llmops.records.ui import LossCurve, SignalSeries, TrafficStats

TRAIN_COLOUR = "#4c72b0"
VALIDATION_COLOUR = "#dd8452"
THRESHOLD_COLOUR = "#7f7f7f"
DRIFT_COLOUR = "#c44e52"
RETRAIN_COLOUR = "#55a868"
REFUSED_COLOUR = "#c44e52"

_RC = {"svg.fonttype": "none", "font.size": 8, "axes.titlesize": 9, "axes.spines.top": False,
       "axes.spines.right": False, "figure.dpi": 72}
_LOCK = threading.Lock()


@contextmanager
def _figure(width: float, height: float) -> Iterator[tuple[Any, list[str]]]:
    """A fresh figure under the view's rc settings; the SVG text lands in the list on exit."""
    import matplotlib
    from matplotlib.figure import Figure

    out: list[str] = []
    with _LOCK, matplotlib.rc_context(cast(Any, _RC)):
        fig = Figure(figsize=(width, height))
        yield fig, out
        from matplotlib.backends.backend_svg import FigureCanvasSVG

        buf = io.StringIO()
        FigureCanvasSVG(fig).print_svg(buf)
    svg = buf.getvalue()
    out.append(svg[svg.index("<svg"):])  # inline: no XML prolog or doctype


def _times(values: Sequence[float]) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(v, dt.UTC) for v in values]


def _time_axis(ax: Any) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(maxticks=5)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def loss_chart(curve: LossCurve, title: str) -> str:
    """Train loss (a line) and validation loss (markers) against the optimizer step."""
    with _figure(4.6, 2.4) as (fig, out):
        ax = fig.add_subplot()
        if curve.train:
            ax.plot(*zip(*curve.train, strict=True), color=TRAIN_COLOUR, linewidth=1.4, label="train")
        if curve.validation:
            ax.plot(*zip(*curve.validation, strict=True), color=VALIDATION_COLOUR, marker="o", markersize=4,
                    linestyle=":", linewidth=1, label="validation")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats/token)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False, loc="upper right")
        fig.tight_layout()
    return out[0]


def signal_chart(series: SignalSeries, retrain_starts: Sequence[float] = ()) -> str:
    """A signal's value per window against its threshold (dashed): crossings as red dots, the
    checks that decided drift as red bands, retrainings that started as green lines."""
    with _figure(3.4, 2.1) as (fig, out):
        ax = fig.add_subplot()
        points = series.points
        times = _times([p.time for p in points])
        for when, point in zip(times, points, strict=True):
            if point.drift_decided:
                ax.axvline(when, color=DRIFT_COLOUR, alpha=0.2, linewidth=4)
        first, last = (min(times), max(times)) if times else (None, None)
        for when in _times(retrain_starts):  # the ones since the first window (a later one widens the axis)
            if first is not None and first <= when:
                ax.axvline(when, color=RETRAIN_COLOUR, linestyle="--", linewidth=1)
        drawn = [(t, p.value) for t, p in zip(times, points, strict=True) if p.value is not None]
        if drawn:
            ax.plot(*zip(*drawn, strict=True), color=TRAIN_COLOUR, marker="o", markersize=2.5, linewidth=1)
        crossed = [(t, p.value) for t, p in zip(times, points, strict=True) if p.drifted and p.value is not None]
        if crossed:
            ax.scatter(*zip(*crossed, strict=True), color=DRIFT_COLOUR, s=14, zorder=3)
        ax.step(times, [p.threshold for p in points], where="post", linestyle="--", color=THRESHOLD_COLOUR,
                linewidth=1)
        if not drawn:
            ax.text(0.5, 0.5, "no value yet", transform=ax.transAxes, ha="center", va="center", color="grey")
        if first is not None and first == last:  # one window: give the time axis a width to label
            ax.set_xlim(first - dt.timedelta(minutes=5), first + dt.timedelta(minutes=5))
        ax.set_title(f"{series.name} ({series.kind})")
        ax.grid(True, alpha=0.3)
        _time_axis(ax)
        fig.tight_layout()
    return out[0]


def traffic_chart(traffic: TrafficStats) -> str:
    """Requests per minute over the last hour: answered, and refused or failed on top."""
    with _figure(6.0, 1.9) as (fig, out):
        ax = fig.add_subplot()
        starts = _times([b.start for b in traffic.timeline])
        width = 0.8 / (24 * 60)  # 0.8 of a minute, in days (matplotlib's date unit)
        answered = [b.answered for b in traffic.timeline]
        failed = [b.refused + b.errors for b in traffic.timeline]
        ax.bar(starts, answered, width=width, align="edge", color=TRAIN_COLOUR, label="answered")
        ax.bar(starts, failed, width=width, align="edge", bottom=answered, color=REFUSED_COLOUR,
               label="refused or failed")
        ax.set_ylabel("requests / min")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(frameon=False, loc="upper left", ncols=2)
        _time_axis(ax)
        fig.tight_layout()
    return out[0]
