"""Call the served model with the standard ``tritonclient`` over HTTP or gRPC.

This is all a user needs (the README shows the same calls without llmops installed):
one ``text_input`` row (the question; the model applies its chat template), optional
``max_tokens`` / ``temperature`` / ``top_p`` / ``seed``, and the outputs ``text_output``,
``model_version`` and the token counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Protocol = Literal["http", "grpc"]


@dataclass
class Answer:
    """One generation as the server returned it."""

    text: str
    """The generated answer (special tokens removed)."""
    model_version: str
    """The registered model version that answered."""
    prompt_tokens: int
    """Tokens of the question after the chat template."""
    completion_tokens: int
    """Tokens generated."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    """The request tensors of one question, shaped ``[1, 1]`` (batch of one, one element)."""
    module = _module(protocol)
    values: list[tuple[str, str, np.ndarray]] = [
        ("text_input", "BYTES", np.array([[question.encode("utf-8")]], dtype=np.object_))]
    for name, dtype, value, np_type in (("max_tokens", "INT32", max_tokens, np.int32),
                                        ("temperature", "FP32", temperature, np.float32),
                                        ("top_p", "FP32", top_p, np.float32), ("seed", "INT64", seed, np.int64)):
        if value is not None:
            values.append((name, dtype, np.array([[value]], dtype=np_type)))
    inputs = []
    for name, dtype, array in values:
        tensor = module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


OUTPUT_NAMES = ("text_output", "model_version", "prompt_tokens", "completion_tokens")


def parse_result(result: Any) -> Answer:
    """An ``Answer`` from a tritonclient ``InferResult`` of one question."""
    def scalar(name: str):
        return result.as_numpy(name).reshape(-1)[0]

    def text(name: str) -> str:
        value = scalar(name)
        return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)

    return Answer(text=text("text_output"), model_version=text("model_version"),
                  prompt_tokens=int(scalar("prompt_tokens")), completion_tokens=int(scalar("completion_tokens")))


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
        outputs = [module.InferRequestedOutput(n) for n in OUTPUT_NAMES]
        kwargs = {"client_timeout": timeout_s} if protocol == "grpc" else {}
        return parse_result(client.infer(model, inputs, outputs=outputs, **kwargs))
    finally:
        if own:
            client.close()
