"""Records of serving: what a served version is (``model_info.json`` in its Triton version
directory), the embedded server's pid file and status, the answers of the smoke tests,
and what a deployment did (the ``llmops_deploy`` XCom and report).

``include/triton/model.py`` reads ``model_info.json`` with ``json`` (it runs in the Triton
image, where llmops is not installed); every llmops-side writer and reader uses
:class:`ServedModelInfo`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from llmops.records.base import Record
from llmops.records.common import Ref

Protocol = Literal["http", "grpc"]


class RegistryFacts(BaseModel):
    """What the MLflow registry says about a registered version: the facts a served version
    shows (``serve status``) and answers with (``model_version``). Empty outside the
    registry (a benchmark serving an exported directory names it by ``model_uri`` alone).

    Not a :class:`Ref`: it is the body of ``model_info.json``, which has always written
    its unknown facts as ``null`` (a ``Ref`` leaves them out)."""

    model_config = ConfigDict(extra="forbid")

    model_uri: str | None = None
    """``models:/<name>/<version>`` (or a ``file://`` URI of an exported directory)."""
    registered_name: str | None = None
    version: str | None = None
    """The registered version: what the model reports as ``model_version``."""
    run_id: str | None = None
    """The MLflow run the version was registered from."""
    data_card_hash: str | None = None
    tokenizer_hash: str | None = None
    gate_result: str | None = None
    code_version: str | None = None


class ServedModelInfo(Record, RegistryFacts):
    """``<repository>/<name>/<version>/model_info.json``: the registry's facts about a served
    version, with the Triton model name and version directory it is served under."""

    NAME: ClassVar[str] = "model_info.json"
    # Versions built without registry facts stored the Triton version (an int) as ``version``.
    model_config = ConfigDict(coerce_numbers_to_str=True)

    name: str
    """The Triton model name (the served one, or the staging one during a deployment)."""
    triton_version: int
    """The version directory's number."""
    version: str
    """The registered version the model reports as ``model_version`` (the Triton version
    when the facts name none)."""


class ModelState(Ref):
    """One entry of Triton's repository index."""

    name: str
    version: str
    """Empty for a model Triton has not loaded (it reports no version then)."""
    state: str
    """READY, LOADING, UNLOADING, UNAVAILABLE, or empty for a directory never loaded."""
    reason: str = ""
    """Why a model is UNAVAILABLE (load error, unloaded), as Triton words it."""


class ServerStatus(Record):
    """What ``TritonServer.status()`` reports: the ``serve status --json`` document."""

    running: bool
    pid: int | None
    http_url: str
    grpc_url: str
    metrics_url: str
    ready: bool
    """``/v2/health/ready`` answered 200: the server is up and able to serve."""
    models: list[ModelState] = []
    log_path: str | None = None
    repository: str | None = None
    error: str | None = None
    """Why the models could not be listed (server not ready, wrong admin key)."""


class ServerPidFile(Record):
    """``triton/server.pid``: the running server, for a later ``serve status`` or ``stop`` in
    another process. Never the admin key."""

    NAME: ClassVar[str] = "server.pid"

    pid: int
    started: float
    """The process's create time: a pid reused by another process has another one."""
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    """Where the server listens: a server started before the configuration changed still listens there."""
    repository: str
    log: str
    started_at: str


class Answer(Ref):
    """One generation as the served model returned it (``llmops generate --json``)."""

    text: str
    """The generated answer (special tokens removed)."""
    model_version: str
    """The registered version that answered."""
    prompt_tokens: int
    """Tokens of the question after the chat template."""
    completion_tokens: int
    """Tokens generated."""


class SmokeAnswer(Answer):
    """One smoke-test generation of a staged version: which protocol, which question, its answer."""

    protocol: Protocol
    question: str


class DeployResult(Record):
    """What a deployment (or rollback) did: the ``deploy`` task's XCom, ``llmops deploy --json``
    and the deploy report (``reports/llmops_deploy/``)."""

    NAME: ClassVar[str] = "deploy.json"

    name: str
    """Registered model name (and Triton model name)."""
    version: int
    """The version now served."""
    model_uri: str
    """``models:/<name>/<version>``."""
    previous: int | None
    """The version served before (None on a first deployment)."""
    status: Literal["deployed", "already serving", "rolled back"]
    smoke: list[SmokeAnswer] = []
    """The smoke-test answers over HTTP and gRPC (empty when the version was already serving)."""
    live: list[str] = []
    """``model_version`` of the live checks after the swap."""
