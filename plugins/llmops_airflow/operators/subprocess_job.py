"""An operator that runs a multi-process job (the DeepSpeed launcher and its ranks) as one unit.

The job runs in its own process group under ``llmops.training.process``: its output
streams into the task log line by line, a second try on the same run directory while
the first job lives fails instead of running twice, and every way the task can end
stops the whole job:

* ``execution_timeout``: the task SDK raises AirflowTaskTimeout from its SIGALRM handler
  inside ``execute``; ``run_job`` kills the group before the exception leaves it.
* The task is marked failed or cleared, or its heartbeat is lost: the supervisor sends
  the task process SIGTERM, which calls ``on_kill``, and SIGKILL 5 s later. SIGKILL of
  the task process (or the OOM killer) fires the job leader's parent death signal, and
  the leader stops the job by itself. A KeyboardInterrupt is handled like the timeout.
"""

from __future__ import annotations

import collections
import shlex
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from llmops.training.process import (
    DEFAULT_GRACE_S,
    JobSpec,
    ProcessGroupJob,
    describe_exit_code,
    run_job,
)
from llmops_airflow.errors import RETRY_BY_KIND


class ProcessGroupOperator(BaseOperator):
    """Run the job ``build_job`` describes; its exit code decides the task's state.

    Subclasses implement ``build_job(context) -> JobSpec`` and, to hand something to
    downstream tasks, ``on_success(context, spec)`` (its return value is the XCom). An llmops
    error they raise is handled by its kind (``RETRY_BY_KIND``, the default ``retry_policy``
    of these operators in any DAG): a permanent one fails the task at once, a transient one
    is retried.

    :param extra_env: templated variables added to the job's environment, e.g.
        ``{"LLMOPS_RUN_ID": "{{ run_id }}"}``.
    :param kill_grace_s: how long the job may take to exit after SIGTERM before it is
        SIGKILLed. The supervisor SIGKILLs the task process 5 s after its SIGTERM; a
        longer grace still ends with nothing left (the job leader finishes the job),
        only the task log misses the end of it.
    :param tail_lines: how many of the last output lines a failure's message carries.
    """

    template_fields: Sequence[str] = ("extra_env",)
    ui_color = "#f3e0c7"

    def __init__(self, *, extra_env: dict[str, str] | None = None, kill_grace_s: float = DEFAULT_GRACE_S,
                 tail_lines: int = 20, **kwargs: Any) -> None:
        kwargs.setdefault("retry_policy", RETRY_BY_KIND)
        super().__init__(**kwargs)
        self.extra_env = extra_env or {}
        self.kill_grace_s = kill_grace_s
        self.tail_lines = tail_lines
        self._process_job: ProcessGroupJob | None = None

    def build_job(self, context: Any) -> JobSpec:
        """The command, environment, directories and log file of this try's job."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_job(context) -> JobSpec")

    def on_success(self, context: Any, spec: JobSpec) -> Any:
        """Called after the job exited 0; the return value becomes the task's XCom."""
        return None

    def execute(self, context: Any) -> Any:
        spec = self.build_job(context)
        env = {**spec.env, **{k: str(v) for k, v in self.extra_env.items()}}
        self.log.info("Running job in %s (log %s): %s", spec.cwd, spec.log_path, shlex.join(spec.command))
        tail: collections.deque[str] = collections.deque(maxlen=self.tail_lines)

        def on_line(line: str) -> None:
            tail.append(line)
            self.log.info("%s", line)

        # JobAlreadyRunning (a previous try's job still stopping, or one started by hand) is
        # transient: the retry policy retries it with backoff.
        try:
            code = run_job(spec.command, run_dir=spec.run_dir, env=env, cwd=spec.cwd, log_path=spec.log_path,
                           on_line=on_line, on_start=self._started, grace_s=self.kill_grace_s,
                           leftovers=spec.leftovers)
        finally:
            self._process_job = None
        if code != 0:
            raise AirflowException(
                f"job {describe_exit_code(code)}: {shlex.join(spec.command)}\n"
                f"last {len(tail)} lines of output (all of it in {spec.log_path}):\n" + "\n".join(tail))
        return self.on_success(context, spec)

    def on_kill(self) -> None:
        """Stop the whole job (the task was stopped from outside, or timed out)."""
        job = self._process_job
        if job is not None:
            self.log.info("Killing the job (process group %s)", job.pgid)
            job.kill(self.kill_grace_s)

    def _started(self, job: ProcessGroupJob) -> None:
        self._process_job = job
        self.log.info("Job started: process group %s, lock %s", job.pgid, job.lock.path)
