"""The LLMOps page as the plugin renders it (``llmops_airflow.ui.app.render_page``), the charts, and
the rules the routes apply without needing Airflow: the origin rule of the actions and the links."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from llmops.records.ui import LossCurve, SignalPoint, SignalSeries, Summary
from llmops.ui import charts
from llmops.ui.summary import build_summary
from llmops_airflow.ui.app import normalise_origin, origin_refusal, render_page, run_url, ui_base
from tests.ui.conftest import DATA_RUN, NOW, RETRAIN_RUN, TRAIN_RUN, Home, config


class _Parsed(HTMLParser):
    """The page's links, images, buttons and text, and whether its tags nest."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.buttons: dict[str, bool] = {}
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag == "button":
            self.buttons[a.get("id") or ""] = "disabled" in a
        if tag not in ("meta", "img", "input", "br", "path", "use", "rect", "line", "polyline", "circle", "stop"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Parsed:
    parsed = _Parsed()
    parsed.feed(html)
    return parsed


@pytest.fixture(scope="module")
def summary(closed_loop: Home) -> Summary:
    return build_summary(closed_loop.cfg, now=NOW, airflow_runs={"llmops_data": [DATA_RUN],
                                                                 "llmops_train": [TRAIN_RUN]})


def test_the_page_shows_every_section_with_its_pictures_and_links(summary: Summary, closed_loop: Home) -> None:
    html = render_page(summary, base="", mount="/llmops", user="op", can_act={"retrain": True, "rollback": True})
    page = parse(html)
    text = " ".join(" ".join(page.text).split())

    for heading in ("Data runs", "Training runs", "Registry and gate", "Deployment", "Drift and retraining"):
        assert heading in text
    assert html.count("<svg") == 2 + 1 + 3  # the loss curves of the 2 jobs with metrics, the traffic, 3 signals
    assert "Triton is not answering" in text and "champion v2" in text
    assert "bits_per_byte 2.38 (floor: <= 2.2)" in text  # the failed gate check, with its numbers
    assert "PERSON 3, EMAIL_ADDRESS 2" in text and "http_404 2" in text and "length 1" in text
    assert f"/dags/llmops_retrain/runs/{RETRAIN_RUN.replace(':', '%3A').replace('+', '%2B')}" in page.links
    assert any(link.startswith("/dags/llmops_train/runs/asset_triggered__2027-01-15T06%3A05") for link in page.links)
    assert f"/llmops/reports/evaluation/{closed_loop.failed_evaluation}/report.html" in page.links
    assert any(re.fullmatch(r"http://127\.0\.0\.1:\d+/#/models/llmops/versions/2", link) for link in page.links)
    assert page.images == [f"/llmops/reports/llmops_data/{DATA_RUN.replace(':', '_').replace('+', '_')}/funnel.png"]
    assert page.buttons == {"retrain": False, "rollback": False}
    assert '<option value="1">v1</option>' in html  # roll back to v1 (passed the gate, not the champion)
    assert not page.stack, page.stack  # every tag closed


def test_a_viewer_sees_the_page_with_the_actions_disabled(summary: Summary) -> None:
    page = parse(render_page(summary, user="viewer", can_act={"retrain": False, "rollback": False}))
    assert page.buttons == {"retrain": True, "rollback": True}
    assert "your role may read this page, not act on it" in " ".join(page.text)


def test_the_empty_page_says_what_is_missing(tmp_path: Path) -> None:
    html = render_page(build_summary(config(tmp_path / "home")), user="admin")
    text = " ".join(" ".join(parse(html).text).split())
    for words in ("no data card yet", "no training run yet", "nothing evaluated or registered yet",
                  "Triton is not answering", "no drift check yet", "none yet"):
        assert words in text
    assert "<svg" not in html


def test_a_chart_that_fails_says_so_in_its_place() -> None:
    from llmops_airflow.ui.app import _chart

    def broken(*args: object) -> str:
        raise ValueError("no finite values")

    assert str(_chart(broken)()) == '<p class="note error">chart failed: ValueError: no finite values</p>'


def test_under_a_base_path_links_keep_it() -> None:
    assert ui_base("/airflow/llmops") == "/airflow" and ui_base("/llmops") == "" and ui_base("") == ""
    assert run_url("/airflow", "llmops_retrain", "manual__2027-01-15T07:30:00+00:00") == \
        "/airflow/dags/llmops_retrain/runs/manual__2027-01-15T07%3A30%3A00%2B00%3A00"


def test_charts_are_inline_svg_with_their_text() -> None:
    svg = charts.loss_chart(LossCurve(train=[(0, 8.0), (10, 6.0)], validation=[(0, 8.1), (10, 6.5)]), "pretrain tiny")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>") and "pretrain tiny" in svg
    series = SignalSeries(name="token_js", kind="data", points=[
        SignalPoint(time=NOW - 600, value=0.3, threshold=0.45), SignalPoint(time=NOW, value=0.5, threshold=0.45,
                                                                            drifted=True, drift_decided=True)])
    svg = charts.signal_chart(series, [NOW - 300])
    assert "token_js (data)" in svg and len(svg) < 60_000
    empty = SignalSeries(name="bits_per_byte_ratio", kind="quality",
                         points=[SignalPoint(time=NOW, value=None, threshold=1.2)])
    assert "no value yet" in charts.signal_chart(empty)


# ---- the origin rule of the actions ------------------------------------------------------------

HERE = "http://127.0.0.1:8080"


@pytest.mark.parametrize(("authorization", "origin", "allowed"), [
    ("Bearer eyJ.token", None, True),  # a token: another site cannot attach it
    ("bearer eyJ.token", "https://evil.example", True),
    (None, HERE, True),  # the UI's own page, with the cookie
    (None, "http://127.0.0.1:8080/", True),
    (None, "HTTP://127.0.0.1:8080", True),
    (None, None, False),  # a cookie and no Origin: refused
    (None, "", False),
    (None, "null", False),  # a sandboxed or file:// page
    (None, "https://evil.example", False),
    (None, "http://127.0.0.1:8081", False),  # another port is another origin
    (None, "https://127.0.0.1:8080", False),  # another scheme too
    (None, "http://localhost:8080", False),
    ("Basic YWRtaW46YWRtaW4=", "https://evil.example", False),  # not a token: the cookie decided
])
def test_an_action_needs_a_bearer_token_or_its_own_origin(authorization: str | None, origin: str | None,
                                                          allowed: bool) -> None:
    reason = origin_refusal(authorization=authorization, origin=origin, request_origin=HERE)
    assert (reason is None) == allowed, reason
    if not allowed:
        assert reason is not None and reason.startswith("refused:")
        assert ("no Origin header" in reason) == (not origin)


def test_the_configured_base_url_is_an_origin_too() -> None:
    behind_a_proxy = origin_refusal(authorization=None, origin="https://airflow.example.com",
                                    request_origin="http://10.0.0.5:8080",
                                    trusted=["https://airflow.example.com/airflow"])
    assert behind_a_proxy is None
    assert normalise_origin("https://Airflow.Example.com") == "https://airflow.example.com:443"
    assert normalise_origin("http://h:80") == normalise_origin("http://h") == "http://h:80"
    assert normalise_origin("ftp://h") is None and normalise_origin("h:8080") is None
