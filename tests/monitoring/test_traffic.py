"""Synthetic traffic: the reference and the shifted questions, and sending them.

The generators are checked for what the drift demo relies on: the same list for a seed,
questions a user could send (not empty, not long), reference questions that are exactly
the Q&A stage's questions about the demo site's pages, and a shift that changes the
vocabulary. ``send`` is checked against servers that are down (failures are counted, never
raised) and, in one test (about 15 s), against a real Triton server whose inference log
must hold one record per answered question.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from pydoc_data.topics import topics

import pytest

from llmops.data.qa import questions_for
from llmops.demo_site.build import parse_topic
from llmops.monitoring.traffic import MAX_ERRORS, TASKS, reference_questions, send, shifted_questions
from llmops.stack import free_ports

GENERATORS = [reference_questions, shifted_questions]
SAMPLE = 2000  # draws enough to meet nearly every question of either pool


def words(questions: list[str]) -> set[str]:
    return {w for q in questions for w in re.findall(r"[a-z0-9_]+", q.lower())}


def closed_port() -> str:
    (port,) = free_ports(1)
    return f"127.0.0.1:{port}"


@pytest.mark.parametrize("generate", GENERATORS)
def test_same_seed_gives_the_same_questions_and_another_seed_others(generate) -> None:
    assert generate(300, seed=7) == generate(300, seed=7)
    assert generate(300, seed=7) != generate(300, seed=8)
    assert generate(50) == generate(50, seed=0)


@pytest.mark.parametrize("generate", GENERATORS)
@pytest.mark.parametrize("n", [0, 1, 37, 1000])
def test_gives_exactly_n_questions_drawn_with_replacement(generate, n: int) -> None:
    questions = generate(n, seed=3)

    assert len(questions) == n
    if n == 1000:  # more than the reference pool holds: with replacement, repeats
        assert len(set(questions)) < n


@pytest.mark.parametrize("generate", GENERATORS)
@pytest.mark.parametrize("n", [-1, 2.5, True])
def test_a_bad_count_is_refused(generate, n) -> None:
    with pytest.raises(ValueError, match="number of questions"):
        generate(n)


@pytest.mark.parametrize("generate", GENERATORS)
def test_questions_are_short_non_empty_questions(generate) -> None:
    for question in set(generate(SAMPLE, seed=1)):
        assert question.strip() == question and question, repr(question)
        assert len(question) < 200, question
        assert question.endswith(("?", ".")), question


def test_reference_questions_are_the_qa_stage_questions_about_the_demo_site_pages() -> None:
    expected = {q for slug in topics for q in questions_for(parse_topic(topics[slug])[0])}

    drawn = set(reference_questions(SAMPLE, seed=2))

    assert drawn <= expected
    assert len(drawn) > 0.9 * len(expected)  # the draw covers the pages, not a few of them
    assert "What does the assert statement do?" in expected


def test_shifted_questions_ask_about_standard_library_modules_in_several_phrasings() -> None:
    modules = {module for module, _ in TASKS}
    questions = shifted_questions(SAMPLE, seed=4)

    for question in questions:
        assert any(re.search(rf"\b{re.escape(module)}\b", question) for module in modules), question
    assert len({" ".join(q.split()[:2]) for q in questions}) >= 6
    assert any(q.startswith("How do I ") for q in questions)
    assert len(words(questions) & modules) >= 0.8 * len(modules)


def test_the_shift_changes_the_vocabulary() -> None:
    reference, shifted = words(reference_questions(500, seed=5)), words(shifted_questions(500, seed=5))

    jaccard = len(reference & shifted) / len(reference | shifted)

    assert jaccard < 0.3, sorted(reference & shifted)
    assert len(shifted - reference) > 2 * len(reference & shifted)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_server_that_is_down_counts_every_question_as_failed(protocol) -> None:
    questions = reference_questions(7)

    started = time.perf_counter()
    result = send(questions, url=closed_port(), protocol=protocol, concurrency=3, timeout_s=5)

    assert (result.sent, result.answered, result.failed) == (7, 0, 7)
    assert 1 <= len(result.errors) <= MAX_ERRORS
    assert any("refused" in e.lower() or "unavailable" in e.lower() for e in result.errors), result.errors
    assert result.latencies_ms == [] and result.p50_ms is None
    assert time.perf_counter() - started < 5


def test_an_unreachable_address_fails_its_requests_without_raising() -> None:
    result = send(["What is x?"] * 4, url="no-such-host.invalid:1", protocol="http", concurrency=2, timeout_s=5)

    assert (result.sent, result.answered, result.failed) == (4, 0, 4)
    assert result.errors


def test_no_questions_send_nothing() -> None:
    result = send([], url=closed_port())

    assert (result.sent, result.answered, result.failed, result.errors) == (0, 0, 0, [])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"protocol": "ftp"}, "protocol"),
    ({"concurrency": 0}, "concurrency"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"url": ""}, "url"),
])
def test_a_bad_argument_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        send(["What is x?"], **{"url": "127.0.0.1:1", **kwargs})


def test_a_real_server_answers_every_question_and_logs_each_one(tmp_path: Path, data_home: Path) -> None:
    from llmops.config import with_overrides
    from llmops.monitoring.log import read_log
    from llmops.serving.repository import build_version
    from llmops.serving.server import TritonServer
    from tests.serving.conftest import serving_config
    from tests.serving.test_backend import build_random_model
    from tests.training.fixtures import paths

    model_dir = build_random_model(paths(data_home)["tokenizer"], tmp_path / "model")
    log_dir = tmp_path / "inference_log"
    cfg = with_overrides(serving_config(tmp_path / "home"), {
        "serving": {"device": "cpu", "max_tokens_limit": 64}, "monitor": {"log_dir": str(log_dir)}})
    build_version(cfg, hf_dir=model_dir, name="llmops", version=1)
    server = TritonServer(cfg)
    server.start()
    try:
        reference = send(reference_questions(12, seed=9), url=server.grpc_address, concurrency=3)
        shifted = send(shifted_questions(6, seed=9), url=server.http_address, protocol="http", max_tokens=4)
        refused = send(["   "], url=server.grpc_address)
    finally:
        server.stop(timeout=30)  # finalize() writes what the log still has queued

    assert (reference.sent, reference.answered, reference.failed) == (12, 12, 0), reference.errors
    assert (shifted.sent, shifted.answered) == (6, 6), shifted.errors
    assert len(reference.latencies_ms) == 12 and all(ms > 0 for ms in reference.latencies_ms)
    assert (refused.answered, refused.failed) == (0, 1) and "empty" in refused.errors[0]
    records = read_log(log_dir, "llmops").records
    assert sorted(r.finish_reason for r in records).count("refused") == 1
    answered = [r for r in records if r.finish_reason != "refused"]
    assert len(answered) == 18
    assert sorted(r.completion_tokens for r in answered)[-1] <= 8
    assert all(r.question_tokens > 0 and r.nll > 0 for r in answered)
