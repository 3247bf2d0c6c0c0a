"""A real embedded Triton server for the serving tests.

``triton`` (module scope) starts ``TritonServer`` in a fresh ``LLMOPS_HOME`` with free
ports and an empty model repository, and stops it after the module. To serve a model::

    def test_my_model(triton):
        shutil.copytree(my_model_dir, triton.repository / "my_model")   # <name>/config.pbtxt, <name>/1/model.py
        triton.load_model("my_model")                                   # sends the admin key
        client = triton.http_client()                                   # inference needs no key
        ...

The server runs this venv's interpreter in its python backend, so models can import
torch, transformers, numpy and llmops. Do not stop the shared server in a test; build a
second one with ``serving_config(home)`` (each call picks new free ports) instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmops.config import LlmopsConfig, load_config
from llmops.serving.server import TritonServer
from llmops.stack import free_ports

# Another developer runs Triton on its default ports on the same machine.


def serving_config(home: Path, **serving: Any) -> LlmopsConfig:
    """A configuration with its home at ``home``, free ports, and ``serving`` overrides.

    The process environment is not read (a developer's ``LLMOPS_SERVING__ADMIN_KEY`` or
    ports must not leak in), so the admin key is generated into ``home/triton/admin.key``
    unless ``admin_key=`` is given.
    """
    http, grpc, metrics = free_ports(3)
    over = {"http_port": http, "grpc_port": grpc, "metrics_port": metrics, "startup_timeout_s": 120.0, **serving}
    return load_config(environ={}, overrides={"home": str(home), "serving": over})


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A running ``TritonServer`` with an empty repository (``triton.repository``), stopped after the module."""
    server = TritonServer(serving_config(tmp_path_factory.mktemp("triton_home")))
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=30)


def build_random_model(tokenizer_dir: Path, dest: Path, *, seed: int = 0) -> Path:
    """A tiny randomly initialised Llama saved as an exported model, with ``tokenizer_dir``'s tokenizer.

    A freshly initialised model answers every prompt differently (the 30-step fixture
    model answers everything with one repeated token), so batched-versus-alone checks
    compare real, diverse token streams. ``initializer_range`` 0.3 makes the logits
    spread out: the default 0.02 gives near-uniform logits whose argmax means nothing.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    eos = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|end|>"])
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.3, tie_word_embeddings=True, bos_token_id=None, eos_token_id=eos[0],
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
