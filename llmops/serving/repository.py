"""The Triton model repository: one directory per served model, one subdirectory per version.

    <repository>/<name>/config.pbtxt              rendered from ServingConfig (render_config)
    <repository>/<name>/<version>/model.py        include/triton/model.py (the python backend)
    <repository>/<name>/<version>/tensors.py      include/triton/tensors.py (its tensors, see below)
    <repository>/<name>/<version>/inference_log.py include/triton/inference_log.py (its request log)
    <repository>/<name>/<version>/drift_vocabulary.json  the training corpus's token ids, most frequent first
    <repository>/<name>/<version>/hf/             a copy of the exported Hugging Face directory
    <repository>/<name>/<version>/model_info.json ServedModelInfo: MLflow URI, version, data hash, gate

Writes are atomic so that a server polling or loading the repository never sees half a
version: a version is assembled in a hidden sibling directory (Triton ignores version
directories whose name is not a number) and renamed into place; a removed version is
renamed away first and deleted afterwards. ``config.pbtxt`` is written to a temporary
file and renamed over the old one.

The config is built as Triton's own ``ModelConfig`` protobuf
(``tritonclient.grpc.model_config_pb2``) and written in its text format: every value comes
from the validated ``ServingConfig``, the tensors from the one table
(``include/triton/tensors.py``) the model and the client use too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from types import ModuleType
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from llmops.config import REPO_ROOT, LlmopsConfig
from llmops.monitoring import log as inference_log
from llmops.records.serving import RegistryFacts, ServedModelInfo
from llmops.serving import tensors

BACKEND_SOURCE = REPO_ROOT / "include" / "triton" / "model.py"
"""The python-backend model copied into every version directory."""
BACKEND_FILES = (BACKEND_SOURCE, tensors.SOURCE, inference_log.SOURCE)
"""Copied side by side into every version directory: the model, the tensor table and the
inference log it imports."""

REQUIRED_HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "generation_config.json")
"""Files an exported model directory needs to be served (a chat template is checked as well)."""

Kind = Literal["auto", "cpu", "gpu"]
_KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")



def repository_path(cfg: LlmopsConfig) -> Path:
    """The model repository: ``serving.repository``, else ``$LLMOPS_HOME/triton/models``."""
    path = cfg.serving.repository
    if path is None:
        return cfg.layout.triton_models
    path = Path(path).expanduser()
    return path if path.is_absolute() else (Path.cwd() / path).resolve()


def _check_name(name: str) -> str:
    # The name becomes a directory and a URL path segment: no separators, no "..".
    if not _NAME.match(name) or name in (".", ".."):
        raise ValueError(f"model name {name!r} must match {_NAME.pattern}")
    return name


def _check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"a Triton version is a positive integer, got {version!r}")
    return version


def model_config(cfg: LlmopsConfig, name: str, *, kind: Kind | None = None, dynamic_batching: bool = True,
                 max_batch_size: int | None = None, versions: list[int] | None = None) -> pb.ModelConfig:
    """Triton's ``ModelConfig`` of model ``name`` from ``cfg.serving``.

    ``kind``: instance kind, ``auto`` (Triton picks GPU where it has one), ``cpu`` or
    ``gpu``; None takes ``serving.device``. ``dynamic_batching=False`` leaves the dynamic
    batcher out, so every request is executed on its own (the baseline the benchmark
    compares against); ``max_batch_size`` overrides ``serving.max_batch_size``, and 0
    turns batching off altogether (inputs then have no batch dimension). ``versions`` pins
    the ``version_policy`` to exactly those versions (a deployment swaps by pointing it at
    the new one, which also works for a rollback to a lower number); None keeps Triton's
    default, the latest version.
    """
    s = cfg.serving
    _check_name(name)
    kind = kind or s.device
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    batch = s.max_batch_size if max_batch_size is None else max_batch_size
    if batch < 0:
        raise ValueError(f"max_batch_size must be >= 0, got {batch}")
    if s.default_max_tokens > s.max_tokens_limit:
        # The model would refuse to load; say so now, naming the keys, instead of in Triton's log.
        raise ValueError(f"serving.default_max_tokens ({s.default_max_tokens}) exceeds serving.max_tokens_limit "
                         f"({s.max_tokens_limit})")

    mc = pb.ModelConfig(name=name, backend="python", max_batch_size=batch)
    if versions:
        mc.version_policy.specific.versions.extend(_check_version(v) for v in versions)
    # dims [1]: one element per row. With max_batch_size > 0 Triton prepends the batch
    # dimension, so a request sends [n, 1] (n questions, usually 1).
    for t in tensors.INPUTS:
        mc.input.add(name=t.name, data_type=pb.DataType.Value(t.config_type), dims=[1], optional=t.optional)
    for t in tensors.OUTPUTS:
        mc.output.add(name=t.name, data_type=pb.DataType.Value(t.config_type), dims=[1])
    if dynamic_batching and batch > 0:
        _dynamic_batching(mc.dynamic_batching, cfg, batch)
    mc.instance_group.add(count=s.instance_count, kind=pb.ModelInstanceGroup.Kind.Value(_KINDS[kind]))
    # Read by model.py's initialize (a model parameter is always a string).
    m = cfg.monitor
    parameters: list[tuple[str, object]] = [
        ("threads", s.threads_per_instance), ("default_max_tokens", s.default_max_tokens),
        ("max_tokens_limit", s.max_tokens_limit), ("max_prompt_tokens", s.max_prompt_tokens)]
    if m.inference_log:
        parameters += [("inference_log_dir", inference_log.log_dir(cfg)), ("drift_top_k", m.top_k),
                       ("inference_log_queue", m.queue_size), ("inference_log_retention_s", m.retention_hours * 3600)]
    for key, value in parameters:
        mc.parameters[key].string_value = str(value)
    return mc


def _dynamic_batching(db: pb.ModelDynamicBatching, cfg: LlmopsConfig, batch: int) -> None:
    s = cfg.serving
    db.SetInParent()  # present even when every field below keeps its default
    # A preferred size above max_batch_size is an error to Triton and meaningless anyway.
    db.preferred_batch_size.extend(sorted({b for b in s.preferred_batch_sizes if 1 <= b <= batch}))
    db.max_queue_delay_microseconds = s.max_queue_delay_us
    # Back-pressure: beyond max_queue_size a request is refused at once (HTTP 503
    # "Exceeds maximum queue size") instead of waiting behind a growing queue.
    db.default_queue_policy.SetInParent()
    db.default_queue_policy.max_queue_size = s.max_queue_size


def render_config(cfg: LlmopsConfig, name: str, *, kind: Kind | None = None, dynamic_batching: bool = True,
                  max_batch_size: int | None = None, versions: list[int] | None = None) -> str:
    """The ``config.pbtxt`` of model ``name``: :func:`model_config` in protobuf text format."""
    return text_format.MessageToString(model_config(cfg, name, kind=kind, dynamic_batching=dynamic_batching,
                                                    max_batch_size=max_batch_size, versions=versions))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_config(cfg: LlmopsConfig, name: str, *, kind: Kind | None = None, dynamic_batching: bool = True,
                 max_batch_size: int | None = None, versions: list[int] | None = None) -> Path:
    """(Re)write ``<repo>/<name>/config.pbtxt`` atomically; arguments as ``render_config``.

    A loaded model keeps its old config until it is loaded again.
    """
    text = render_config(cfg, name, kind=kind, dynamic_batching=dynamic_batching, max_batch_size=max_batch_size,
                         versions=versions)
    model_dir = repository_path(cfg) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(model_dir / "config.pbtxt", text)
    return model_dir / "config.pbtxt"


def check_hf_dir(hf_dir: str | Path) -> Path:
    """``hf_dir`` if it is a complete exported model; else ``FileNotFoundError`` listing what is missing."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise FileNotFoundError(f"{hf_dir} is not a directory; export a model first (`llmops export`)")
    missing = [f for f in REQUIRED_HF_FILES if not (hf_dir / f).is_file()]
    tokenizer_config = hf_dir / "tokenizer_config.json"  # transformers' own file: only its template is read
    template = tokenizer_config.is_file() and json.loads(tokenizer_config.read_text()).get("chat_template")
    if not template and not (hf_dir / "chat_template.jinja").is_file():
        missing.append("a chat template (chat_template.jinja or tokenizer_config.json's chat_template)")
    if missing:
        raise FileNotFoundError(f"{hf_dir} is not a complete exported model, it lacks: {', '.join(missing)}")
    return hf_dir


def build_version(cfg: LlmopsConfig, *, hf_dir: str | Path, name: str, version: int,
                  info: RegistryFacts | None = None, kind: Kind | None = None) -> Path:
    """Add ``version`` of model ``name`` to the repository; returns the version directory.

    Writes ``config.pbtxt`` when the model has none yet (``kind`` as in ``render_config``;
    an existing one is left alone, see ``write_config``), and the version directory
    with ``model.py`` and ``tensors.py``, ``hf/`` (a copy of ``hf_dir``) and
    ``model_info.json`` (a :class:`ServedModelInfo`: ``info`` plus ``name`` and
    ``triton_version``; ``info.version``, the registered version the model reports as
    ``model_version``, defaults to ``version``). The version appears complete or not at
    all. Building a version that exists with the same ``info`` again returns it unchanged
    (a retried task); with different ``info`` it is an error: remove the version first.
    """
    _check_name(name)
    _check_version(version)
    hf_dir = check_hf_dir(hf_dir)
    facts = info or RegistryFacts()
    served = ServedModelInfo(**facts.model_dump(exclude={"version"}), version=facts.version or str(version),
                             name=name, triton_version=version)

    model_dir = repository_path(cfg) / name
    target = model_dir / str(version)
    model_dir.mkdir(parents=True, exist_ok=True)
    if not (model_dir / "config.pbtxt").exists():
        # Never rewrite an existing config here: it may pin the version being served, and
        # resetting that to "latest" would serve whatever number is highest on the next load.
        write_config(cfg, name, kind=kind)
    if target.exists():
        # model.py alone marks a complete version: those built before tensors.py existed hold none.
        built = (target / "model.py").is_file() and (target / ServedModelInfo.NAME).is_file()
        if built and read_model_info(cfg, name, version) == served:
            return target
        raise FileExistsError(f"{target} already exists with other contents; remove_version({name!r}, {version}) "
                              f"first or build another version")

    # Hidden and non-numeric: Triton skips it while it is being assembled.
    staging = Path(tempfile.mkdtemp(prefix=f".building-{version}-", dir=model_dir))
    try:
        for source in BACKEND_FILES:
            shutil.copy2(source, staging / source.name)
        shutil.copytree(hf_dir, staging / "hf")
        vocabulary = inference_log.corpus_token_ids(hf_dir)
        if vocabulary:  # what the inference log counts question tokens against
            inference_log.write_vocabulary(staging, vocabulary)
        served.write(staging / ServedModelInfo.NAME)
        staging.chmod(0o755)  # mkdtemp makes it 0700; the server may run as another user
        os.rename(staging, target)  # atomic; fails if a concurrent build got there first
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_model_info(cfg: LlmopsConfig, name: str, version: int) -> ServedModelInfo:
    """The ``model_info.json`` of a served version."""
    return ServedModelInfo.read(repository_path(cfg) / _check_name(name) / str(_check_version(version))
                                / ServedModelInfo.NAME)


def served_versions(cfg: LlmopsConfig, name: str) -> list[int]:
    """Complete versions of ``name`` in the repository, ascending (empty if the model is absent)."""
    model_dir = repository_path(cfg) / _check_name(name)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir()
                  if p.is_dir() and p.name.isdigit() and (p / "model.py").is_file()
                  and (p / ServedModelInfo.NAME).is_file())


def _remove(path: Path) -> bool:
    if not path.exists():
        return False
    # Renamed away first, so a server never sees half a deleted tree.
    graveyard = path.with_name(f".removing-{path.name}-{uuid.uuid4().hex[:8]}")
    os.rename(path, graveyard)
    shutil.rmtree(graveyard)
    return True


def remove_version(cfg: LlmopsConfig, name: str, version: int) -> bool:
    """Delete one version directory; False if it was not there. Unload it from the server first."""
    return _remove(repository_path(cfg) / _check_name(name) / str(_check_version(version)))


def remove_model(cfg: LlmopsConfig, name: str) -> bool:
    """Delete the model's whole directory; False if it was not there. Unload it from the server first."""
    return _remove(repository_path(cfg) / _check_name(name))


def load_backend(path: str | Path = BACKEND_SOURCE) -> ModuleType:
    """Import the python-backend ``model.py`` in this process (for tests and benchmarks).

    It is a file, not a package module (Triton loads it from the version directory), so
    it is imported by path; ``TextGenerator`` then runs without Triton.
    """
    module_name = "llmops_triton_backend"
    if path == BACKEND_SOURCE and module_name in sys.modules:
        return sys.modules[module_name]
    return tensors.load_file(module_name, Path(path))
