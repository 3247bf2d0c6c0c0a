"""The two kinds of llmops error: whether trying again can help.

Every error llmops raises on purpose is a ``PermanentError`` or a ``TransientError``:

* **permanent**: retrying the same work with the same inputs fails the same way: bad
  configuration, bad input data, a model that failed the gate, weights that cannot load.
  The message says what to fix. An orchestrator fails the task at once.
* **transient**: the world may change by the next try: Triton not up yet, a lock held by
  another deployment, a network or tracking-store error. An orchestrator retries with backoff.

The core library only declares the kind; ``plugins/llmops_airflow/errors.py`` turns it into
Airflow's behaviour, and the CLI prints the message either way. A class keeps its older
builtin base (``class ConfigError(PermanentError, ValueError)``) so callers catching
``ValueError`` or ``RuntimeError`` still do.

One family can hold both kinds: ``ServerUnavailable(TransientError, ServerError)`` is a
``ServerError`` (so ``except ServerError`` still catches it) whose kind is transient.
The kind is the first of the two in the class's MRO, which is what the ``transient``
attribute resolves to; test ``exc.transient`` (or ``is_transient``), not
``isinstance(exc, PermanentError)``.
"""

from __future__ import annotations

from typing import ClassVar


class LlmopsError(Exception):
    """Base of llmops' own errors. Raise one of the two kinds below, never this class."""

    transient: ClassVar[bool] = False
    """Whether a later try of the same work may succeed."""


class PermanentError(LlmopsError):
    """Retrying cannot help: the configuration, the input or the model must change first."""

    transient = False


class TransientError(LlmopsError):
    """A later try may succeed: a service not up yet, a lock held by someone else, the network."""

    transient = True


def is_transient(exc: BaseException) -> bool | None:
    """True or False for an llmops error, None for any other exception (its kind is unknown)."""
    return exc.transient if isinstance(exc, LlmopsError) else None


__all__ = ["LlmopsError", "PermanentError", "TransientError", "is_transient"]
