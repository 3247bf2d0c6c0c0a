"""The evaluation report: pictures are PNGs, the documents name every metric and check, model text is escaped."""

from llmops.evaluation.gate import GateThresholds, run_gate
from llmops.evaluation.report import metric_bars, write_report
from llmops.records.evaluation import EvalMetrics, EvaluationReport
from llmops.training.plots import loss_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CHALLENGER = EvalMetrics(eval_data_hash="abc", bits_per_byte=1.21, perplexity=310.5, bleu=0.08, rouge1=0.31,
                         rouge2=0.12, rougeL=0.27, exact_match=0.05, distinct_1=0.41, distinct_2=0.73,
                         pii_leak_rate=0.0, behaviour_pass_rate=0.8, tokens_per_s=1523.0, latency_s_p50=0.21)
CHAMPION = CHALLENGER.model_copy(update={"rougeL": 0.35, "perplexity": 290.0, "tokens_per_s": 1400.0})


def metrics(**values) -> EvalMetrics:
    return EvalMetrics(eval_data_hash="x", **values)


def _gate():
    thresholds = GateThresholds.model_validate({
        "floors": {"rougeL": {"min": 0.1}, "pii_leak_rate": {"max": 0.0}},
        "regression": {"rougeL": {"max_regression": 0.02}},
    })
    return run_gate(CHALLENGER, CHAMPION, thresholds)


def test_metric_bars_is_a_png(tmp_path):
    out = metric_bars(CHALLENGER, CHAMPION, tmp_path / "sub" / "bars.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    # only the challenger, and nothing at all, still draw
    assert metric_bars(metrics(rougeL=0.2), None, tmp_path / "one.png").read_bytes()[:8] == PNG_MAGIC
    assert metric_bars(metrics(), None, tmp_path / "none.png").read_bytes()[:8] == PNG_MAGIC


def test_full_report(tmp_path):
    gate = _gate()
    assert not gate.passed
    curve = loss_curve([{"step": 1, "train_loss": 3.0}, {"step": 2, "train_loss": 2.5, "val_loss": 2.7}],
                       tmp_path / "curve.png", "run")
    samples = [{"question": "What is 2+2?", "reference": "4", "completion": "<script>alert('x')</script> 4"},
               {"question": "long", "reference": "r", "completion": "y" * 1000}]
    behaviour = {"behaviour_pass_rate": 0.5, "passed": 1, "total": 2,
                 "cases": [{"name": "greets", "passed": True, "failures": []},
                           {"name": "stops", "passed": False, "failures": ["did not stop"]}]}
    leakage = {"pii_leak_rate": 0.25, "canaries": 4, "leaked": [{"type": "email", "prefix": "jane.doe@exa"}],
               "by_type": {"email": {"canaries": 2, "leaked": 1, "rate": 0.5},
                           "phone": {"canaries": 2, "leaked": 0, "rate": 0.0}}}
    paths = write_report(tmp_path / "report", model="tiny-<b>lm</b>", metrics=CHALLENGER, champion=CHAMPION,
                         gate=gate, loss_curve=curve, samples=samples, behaviour=behaviour, leakage=leakage)

    assert set(paths) == {"metrics", "metric_bars", "loss_curve", "report_md", "report_html"}
    for name in ("metric_bars", "loss_curve"):
        assert paths[name].parent == tmp_path / "report"
        assert paths[name].read_bytes()[:8] == PNG_MAGIC

    md = paths["report_md"].read_text()
    for metric in CHALLENGER.numbers():
        assert metric in md
    assert "FAILED" in md and "regression.rougeL" in md
    assert "did not stop" in md and "email" in md
    assert "jane.doe" not in md  # leaked values are reported by type and count only
    assert "y" * 400 not in md  # long cells are cut
    assert "<script>" not in md  # markdown renderers pass HTML through

    page = paths["report_html"].read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>lm</b>" not in page
    assert 'src="metric_bars.png"' in page and 'src="loss_curve.png"' in page
    assert "regression.rougeL" in page and "jane.doe" not in page

    assert EvaluationReport.read(paths["metrics"]) == EvaluationReport(model="tiny-<b>lm</b>", metrics=CHALLENGER,
                                                                        champion=CHAMPION, gate=gate)


def test_report_without_champion_gate_or_curve(tmp_path):
    measured = metrics(bits_per_byte=1.5, rougeL=0.2)
    paths = write_report(tmp_path, model="m", metrics=measured)
    assert set(paths) == {"metrics", "metric_bars", "report_md", "report_html"}
    assert paths["metric_bars"].read_bytes()[:8] == PNG_MAGIC
    md = paths["report_md"].read_text()
    assert "bits_per_byte" in md and "rougeL" in md and "No gate was run" in md
    assert "loss_curve.png" not in md and "loss_curve.png" not in paths["report_html"].read_text()
    assert EvaluationReport.read(tmp_path) == EvaluationReport(model="m", metrics=measured)
    # a loss curve path that does not exist is left out, not an error
    assert "loss_curve" not in write_report(tmp_path / "again", model="m", metrics=measured,
                                            loss_curve=tmp_path / "missing.png")
