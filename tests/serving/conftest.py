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

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmops.config import LlmopsConfig, load_config
from llmops.serving.server import TritonServer

# Another developer runs Triton on its default ports on the same machine.
_RESERVED = {8000, 8001, 8002}


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports nobody listens on, chosen by the kernel (bind to port 0).

    The sockets stay open until all are picked so the kernel cannot hand out one twice.
    Another process could still take a port before Triton binds it; the ephemeral range
    is large enough that this is rare, and ``start`` then fails loudly, not silently.
    """
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
            port = s.getsockname()[1]
            if port not in _RESERVED:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


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
