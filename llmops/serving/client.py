"""Call the served model with the standard ``tritonclient`` over HTTP or gRPC.

This is all a user needs (the README shows the same calls without llmops installed):
one ``text_input`` row (the question; the model applies its chat template), optional
``max_tokens`` / ``temperature`` / ``top_p`` / ``seed``, and the outputs ``text_output``,
``model_version`` and the token counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmops.records.serving import Answer, Protocol
from llmops.serving import tensors

__all__ = ["Answer", "Protocol", "build_inputs", "generate", "make_client", "parse_result"]


def _module(protocol: Protocol):
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
    return module


def make_client(url: str, protocol: Protocol = "http", *, timeout_s: float = 120.0):
    """A ``tritonclient`` client for ``host:port`` (HTTP defaults to 8000, gRPC to 8001)."""
    module = _module(protocol)
    url = url.split("://", 1)[-1].rstrip("/")
    if protocol == "http":
        return module.InferenceServerClient(url, network_timeout=timeout_s, connection_timeout=timeout_s)
    return module.InferenceServerClient(url)


def build_inputs(question: str, protocol: Protocol = "http", *, max_tokens: int | None = None,
                 temperature: float | None = None, top_p: float | None = None, seed: int | None = None) -> list:
    """The request tensors of one question, shaped ``[1, 1]`` (batch of one, one element);
    an optional input left at None is not sent (the model takes its default)."""
    module = _module(protocol)
    values = {tensors.TEXT_INPUT: question.encode("utf-8"), tensors.MAX_TOKENS: max_tokens,
              tensors.TEMPERATURE: temperature, tensors.TOP_P: top_p, tensors.SEED: seed}
    inputs = []
    for tensor in tensors.INPUTS:
        if values[tensor] is None:
            continue
        array = np.array([[values[tensor]]], dtype=tensor.numpy_dtype)
        infer_input = module.InferInput(tensor.name, list(array.shape), tensor.datatype)
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    return inputs


def parse_result(result: Any) -> Answer:
    """An ``Answer`` from a tritonclient ``InferResult`` of one question."""
    def scalar(name: str):
        return result.as_numpy(name).reshape(-1)[0]

    def text(name: str) -> str:
        value = scalar(name)
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

    return Answer(text=text(tensors.TEXT_OUTPUT.name), model_version=text(tensors.MODEL_VERSION.name),
                  prompt_tokens=int(scalar(tensors.PROMPT_TOKENS.name)),
                  completion_tokens=int(scalar(tensors.COMPLETION_TOKENS.name)))


def generate(question: str, *, url: str | None = None, protocol: Protocol = "http", model: str = "llmops",
             max_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
             seed: int | None = None, client: Any = None, timeout_s: float = 120.0) -> Answer:
    """Ask the served model one question; raises tritonclient's ``InferenceServerException`` on a refusal."""
    module = _module(protocol)
    own = client is None
    if own:
        client = make_client(url or ("127.0.0.1:8000" if protocol == "http" else "127.0.0.1:8001"), protocol,
                             timeout_s=timeout_s)
    try:
        inputs = build_inputs(question, protocol, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                              seed=seed)
        outputs = [module.InferRequestedOutput(t.name) for t in tensors.OUTPUTS]
        kwargs = {"client_timeout": timeout_s} if protocol == "grpc" else {}
        return parse_result(client.infer(model, inputs, outputs=outputs, **kwargs))
    finally:
        if own:
            client.close()
