"""The one place where llmops' error kinds (``llmops.errors``) become Airflow task behaviour.

Airflow 3.3 asks a task's ``retry_policy`` what to do with the exception that failed it,
in the worker, before it counts retries. ``RetryByKind`` answers from the error's kind:

* ``PermanentError`` (bad configuration or input, a failed gate, weights that do not load):
  FAIL. The task fails at once, with the error's message and traceback in its log; its
  retries are not spent on something a retry cannot fix.
* ``TransientError`` (Triton not up yet, a lock held by another deployment, the network):
  RETRY, after the task's ``retry_delay`` grown by ``retry_exponential_backoff``.
* Any other exception: Airflow's default (retry while retries are left). Its kind is
  unknown, and a retry is the safer guess for a failure nobody classified.

``AirflowFailException``, ``AirflowSensorTimeout`` and ``AirflowSkipException`` never reach
a policy: they keep their meaning.

Every llmops DAG passes ``RETRIES`` (the policy plus exponential backoff) in its
``default_args``, so it covers every task, mapped ones and sensors included; the
operators in ``operators/`` set the policy themselves, so they behave the same in any DAG.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, TypedDict

from airflow.sdk import RetryDecision, RetryPolicy

from llmops.errors import is_transient


class RetryByKind(RetryPolicy):
    """FAIL a permanent llmops error, RETRY a transient one, leave anything else to Airflow."""

    def evaluate(self, exception: BaseException, try_number: int, max_tries: int,
                 context: Any = None) -> RetryDecision:
        kind = is_transient(exception)
        name = type(exception).__name__
        if kind is False:
            return RetryDecision.fail(f"{name} is permanent: retrying cannot fix it")
        if kind:
            return RetryDecision.retry(reason=f"{name} is transient: retried with backoff "
                                              f"(try {try_number} of {max_tries})")
        return RetryDecision.default()


RETRY_BY_KIND = RetryByKind()


class TaskRetries(TypedDict):
    """The retry arguments of a task (``BaseOperator``'s keyword arguments of the same names)."""

    retries: int
    retry_delay: dt.timedelta
    retry_exponential_backoff: float
    max_retry_delay: dt.timedelta
    retry_policy: RetryPolicy


RETRIES: TaskRetries = {
    "retries": 3,
    "retry_delay": dt.timedelta(seconds=10),
    "retry_exponential_backoff": 2.0,  # 10 s, 20 s, 40 s (each plus up to as much jitter), at most max_retry_delay
    "max_retry_delay": dt.timedelta(minutes=5),
    "retry_policy": RETRY_BY_KIND,
}
"""Task arguments of every llmops task (``default_args``): transient errors retried with
exponential backoff, permanent ones failed at once."""


__all__ = ["RETRIES", "RETRY_BY_KIND", "RetryByKind", "TaskRetries"]
