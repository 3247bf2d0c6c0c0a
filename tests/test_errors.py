"""Every llmops error is permanent or transient (``llmops.errors``), and the kind is the one a
retry policy needs: what an orchestrator does with it is tested in tests/plugins/test_retry_by_kind.py."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from llmops.errors import LlmopsError, PermanentError, TransientError, is_transient

PACKAGE = Path(__file__).resolve().parents[1] / "llmops"

# (module, class, transient?, a builtin base callers may still catch)
KINDS = [
    ("llmops.config", "ConfigError", False, ValueError),
    ("llmops.training.job", "PreflightError", False, ValueError),
    ("llmops.evaluation.evaluate", "EvaluationInputError", False, ValueError),
    ("llmops.evaluation.evaluate", "GateFailed", False, RuntimeError),
    ("llmops.evaluation.gate", "GateConfigError", False, ValueError),
    ("llmops.evaluation.behaviour", "BehaviourCaseError", False, ValueError),
    ("llmops.evaluation.generation", "ModelLoadError", False, ValueError),
    ("llmops.registry.model_registry", "RegistryError", False, RuntimeError),
    ("llmops.serving.deploy", "DeployFailed", False, RuntimeError),
    ("llmops.serving.deploy", "DeployBlocked", True, RuntimeError),
    ("llmops.serving.server", "ServerError", False, RuntimeError),
    ("llmops.serving.server", "PortInUse", False, RuntimeError),
    ("llmops.serving.server", "ServerUnavailable", True, RuntimeError),
    ("llmops.data.pipeline", "CrawlFailed", True, RuntimeError),
    ("llmops.data.pipeline", "CrawlRefused", False, RuntimeError),
    ("llmops.data.pii", "RedactInputError", False, ValueError),
    ("llmops.registry.tracking", "TrackingError", True, RuntimeError),
    ("llmops.training.data", "DataError", False, ValueError),
    ("llmops.training.deepspeed_config", "DeepSpeedConfigError", False, ValueError),
    ("llmops.training.model", "PresetError", False, ValueError),
    ("llmops.training.export", "ExportError", False, RuntimeError),
    ("llmops.training.process", "JobAlreadyRunning", True, RuntimeError),
    ("llmops.training.runner", "TrainingFailed", True, RuntimeError),
    ("llmops.chain", "ChainTimeout", True, RuntimeError),
]

# Error classes not classified yet, in files other work owns; the kind each should get.
# (Lead: re-base them -- e.g. ``class DataError(PermanentError, ValueError)`` -- and empty this.)
PENDING: dict[str, str] = {}


@pytest.mark.parametrize(("module", "name", "transient", "builtin"), KINDS, ids=[k[1] for k in KINDS])
def test_each_error_has_its_kind_and_keeps_its_builtin_base(module, name, transient, builtin):
    cls = getattr(importlib.import_module(module), name)
    exc = cls("message")
    assert is_transient(exc) is transient and exc.transient is transient
    assert isinstance(exc, builtin) and isinstance(exc, LlmopsError)
    assert str(exc).startswith("message")


def test_a_transient_member_of_a_permanent_family_is_transient_and_still_caught_by_the_family():
    from llmops.serving.deploy import DeployBlocked, DeployFailed
    from llmops.serving.server import ServerError, ServerUnavailable

    for cls, family in ((ServerUnavailable, ServerError), (DeployBlocked, DeployFailed)):
        with pytest.raises(family):
            raise cls("Triton is not ready yet")
        assert is_transient(cls("x")) is True and issubclass(cls, TransientError)


def test_other_exceptions_have_no_kind():
    assert is_transient(OSError("disk")) is None and is_transient(KeyboardInterrupt()) is None
    assert is_transient(PermanentError("x")) is False and is_transient(TransientError("x")) is True


def _exception_classes() -> dict[str, list[str]]:
    """``{class name: base names}`` of every class in llmops/ whose bases look like exceptions."""
    classes: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                classes[node.name] = [b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases]
    return classes


def test_every_llmops_error_class_is_permanent_or_transient():
    classes = _exception_classes()

    def kinded(name: str, seen: frozenset = frozenset()) -> bool:
        if name in ("PermanentError", "TransientError"):
            return True
        return name not in seen and any(kinded(b, seen | {name}) for b in classes.get(name, []))

    def is_exception(name: str) -> bool:
        import builtins

        base = getattr(builtins, name, None)
        if isinstance(base, type) and issubclass(base, BaseException):
            return True
        return any(is_exception(b) for b in classes.get(name, []) if b != name)

    errors = {n for n in classes if is_exception(n)} - {"LlmopsError", "PermanentError", "TransientError"}
    unkinded = {n for n in errors if not kinded(n)}
    assert unkinded <= set(PENDING), (f"{sorted(unkinded - set(PENDING))}: derive every error class from "
                                      f"llmops.errors.PermanentError or TransientError (see its docstring)")
    assert set(PENDING) <= unkinded, f"classified now, drop them from PENDING: {sorted(set(PENDING) - unkinded)}"
