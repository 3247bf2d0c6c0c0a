"""The deploy's smoke-test verdict on answers a staged version returned (failure injection:
the answers are set here, the rules are the deploy's own)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmops.records.serving import Answer
from llmops.serving import deploy
from llmops.serving.deploy import SMOKE_QUESTIONS, DeployFailed, smoke_test

SERVER = SimpleNamespace(http_address="127.0.0.1:1", grpc_address="127.0.0.1:2")


def _answers(monkeypatch: pytest.MonkeyPatch, texts: dict[str, str], version: str = "3") -> None:
    def generate(question: str, **_: object) -> Answer:
        return Answer(text=texts[question], model_version=version, prompt_tokens=9, completion_tokens=4)
    monkeypatch.setattr(deploy, "generate", generate)


def test_one_answer_that_ends_at_once_still_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    _answers(monkeypatch, {SMOKE_QUESTIONS[0]: "", SMOKE_QUESTIONS[1]: "A loop over an iterable."})
    rows = smoke_test(SERVER, "llmops_staging", 3)
    assert [(r.protocol, r.text) for r in rows] == [("http", ""), ("http", "A loop over an iterable."),
                                                    ("grpc", ""), ("grpc", "A loop over an iterable.")]


def test_a_model_with_no_text_in_any_answer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _answers(monkeypatch, dict.fromkeys(SMOKE_QUESTIONS, " "))
    with pytest.raises(DeployFailed, match="every answer was empty"):
        smoke_test(SERVER, "llmops_staging", 3)


def test_an_answer_from_another_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _answers(monkeypatch, dict.fromkeys(SMOKE_QUESTIONS, "text"), version="2")
    with pytest.raises(DeployFailed, match="answered as version '2', expected 3"):
        smoke_test(SERVER, "llmops_staging", 3)
