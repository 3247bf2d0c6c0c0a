"""The inference log: the served model writes one record per request, off the request path,
with counts and measurements only; llmops reads it back forgivingly.

``TritonPythonModel`` runs in-process through the stand-in ``pb_utils`` of
tests/serving/test_backend.py (the real server writes the same file in tests/e2e/test_monitor.py).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

from llmops.config import load_config
from llmops.monitoring import log as inference_log
from tests.serving.test_backend import QUESTIONS, _Request, backend, gen, random_model, text  # noqa: F401


@pytest.fixture
def served(random_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:  # noqa: F811
    """A ``TritonPythonModel`` built as version 3 of ``llmops`` whose version directory holds a
    vocabulary of the tokenizer's first 64 ids, logging to ``tmp_path/log``."""
    import types

    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    from llmops.records.serving import RegistryFacts
    from llmops.serving.repository import build_version, render_config
    from tests.serving.test_backend import _Response, _Tensor, _TritonError

    fake = types.SimpleNamespace(Tensor=_Tensor, InferenceResponse=_Response, TritonError=_TritonError,
                                 get_input_tensor_by_name=lambda req, name: req.inputs.get(name))
    monkeypatch.setattr(backend, "pb_utils", fake)
    cfg = load_config(environ={}, overrides={"home": str(tmp_path), "monitor": {"log_dir": str(tmp_path / "log"),
                                                                                 "top_k": 64}})
    version_dir = build_version(cfg, hf_dir=random_model, name="llmops", version=3,
                                info=RegistryFacts(version="7"), kind="cpu")
    inference_log.write_vocabulary(version_dir, range(64))
    config = json_format.MessageToJson(text_format.Parse(render_config(cfg, "llmops", kind="cpu"),
                                                         model_config_pb2.ModelConfig()),
                                       preserving_proto_field_name=True)
    model = backend.TritonPythonModel()
    model.initialize({"model_config": config, "model_instance_kind": "CPU", "model_instance_device_id": "0",
                      "model_repository": str(version_dir.parent), "model_version": "3", "model_name": "llmops",
                      "model_instance_name": "llmops_0_0"})
    model.cfg = cfg
    yield model
    model.finalize()


def read(model: Any, timeout_s: float = 5.0, expect: int = 1) -> list[Any]:
    """Records on disk, waiting (as a drift check would) until ``expect`` arrived."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = inference_log.read_log(inference_log.log_dir(model.cfg), "llmops").records
        if len(records) >= expect or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def test_each_request_gets_one_record_with_counts_and_no_text(served: Any, gen: Any) -> None:  # noqa: F811
    started = time.monotonic()
    responses = served.execute([_Request(text_input=text(QUESTIONS[0])), _Request(text_input=text("")),
                                _Request(text_input=text(QUESTIONS[2]))])
    records = read(served, expect=3)
    assert time.monotonic() - started < 5.0  # readable by a check within 5 s of the request
    assert [r.finish_reason for r in records].count("refused") == 1 and len(records) == 3
    answered = [r for r in records if r.finish_reason in inference_log.ANSWERED]
    assert len(answered) == 2 and all(r.model == "llmops" and r.version == "7" for r in answered)
    first = next(r for r in answered if r.question_bytes == len(QUESTIONS[0].encode()))
    assert first.prompt_tokens == int(responses[0].outputs["prompt_tokens"][0, 0])
    assert first.completion_tokens == int(responses[0].outputs["completion_tokens"][0, 0])
    assert first.batch_size == 2 and first.compute_ms > 0
    # The question's tokens, not the chat template's: the counts add up to the question's tokens.
    assert sum(first.top_token_counts.values()) + first.other_tokens == first.question_tokens
    assert 0 < first.question_tokens < first.prompt_tokens
    assert all(0 <= int(t) < 64 for t in first.top_token_counts)
    assert first.bytes_per_token == pytest.approx(first.question_bytes / first.question_tokens)
    assert first.language and first.bits_per_byte > 0
    assert first.bits_per_byte == pytest.approx(first.nll / math.log(2) / first.question_bytes)

    # No text on disk: no word of any question appears in the file.
    raw = "".join(p.read_text() for p in (Path(served.cfg.monitor.log_dir) / "llmops").glob("*.jsonl"))
    for word in ("statement", "Explain", "context", "exception"):
        assert word not in raw


def test_the_logged_likelihood_is_the_one_the_reference_scoring_measures(served: Any, gen: Any) -> None:  # noqa: F811
    """Live requests (measured from generation's prefill, in a padded batch) and reference
    questions (scored without generating) must be measured alike, or every check drifts."""
    served.execute([_Request(text_input=text(q)) for q in QUESTIONS[:4]])
    records = {r.question_bytes: r for r in read(served, expect=4)}
    scored = gen.score_questions([backend.GenerationRequest(text=q) for q in QUESTIONS[:4]])
    for question, (row, nll) in zip(QUESTIONS[:4], scored, strict=True):
        record = records[len(question.encode())]
        assert record.question_tokens == len(row.question_ids)
        assert record.nll == pytest.approx(nll, rel=1e-4)


def test_a_full_queue_drops_records_counts_them_and_never_fails_a_request(served: Any) -> None:
    writer = served.log_writer
    writer.close()  # the thread is gone: nothing drains the queue any more
    full = inference_log.InferenceLogWriter(Path(served.cfg.monitor.log_dir), model="llmops", instance="tiny",
                                            queue_size=2)
    full.close()
    served.log_writer = full
    responses = served.execute([_Request(text_input=text(q)) for q in QUESTIONS[:5]])
    assert all(r.error is None for r in responses)
    assert full.dropped_total == 3 and full.dropped == 3


def test_partial_and_unreadable_files_are_skipped_not_fatal(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    writer = inference_log.InferenceLogWriter(directory, model="m", instance="a")
    now = time.time()
    for k in range(3):
        writer.submit(inference_log.PendingRecord(inference_log.InferenceRecord(
            time=now + k, model="m", version="1", instance="a", finish_reason="stop", compute_ms=1.0, batch_size=1,
            dropped_before=0)))
    writer.close()
    (path,) = (directory / "m").glob("*.jsonl")
    with open(path, "a") as fh:
        fh.write('{"not": "a record"}\n{"time": 1')  # a bad line, then a line still being written
    (directory / "m" / "2020-01-01T00_b.jsonl").write_bytes(b"\xff\xfe not utf-8\n")
    got = inference_log.read_log(directory, "m")
    assert len(got.records) == 3 and got.stats.bad_lines == 1
    assert len(got.stats.skipped_files) == 1 and "2020-01-01T00_b" in got.stats.skipped_files[0]
    assert [r.time for r in inference_log.read_log(directory, "m", since=now + 1).records] == [now + 1, now + 2]


def test_retention_deletes_old_files_when_a_writer_starts(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    (directory / "m").mkdir(parents=True)
    old, fresh = directory / "m" / "2020-01-01T00_a.jsonl", directory / "m" / "2099-01-01T00_a.jsonl"
    old.write_text("")
    fresh.write_text("")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    inference_log.InferenceLogWriter(directory, model="m", instance="a", retention_s=3600).close()
    assert not old.exists() and fresh.exists()


def test_a_config_without_the_log_writes_none(random_model: Path, tmp_path: Path) -> None:  # noqa: F811
    from llmops.serving.repository import render_config

    on = load_config(environ={}, overrides={"home": str(tmp_path)})
    off = load_config(environ={}, overrides={"home": str(tmp_path), "monitor": {"inference_log": False}})
    assert f'"{inference_log.log_dir(on)}"' in render_config(on, "llmops")
    assert "inference_log_dir" not in render_config(off, "llmops")
    assert json.dumps(on.monitor.model_dump(mode="json"))


def test_a_question_that_also_occurs_in_the_template_is_found_where_the_template_puts_it(gen: Any) -> None:  # noqa: F811
    for question in ("user", "assistant", "a", "What is yield?"):
        row = gen.prepare(backend.GenerationRequest(text=question))
        assert row.question_ids, question
        assert gen.tokenizer.decode(row.question_ids) == question
