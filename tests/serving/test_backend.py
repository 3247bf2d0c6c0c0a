"""The python-backend model in-process: validation, real batched generation, per-row decoding.

``TextGenerator`` runs without Triton, so batching, stopping and seeding are checked here
on a tiny random model with the pipeline's tokenizer, and the session's exported model is
served once; ``TritonPythonModel.execute`` is driven through a
stand-in for ``triton_python_backend_utils`` (the real server is tests/serving/test_backend_triton.py).
"""

from __future__ import annotations

import copy
import json
import math
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmops.serving.repository import load_backend
from tests.serving.conftest import build_random_model

backend = load_backend()
Req = backend.GenerationRequest

QUESTIONS = [  # different lengths, so the batch is padded differently for each row
    "What is the for statement?",
    "What is a lambda?",
    "Explain how the with statement manages a context and what happens when an exception is raised inside it.",
    "What is yield?",
    "What are comprehensions?",
    "What does the assert statement do when optimisation is enabled?",
    "What is None?",
    "What is slicing?",
]


@pytest.fixture(scope="module")
def random_model(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.training.fixtures import paths

    return build_random_model(paths(data_home)["tokenizer"], tmp_path_factory.mktemp("random_model"))


@pytest.fixture(scope="module")
def gen(random_model: Path) -> Any:
    """A TextGenerator on a tiny random model with the pipeline's tokenizer (fp32, CPU)."""
    import torch

    torch.set_num_threads(2)
    return backend.TextGenerator.from_pretrained(random_model, default_max_tokens=12, max_tokens_limit=64,
                                                 max_prompt_tokens=48)


def alone(gen: Any, request: Any) -> Any:
    (result,) = gen.generate([request])
    assert not isinstance(result, Exception), result
    return result


def test_batched_greedy_equals_each_request_alone(gen: Any) -> None:
    requests = [Req(q, max_tokens=24) for q in QUESTIONS]
    batched = gen.generate(requests)
    for request, result in zip(requests, batched, strict=True):
        single = alone(gen, request)
        assert result.token_ids == single.token_ids, request.text
        assert (result.text, result.prompt_tokens, result.completion_tokens) == \
            (single.text, single.prompt_tokens, single.completion_tokens)
    assert len({r.prompt_tokens for r in batched}) > 3  # the rows really were padded differently


def test_greedy_matches_transformers_generate(gen: Any) -> None:
    """The hand-written loop decodes exactly what the evaluation's ``generate`` call does."""
    from llmops.evaluation.generation import generate_answers

    records = generate_answers(gen.model, gen.tokenizer, QUESTIONS, max_new_tokens=16, batch_size=len(QUESTIONS))
    ours = gen.generate([Req(q, max_tokens=16) for q in QUESTIONS])
    assert [r.text for r in ours] == [r["completion"] for r in records]
    assert [r.completion_tokens for r in ours] == [r["new_tokens"] for r in records]


def test_per_request_max_tokens(gen: Any) -> None:
    limits = [1, 5, 17, 3]
    results = gen.generate([Req(q, max_tokens=m) for q, m in zip(QUESTIONS, limits, strict=False)])
    for limit, result in zip(limits, results, strict=True):
        assert result.completion_tokens == len(result.token_ids) <= limit
        assert result.stopped or result.completion_tokens == limit
    # No max_tokens: the configured default.
    assert alone(gen, Req(QUESTIONS[0])).completion_tokens <= gen.default_max_tokens


def test_stop_token_ends_its_row_only(gen: Any) -> None:
    """A row that emits a stop id ends there (stop id counted, nothing after it); the others go on."""
    free = [alone(gen, Req(q, max_tokens=20)) for q in QUESTIONS]
    # The tiny model barely learnt to emit <|endoftext|>: make a token that the first
    # answer produces early (and some other answer never) a stop id instead.
    stop, unaffected = None, []
    for token in free[0].token_ids[1:10]:
        unaffected = [i for i in range(1, len(free)) if token not in free[i].token_ids]
        if unaffected:
            stop = token
            break
    assert stop is not None, "no token of the first answer suits as a stop id"
    stopping = copy.copy(gen)
    stopping.stop_ids = gen.stop_ids | {stop}
    results = stopping.generate([Req(q, max_tokens=20) for q in QUESTIONS])
    cut = free[0].token_ids.index(stop)
    assert results[0].stopped and results[0].token_ids == free[0].token_ids[:cut + 1]
    assert results[0].completion_tokens == cut + 1 < 20
    assert results[0].text == gen.tokenizer.decode(free[0].token_ids[:cut], skip_special_tokens=True).strip()
    for i in unaffected:
        assert results[i].token_ids == free[i].token_ids
        assert results[i].completion_tokens == free[i].completion_tokens
    # Under the same stop ids, every row matches itself alone.
    for question, result in zip(QUESTIONS, results, strict=True):
        assert result.token_ids == alone(stopping, Req(question, max_tokens=20)).token_ids


def test_seeded_sampling_is_reproducible_whatever_the_batch(gen: Any) -> None:
    target = Req(QUESTIONS[2], max_tokens=24, temperature=1.3, top_p=0.95, seed=1234)
    reference = alone(gen, target)
    companions = [Req(QUESTIONS[0], max_tokens=5), Req(QUESTIONS[1], max_tokens=30, temperature=1.0, seed=7),
                  Req(QUESTIONS[3], max_tokens=24, temperature=0.7, top_p=0.5, seed=99)]
    for batch in ([target, *companions], [*companions, target], [companions[1], target, companions[0]]):
        result = gen.generate(batch)[batch.index(target)]
        assert result.token_ids == reference.token_ids
    others = {tuple(alone(gen, Req(target.text, max_tokens=24, temperature=1.3, top_p=0.95, seed=s)).token_ids)
              for s in (1, 2, 3)}
    assert others != {tuple(reference.token_ids)}, "different seeds should sample different answers"


def test_tiny_top_p_and_zero_temperature_are_greedy(gen: Any) -> None:
    greedy = alone(gen, Req(QUESTIONS[4], max_tokens=16))
    nucleus_of_one = alone(gen, Req(QUESTIONS[4], max_tokens=16, temperature=1.0, top_p=1e-6, seed=5))
    assert nucleus_of_one.token_ids == greedy.token_ids
    # logits / 1e-40 would overflow to NaN probabilities: a vanishing temperature is greedy.
    vanishing = alone(gen, Req(QUESTIONS[4], max_tokens=16, temperature=1e-40, seed=5))
    assert vanishing.token_ids == greedy.token_ids


@pytest.mark.parametrize(("request_", "message"), [
    (Req(""), "empty"),
    (Req("   \n"), "empty"),
    (Req("word " * 60), "limit is 48"),
    (Req("x" * 10_000), "characters"),  # refused before the tokenizer spends time on it
    (Req("hi", max_tokens=0), "between 1 and 64"),
    (Req("hi", max_tokens=65), "between 1 and 64"),
    (Req("hi", max_tokens=2.0), "integer"),  # type: ignore[arg-type]
    (Req("hi", temperature=-0.1), "temperature"),
    (Req("hi", temperature=math.nan), "temperature"),
    (Req("hi", top_p=0.0), "top_p"),
    (Req("hi", top_p=1.5), "top_p"),
    (Req("hi", seed=1.5), "seed"),  # type: ignore[arg-type]
    (Req(b"hi"), "string"),  # type: ignore[arg-type]
])
def test_invalid_requests_fail_alone(gen: Any, request_: Any, message: str) -> None:
    valid = [Req(QUESTIONS[0], max_tokens=8), Req(QUESTIONS[1], max_tokens=8, temperature=1.0, seed=3)]
    results = gen.generate([valid[0], request_, valid[1]])
    assert isinstance(results[1], backend.RequestError) and message in str(results[1])
    assert results[0].token_ids == alone(gen, valid[0]).token_ids
    assert results[2].token_ids == alone(gen, valid[1]).token_ids


class _PoisonedModel:
    """Wraps the model and fails any forward pass over a prompt containing ``poison``."""

    def __init__(self, model: Any, poison: int) -> None:
        self.model, self.poison, self.calls = model, poison, 0

    def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        if (kwargs["input_ids"] == self.poison).any():
            raise RuntimeError("poisoned prompt")
        return self.model(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def test_generation_failure_is_confined_to_its_request(gen: Any) -> None:
    good = [Req(QUESTIONS[0], max_tokens=6), Req(QUESTIONS[1], max_tokens=6)]
    expected = [alone(gen, r).token_ids for r in good]
    bad = Req("What is zebra?", max_tokens=6)
    poison = gen.prepare(bad).ids[-4]  # a prompt token the good prompts lack
    assert all(poison not in gen.prepare(r).ids for r in good)
    broken = copy.copy(gen)
    broken.model = _PoisonedModel(gen.model, poison)
    results = broken.generate([good[0], bad, good[1]])
    assert isinstance(results[1], RuntimeError) and "poisoned" in str(results[1])
    assert [r.token_ids for r in (results[0], results[2])] == expected


def test_parse_inputs_shapes_and_dtypes() -> None:
    rows = backend.parse_inputs({"text_input": np.array([[b"a"], ["b\u00e9".encode()]], dtype=object),
                                 "max_tokens": np.array([[3], [4]], dtype=np.int32),
                                 "temperature": np.array([[0.0], [0.5]], dtype=np.float32),
                                 "seed": np.array([[1], [2]], dtype=np.int64)})
    assert [(r.text, r.max_tokens, r.temperature, r.seed, r.top_p) for r in rows] == \
        [("a", 3, 0.0, 1, 1.0), ("b\u00e9", 4, 0.5, 2, 1.0)]
    assert isinstance(rows[0].max_tokens, int) and isinstance(rows[1].seed, int)
    bad = [
        ({}, "required"),
        ({"text_input": np.array([[1]], dtype=np.int32)}, "BYTES"),
        ({"text_input": np.array([[b"\xff"]], dtype=object)}, "UTF-8"),
        ({"text_input": np.array([[b"a"]], dtype=object), "max_tokens": np.array([[1.0]], dtype=np.float32)}, "dtype"),
        ({"text_input": np.array([[b"a"]], dtype=object), "top_p": np.array([[1]], dtype=np.int32)}, "dtype"),
        ({"text_input": np.array([[b"a"]], dtype=object), "seed": np.array([[1], [2]], dtype=np.int64)}, "elements"),
        ({"text_input": np.zeros((0, 1), dtype=object)}, "no element"),
    ]
    for arrays, message in bad:
        with pytest.raises(backend.RequestError, match=message):
            backend.parse_inputs(arrays)


# -- TritonPythonModel through a stand-in pb_utils --------------------------------------

class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class _TritonError(Exception):
    INVALID_ARG = 3

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    def message(self) -> str:
        return str(self)


class _Response:
    def __init__(self, output_tensors: list, error: Any = None) -> None:
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors}
        self.error = error


class _Request:
    def __init__(self, **arrays: np.ndarray) -> None:
        self.inputs = {k: _Tensor(k, v) for k, v in arrays.items()}


@pytest.fixture
def triton_model(random_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``TritonPythonModel`` initialised from a built version directory, with a stand-in pb_utils."""
    from llmops.config import load_config
    from llmops.records.serving import RegistryFacts
    from llmops.serving.repository import build_version, render_config

    fake = types.SimpleNamespace(Tensor=_Tensor, InferenceResponse=_Response, TritonError=_TritonError,
                                 get_input_tensor_by_name=lambda req, name: req.inputs.get(name))
    monkeypatch.setattr(backend, "pb_utils", fake)
    cfg = load_config(environ={}, overrides={"home": str(tmp_path), "serving": {"max_tokens_limit": 32,
                                                                                "default_max_tokens": 8}})
    version_dir = build_version(cfg, hf_dir=random_model, name="llmops", version=4,
                                info=RegistryFacts(version="11", model_uri="models:/llmops/11"), kind="cpu")
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    config = json_format.MessageToJson(text_format.Parse(render_config(cfg, "llmops", kind="cpu"),
                                                         model_config_pb2.ModelConfig()),
                                       preserving_proto_field_name=True)
    model = backend.TritonPythonModel()
    model.initialize({"model_config": config, "model_instance_kind": "CPU", "model_instance_device_id": "0",
                      "model_repository": str(version_dir.parent), "model_version": "4", "model_name": "llmops"})
    return model


def text(*values: str) -> np.ndarray:
    return np.array([[v.encode()] for v in values], dtype=object)


def test_execute_answers_each_request_and_errors_alone(triton_model: Any, gen: Any) -> None:
    assert triton_model.generator.max_tokens_limit == 32  # parameters from config.pbtxt
    requests = [
        _Request(text_input=text(QUESTIONS[0]), max_tokens=np.array([[7]], dtype=np.int32)),
        _Request(text_input=text("")),  # empty prompt
        _Request(text_input=text(QUESTIONS[1], QUESTIONS[2]), max_tokens=np.array([[3], [5]], dtype=np.int32)),
        _Request(text_input=text(QUESTIONS[3]), max_tokens=np.array([[33]], dtype=np.int32)),  # over the limit
        _Request(text_input=text(QUESTIONS[4]), top_p=np.array([[1]], dtype=np.int32)),  # wrong dtype
        _Request(text_input=text(QUESTIONS[5]), temperature=np.array([[0.9]], dtype=np.float32),
                 seed=np.array([[42]], dtype=np.int64), max_tokens=np.array([[6]], dtype=np.int32)),
    ]
    responses = triton_model.execute(requests)
    assert len(responses) == len(requests)
    for k in (1, 3, 4):
        assert responses[k].error is not None and responses[k].error.code == _TritonError.INVALID_ARG
        assert responses[k].outputs == {}
    assert "empty" in responses[1].error.message() and "between 1 and 32" in responses[3].error.message()

    first = responses[0]
    assert first.error is None and set(first.outputs) == {"text_output", "model_version", "prompt_tokens",
                                                          "completion_tokens"}
    assert all(v.shape == (1, 1) for v in first.outputs.values())
    assert first.outputs["model_version"][0, 0] == b"11"
    assert first.outputs["prompt_tokens"].dtype == np.int32
    expected = alone(gen, Req(QUESTIONS[0], max_tokens=7))
    assert first.outputs["text_output"][0, 0].decode() == expected.text
    assert first.outputs["completion_tokens"][0, 0] == expected.completion_tokens

    pair = responses[2]
    assert pair.error is None and pair.outputs["text_output"].shape == (2, 1)
    assert list(pair.outputs["completion_tokens"].reshape(-1)) == [
        alone(gen, Req(QUESTIONS[1], max_tokens=3)).completion_tokens,
        alone(gen, Req(QUESTIONS[2], max_tokens=5)).completion_tokens]
    sampled = alone(gen, Req(QUESTIONS[5], temperature=0.9, seed=42, max_tokens=6))
    assert responses[5].outputs["text_output"][0, 0].decode() == sampled.text


def test_execute_survives_a_failing_model(triton_model: Any) -> None:
    class Broken:
        def __call__(self, **kwargs: Any) -> Any:
            raise RuntimeError("CUDA out of memory (simulated)")

        def __getattr__(self, name: str) -> Any:
            return getattr(triton_model.generator.model, name)

    triton_model.generator.model = Broken()
    responses = triton_model.execute([_Request(text_input=text(q)) for q in QUESTIONS[:3]])
    assert all(r.error is not None and "out of memory" in r.error.message() for r in responses)
    assert all(r.error.code is None for r in responses)  # an internal error, not the client's fault


def test_model_info_is_next_to_the_model(triton_model: Any) -> None:
    assert triton_model.info["model_uri"] == "models:/llmops/11" and triton_model.model_version == "11"
    assert json.dumps(triton_model.info)  # plain JSON


def test_an_exported_model_builds_and_serves(pretrained: dict, tmp_path: Path) -> None:
    """The session's real export (training -> export) is accepted by the builder and answers from its version dir."""
    from llmops.config import load_config
    from llmops.serving.repository import build_version

    cfg = load_config(environ={}, overrides={"home": str(tmp_path)})
    version_dir = build_version(cfg, hf_dir=pretrained["model"], name="llmops", version=1)
    assert (version_dir / "hf" / "llmops_model.json").is_file()
    served = backend.TextGenerator.from_pretrained(version_dir / "hf", default_max_tokens=8, max_tokens_limit=16)
    (result,) = served.generate([Req("What is the for statement?", max_tokens=5)])
    assert 1 <= result.completion_tokens <= 5 and result.prompt_tokens > 3
