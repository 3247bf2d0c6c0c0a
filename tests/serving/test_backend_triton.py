"""The python-backend model in a real Triton server: HTTP, gRPC, dynamic batching, per-request errors.

The ``triton`` fixture (tests/serving/conftest.py) is a running embedded server with an
empty repository; a version is built into it with ``build_version`` and called with
plain ``tritonclient`` clients, as any user would.
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmops.config import LlmopsConfig, with_overrides
from llmops.records.serving import RegistryFacts
from llmops.serving.repository import build_version, load_backend, repository_path
from llmops.serving.server import TritonServer
from tests.serving.test_backend import QUESTIONS, build_random_model

backend = load_backend()
Req = backend.GenerationRequest
NAME = "llmops_test"
INFO = RegistryFacts(version="5", model_uri="models:/llmops/5", data_card_hash="feedbeef", gate_result="passed")


@pytest.fixture(scope="module")
def served(triton: TritonServer, data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A random tiny model built as version 2 of ``NAME`` and loaded; plus the same model in-process."""
    from tests.training.fixtures import paths

    model_dir = build_random_model(paths(data_home)["tokenizer"], tmp_path_factory.mktemp("served_model"))
    # A long queue delay: requests sent together reliably meet in one batch even on a busy machine.
    cfg: LlmopsConfig = with_overrides(triton.cfg, {"serving": {
        "device": "cpu", "max_queue_delay_us": 300_000, "default_max_tokens": 10, "max_tokens_limit": 64}})
    assert repository_path(cfg) == triton.repository
    build_version(cfg, hf_dir=model_dir, name=NAME, version=2, info=INFO)
    triton.load_model(NAME)
    local = backend.TextGenerator.from_pretrained(model_dir, default_max_tokens=10, max_tokens_limit=64)
    return {"cfg": cfg, "local": local}


def alone(served: dict[str, Any], request: Any) -> Any:
    (result,) = served["local"].generate([request])
    assert not isinstance(result, Exception), result
    return result


def http_inputs(text: str, **scalars: Any) -> list[Any]:
    import tritonclient.http as httpclient

    return _inputs(httpclient.InferInput, text, scalars)


def grpc_inputs(text: str, **scalars: Any) -> list[Any]:
    import tritonclient.grpc as grpcclient

    return _inputs(grpcclient.InferInput, text, scalars)


_DTYPES = {"max_tokens": ("INT32", np.int32), "temperature": ("FP32", np.float32), "top_p": ("FP32", np.float32),
           "seed": ("INT64", np.int64)}


def _inputs(make: Any, text: str, scalars: dict[str, Any]) -> list[Any]:
    first = make("text_input", [1, 1], "BYTES")
    first.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
    inputs = [first]
    for name, value in scalars.items():
        triton_type, np_type = _DTYPES[name]
        tensor = make(name, [1, 1], triton_type)
        tensor.set_data_from_numpy(np.array([[value]], dtype=np_type))
        inputs.append(tensor)
    return inputs


def outputs(result: Any) -> dict[str, Any]:
    values = {name: result.as_numpy(name) for name in ("text_output", "model_version", "prompt_tokens",
                                                       "completion_tokens")}
    assert all(v.shape == (1, 1) for v in values.values())
    return {k: (v[0, 0].decode() if v.dtype == object else int(v[0, 0])) for k, v in values.items()}


def test_http_answers_like_the_model_in_process(triton: TritonServer, served: dict[str, Any]) -> None:
    client = triton.http_client()
    try:
        for question, scalars in [(QUESTIONS[0], {"max_tokens": 12}), (QUESTIONS[2], {}),
                                  (QUESTIONS[1], {"max_tokens": 16, "temperature": 1.2, "top_p": 0.9, "seed": 77})]:
            got = outputs(client.infer(NAME, http_inputs(question, **scalars)))
            expected = alone(served, Req(question, **scalars))
            assert got == {"text_output": expected.text, "model_version": INFO.version,
                           "prompt_tokens": expected.prompt_tokens, "completion_tokens": expected.completion_tokens}
        metadata = client.get_model_metadata(NAME)
        assert metadata["versions"] == ["2"]
    finally:
        client.close()


def test_grpc_answers_like_the_model_in_process(triton: TritonServer, served: dict[str, Any]) -> None:
    client = triton.grpc_client()
    try:
        got = outputs(client.infer(NAME, grpc_inputs(QUESTIONS[3], max_tokens=9)))
        expected = alone(served, Req(QUESTIONS[3], max_tokens=9))
        assert got["text_output"] == expected.text and got["completion_tokens"] == expected.completion_tokens
        assert got["model_version"] == "5"
    finally:
        client.close()


def test_bad_requests_get_client_errors(triton: TritonServer, served: dict[str, Any]) -> None:
    from tritonclient.utils import InferenceServerException

    client = triton.http_client()
    try:
        for text, scalars, message in [("", {}, "empty"), ("hi", {"max_tokens": 65}, "between 1 and 64"),
                                       ("hi", {"temperature": -1.0}, "temperature"),
                                       ("hi", {"top_p": 0.0}, "top_p")]:
            with pytest.raises(InferenceServerException, match=message) as info:
                client.infer(NAME, http_inputs(text, **scalars))
            assert info.value.status() == "400"
        # A wrong dtype never reaches the model: Triton checks it against config.pbtxt.
        import tritonclient.http as httpclient

        wrong = httpclient.InferInput("max_tokens", [1, 1], "FP32")
        wrong.set_data_from_numpy(np.array([[3.0]], dtype=np.float32))
        with pytest.raises(InferenceServerException, match="max_tokens"):
            client.infer(NAME, [*http_inputs("hi")[:1], wrong])
        # The model is still healthy after all that.
        assert outputs(client.infer(NAME, http_inputs("hi", max_tokens=2)))["completion_tokens"] <= 2
    finally:
        client.close()
    # Each refusal is in the server log with its reason.
    log = triton.log_path.read_text(errors="replace")
    assert "request refused: text_input is empty" in log
    assert "request refused: max_tokens must be between 1 and 64" in log


def _counts(triton: TritonServer) -> tuple[int, int, int]:
    """(successful inferences, failed inferences, executions) of NAME so far; statistics need the admin key."""
    client = triton.http_client()
    try:
        stats = client.get_inference_statistics(NAME, headers=triton.admin_headers())["model_stats"][0]
    finally:
        client.close()
    infer = stats["inference_stats"]
    return int(infer["success"]["count"]), int(infer["fail"]["count"]), int(stats["execution_count"])


def test_concurrent_requests_are_batched_and_a_bad_one_fails_alone(triton: TritonServer,
                                                                   served: dict[str, Any]) -> None:
    success0, fail0, executions0 = _counts(triton)
    requests = [(q, {"max_tokens": 6 + i}) for i, q in enumerate(QUESTIONS)]
    requests[3] = (QUESTIONS[3], {"max_tokens": 0})  # invalid: must fail alone, inside the batch
    requests[5] = (QUESTIONS[5], {"max_tokens": 8, "temperature": 0.8, "seed": 3})

    client = triton.grpc_client()
    done: queue.Queue = queue.Queue()
    try:
        # async_infer: all eight are in flight at once from one client, no threads needed.
        for i, (question, scalars) in enumerate(requests):
            client.async_infer(NAME, grpc_inputs(question, **scalars),
                               callback=lambda result, error, i=i: done.put((i, result, error)))
        answers = {i: (result, error) for i, result, error in (done.get(timeout=120) for _ in requests)}
    finally:
        client.close()

    for i, (question, scalars) in enumerate(requests):
        result, error = answers[i]
        if i == 3:
            assert result is None and "max_tokens must be between 1 and 64" in error.message()
            continue
        assert error is None, error
        expected = alone(served, Req(question, **scalars))
        got = outputs(result)
        assert (got["text_output"], got["completion_tokens"]) == (expected.text, expected.completion_tokens)

    success, fail, executions = _counts(triton)
    # Triton counts a response that carries the model's own error as a successful
    # inference (the model executed it), so the bad request shows up among the successes.
    assert (success - success0) + (fail - fail0) == len(requests)
    # Fewer model executions than requests: the dynamic batcher grouped them.
    assert executions - executions0 < len(requests)
