"""The Triton model repository: one directory per served model, one subdirectory per version.

    <repository>/<name>/config.pbtxt              rendered from ServingConfig (render_config)
    <repository>/<name>/<version>/model.py        include/triton/model.py (the python backend)
    <repository>/<name>/<version>/hf/             a copy of the exported Hugging Face directory
    <repository>/<name>/<version>/model_info.json registry facts: MLflow URI, version, data hash, gate

Writes are atomic so that a server polling or loading the repository never sees half a
version: a version is assembled in a hidden sibling directory (Triton ignores version
directories whose name is not a number) and renamed into place; a removed version is
renamed away first and deleted afterwards. ``config.pbtxt`` is written to a temporary
file and renamed over the old one.

The config is rendered in Python rather than from a template: every value comes from
the validated ``ServingConfig`` and the tests parse the result back with Triton's own
protobuf schema (``tritonclient.grpc.model_config_pb2``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from llmops.config import REPO_ROOT, LlmopsConfig

BACKEND_SOURCE = REPO_ROOT / "include" / "triton" / "model.py"
"""The python-backend model copied into every version directory."""

REQUIRED_HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "generation_config.json")
"""Files an exported model directory needs to be served (a chat template is checked as well)."""

Kind = Literal["auto", "cpu", "gpu"]
_KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

# (name, Triton data type) of the model's tensors; each is one element per row (dims [1]).
INPUTS: tuple[tuple[str, str, bool], ...] = (
    ("text_input", "TYPE_STRING", False),
    ("max_tokens", "TYPE_INT32", True),
    ("temperature", "TYPE_FP32", True),
    ("top_p", "TYPE_FP32", True),
    ("seed", "TYPE_INT64", True),
)
"""(name, data type, optional) of every input."""
OUTPUTS: tuple[tuple[str, str], ...] = (
    ("text_output", "TYPE_STRING"),
    ("model_version", "TYPE_STRING"),
    ("prompt_tokens", "TYPE_INT32"),
    ("completion_tokens", "TYPE_INT32"),
)
"""(name, data type) of every output."""


def repository_path(cfg: LlmopsConfig) -> Path:
    """The model repository: ``serving.repository``, else ``$LLMOPS_HOME/triton/models``."""
    path = cfg.serving.repository
    if path is None:
        return cfg.home / "triton" / "models"
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


def render_config(cfg: LlmopsConfig, name: str, *, kind: Kind | None = None, dynamic_batching: bool = True,
                  max_batch_size: int | None = None, versions: list[int] | None = None) -> str:
    """The ``config.pbtxt`` of model ``name`` from ``cfg.serving``.

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

    def tensor(tname: str, dtype: str, optional: bool = False) -> str:
        # dims [1]: one element per row. With max_batch_size > 0 Triton prepends the
        # batch dimension, so a request sends [n, 1] (n questions, usually 1).
        return (f'  {{ name: "{tname}" data_type: {dtype} dims: [ 1 ]'
                + (" optional: true" if optional else "") + " }")

    lines = [
        f'name: "{name}"',
        'backend: "python"',
        f"max_batch_size: {batch}",
        *([f"version_policy: {{ specific: {{ versions: [ {', '.join(str(_check_version(v)) for v in versions)} ] }} }}"]
          if versions else []),
        "input [",
        ",\n".join(tensor(n, t, o) for n, t, o in INPUTS),
        "]",
        "output [",
        ",\n".join(tensor(n, t) for n, t in OUTPUTS),
        "]",
    ]
    if dynamic_batching and batch > 0:
        # A preferred size above max_batch_size is an error to Triton and meaningless anyway.
        preferred = sorted({b for b in s.preferred_batch_sizes if 1 <= b <= batch})
        lines += [
            "dynamic_batching {",
            *([f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]"] if preferred else []),
            f"  max_queue_delay_microseconds: {s.max_queue_delay_us}",
            # Back-pressure: beyond max_queue_size a request is refused at once (HTTP 503
            # "Exceeds maximum queue size") instead of waiting behind a growing queue.
            f"  default_queue_policy {{ max_queue_size: {s.max_queue_size} }}",
            "}",
        ]
    params = {
        "threads": s.threads_per_instance,
        "default_max_tokens": s.default_max_tokens,
        "max_tokens_limit": s.max_tokens_limit,
        "max_prompt_tokens": s.max_prompt_tokens,
    }
    lines += [
        f"instance_group [ {{ count: {s.instance_count} kind: {_KINDS[kind]} }} ]",
        "parameters [",
        ",\n".join(f'  {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()),
        "]",
    ]
    return "\n".join(lines) + "\n"


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
    tokenizer_config: dict[str, Any] = {}
    if (hf_dir / "tokenizer_config.json").is_file():
        tokenizer_config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    if not tokenizer_config.get("chat_template") and not (hf_dir / "chat_template.jinja").is_file():
        missing.append("a chat template (chat_template.jinja or tokenizer_config.json's chat_template)")
    if missing:
        raise FileNotFoundError(f"{hf_dir} is not a complete exported model, it lacks: {', '.join(missing)}")
    return hf_dir


def build_version(cfg: LlmopsConfig, *, hf_dir: str | Path, name: str, version: int, info: dict[str, Any],
                  kind: Kind | None = None) -> Path:
    """Add ``version`` of model ``name`` to the repository; returns the version directory.

    Writes ``config.pbtxt`` when the model has none yet (``kind`` as in ``render_config``;
    an existing one is left alone, see ``write_config``), and the version directory
    with ``model.py``, ``hf/`` (a copy of ``hf_dir``) and ``model_info.json`` (``info``
    plus ``name`` and ``triton_version``; ``info["version"]``, the registered version the
    model reports as ``model_version``, defaults to ``version``). The version appears
    complete or not at all. Building a version that exists with the same ``info`` again
    returns it unchanged (a retried task); with different ``info`` it is an error: remove
    the version first.
    """
    _check_name(name)
    _check_version(version)
    hf_dir = check_hf_dir(hf_dir)
    info = {**info, "name": name, "triton_version": version}
    info.setdefault("version", version)
    info = json.loads(json.dumps(info, default=str))  # what will be read back, for the comparison below

    model_dir = repository_path(cfg) / name
    target = model_dir / str(version)
    model_dir.mkdir(parents=True, exist_ok=True)
    if not (model_dir / "config.pbtxt").exists():
        # Never rewrite an existing config here: it may pin the version being served, and
        # resetting that to "latest" would serve whatever number is highest on the next load.
        write_config(cfg, name, kind=kind)
    if target.exists():
        existing = read_model_info(cfg, name, version) if (target / "model_info.json").exists() else None
        if existing == info and (target / "model.py").is_file():
            return target
        raise FileExistsError(f"{target} already exists with other contents; remove_version({name!r}, {version}) "
                              f"first or build another version")

    # Hidden and non-numeric: Triton skips it while it is being assembled.
    staging = Path(tempfile.mkdtemp(prefix=f".building-{version}-", dir=model_dir))
    try:
        shutil.copy2(BACKEND_SOURCE, staging / "model.py")
        shutil.copytree(hf_dir, staging / "hf")
        (staging / "model_info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it 0700; the server may run as another user
        os.rename(staging, target)  # atomic; fails if a concurrent build got there first
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_model_info(cfg: LlmopsConfig, name: str, version: int) -> dict[str, Any]:
    """The ``model_info.json`` of a served version."""
    return json.loads((repository_path(cfg) / _check_name(name) / str(_check_version(version))
                       / "model_info.json").read_text())


def served_versions(cfg: LlmopsConfig, name: str) -> list[int]:
    """Complete versions of ``name`` in the repository, ascending (empty if the model is absent)."""
    model_dir = repository_path(cfg) / _check_name(name)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir()
                  if p.is_dir() and p.name.isdigit() and (p / "model.py").is_file()
                  and (p / "model_info.json").is_file())


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
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module
