"""The loss curve of a training job: train loss, validation loss and learning rate by step.

One picture answers the first questions about a run: did the loss go down, did
validation follow it or part ways (overfitting), and was the learning rate where the
schedule said. The numbers stay in ``metrics.jsonl``; this only draws them.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SERIES = ("train_loss", "val_loss", "val_perplexity", "lr", "tokens_per_s")


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Records of a JSON-lines metrics file (``{"step": 10, "train_loss": 3.2, ...}``);
    unreadable lines are skipped with a warning.

    A rank killed mid-write leaves a torn last line, and the curve of everything before
    it is exactly what one wants to look at after such a crash.
    """
    records, bad = [], 0
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad += 1
    if bad:
        log.warning("%s: skipped %d unreadable line(s)", path, bad)
    return records


def series(records: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Per metric, (step, value) sorted by step, the last value of a step winning.

    A job resumed from an older checkpoint logs the steps after that checkpoint again;
    the second pass is what the final model saw. Keeping the last value per *metric*
    (not per record) matters because train and validation values of one step arrive as
    separate records. Non-finite values (a diverged loss) cannot be drawn and are left out.
    """
    out: dict[str, dict[int, float]] = {name: {} for name in SERIES}
    for record in records:
        step = record.get("step")
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            continue
        for name in SERIES:
            value = record.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[name][int(step)] = float(value)
    return {name: sorted(points.items()) for name, points in out.items()}


def loss_curve(metrics: list[dict[str, float]] | str | Path, out_png: Path, title: str) -> Path:
    """Draw train loss (line) and validation loss (markers) against step, learning rate on a
    second axis, into ``out_png``; returns its path.

    ``metrics`` is a list of records or a ``metrics.jsonl`` path, each record holding
    ``step`` and some of ``train_loss``, ``val_loss``, ``val_perplexity``, ``lr``,
    ``tokens_per_s``. With nothing to draw the picture says so instead of failing: a plot
    must never fail the training job it describes.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    records = read_metrics(metrics) if isinstance(metrics, (str, Path)) else list(metrics)
    data = series(records)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)

    fig, ax = plt.subplots(figsize=(9, 5))
    handles = []
    if data["train_loss"]:
        steps, values = zip(*data["train_loss"], strict=True)
        handles += ax.plot(steps, values, color="#4c72b0", linewidth=1.6, label="train loss")
    if data["val_loss"]:
        steps, values = zip(*data["val_loss"], strict=True)
        handles += ax.plot(steps, values, color="#dd8452", marker="o", markersize=6, linestyle=":",
                           linewidth=1, label="validation loss")
        last_step, last = data["val_loss"][-1]
        ppl = dict(data["val_perplexity"]).get(last_step, math.exp(last) if last < 50 else None)
        note = f"{last:.3f}" + (f" (ppl {ppl:.1f})" if ppl is not None else "")
        ax.annotate(note, (last_step, last), textcoords="offset points", xytext=(-6, 8), ha="right",
                    color="#dd8452", fontsize=9, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats / token)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)

    if data["lr"]:
        lr_ax = ax.twinx()
        steps, values = zip(*data["lr"], strict=True)
        handles += lr_ax.plot(steps, values, color="#55a868", linewidth=1, alpha=0.7, label="learning rate")
        lr_ax.set_ylabel("learning rate", color="#55a868")
        lr_ax.tick_params(axis="y", colors="#55a868")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        lr_ax.set_ylim(bottom=0)

    if handles:
        ax.legend(handles=handles, loc="upper right", frameon=False)
    else:
        log.warning("no loss values to draw for %r", title)
        ax.text(0.5, 0.5, "no loss values logged", transform=ax.transAxes, ha="center", va="center",
                color="grey", fontsize=14)
    subtitle = []
    if data["tokens_per_s"]:
        subtitle.append(f"median {statistics.median(v for _, v in data['tokens_per_s']):,.0f} tokens/s")
    if data["train_loss"]:
        subtitle.append(f"{data['train_loss'][-1][0]} steps")
    ax.set_title(title + (f"\n{' · '.join(subtitle)}" if subtitle else ""), fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
