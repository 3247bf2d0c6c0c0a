import json

import matplotlib.image

from llmops.training.plots import loss_curve, read_metrics, series


def _records(steps=60, restart_at=None):
    out = []
    for step in range(1, steps + 1):
        out.append({"step": step, "train_loss": 8.0 - step * 0.05, "lr": 1e-3 * min(1, step / 10),
                    "tokens_per_s": 900.0})
        if step % 20 == 0:
            out.append({"step": step, "val_loss": 8.1 - step * 0.05, "val_perplexity": 2.0})
    return out


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_from_a_jsonl_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records()) + '{"step": 61, "train_lo')  # torn line
    png = loss_curve(path, tmp_path / "plots" / "loss_curve.png", title="pretrain tiny")
    assert png == tmp_path / "plots" / "loss_curve.png" and _is_png(png)
    assert png.stat().st_size > 20_000  # axes, two series, labels: not an empty canvas
    assert matplotlib.image.imread(png).shape[:2] == (500, 900)
    assert len(read_metrics(path)) == len(_records())


def test_resumed_run_keeps_the_last_value_of_each_step_per_metric():
    first = [{"step": s, "train_loss": 5.0, "lr": 0.1} for s in range(1, 31)]
    first.append({"step": 20, "val_loss": 9.0})
    resumed = [{"step": s, "train_loss": 4.0, "lr": 0.2} for s in range(21, 41)]  # from checkpoint 20
    resumed.append({"step": 40, "val_loss": float("nan")})  # not drawable, ignored
    data = series(first + resumed)
    assert [s for s, _ in data["train_loss"]] == list(range(1, 41))  # each step once, sorted
    assert dict(data["train_loss"])[25] == 4.0 and dict(data["train_loss"])[20] == 5.0
    # the val_loss of step 20 survives a later record of step 20 that has no val_loss
    assert data["val_loss"] == [(20, 9.0)]


def test_duplicate_steps_and_missing_series_still_plot(tmp_path):
    records = _records(30) + [{"step": s, "train_loss": 1.0} for s in range(10, 31)]
    assert _is_png(loss_curve(records, tmp_path / "a.png", title="resumed"))
    assert _is_png(loss_curve([{"step": 1, "train_loss": 3.0}], tmp_path / "b.png", title="no lr, no val"))
    empty = loss_curve([], tmp_path / "c.png", title="nothing logged")
    assert _is_png(empty)
