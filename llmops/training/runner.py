"""Run a prepared training job to completion from Python (the CLI, tests, the demo).

The Airflow operator does the same through ``ProcessGroupOperator``; both go through
``llmops.training.process.run_job``: the launcher in its own process group, a lock
against a second launch, the whole tree killed on interrupt.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

from llmops.errors import TransientError
from llmops.records.training import TrainingResult
from llmops.training.job import TrainingJob

PROGRESS_RE = re.compile(r"^\[llmops\] step (?P<step>\d+)/(?P<steps>\d+) (?P<rest>.*)$")


class TrainingFailed(TransientError, RuntimeError):
    """The training processes exited with an error; the message carries the last lines."""


def is_progress(line: str) -> bool:
    return line.startswith("[llmops] ")


def run_training(job: TrainingJob, on_line: Callable[[str], None] | None = None) -> TrainingResult:
    """Run (or resume) ``job`` and return its ``result.json``; a finished job is not rerun.
    The finished run directory gets its manifest (``TrainingJob.finish``)."""
    from llmops.training.process import run_job

    if job.finished:
        if on_line:
            on_line(f"[llmops] {job.kind} {job.name} already finished in {job.run_dir}; not running it again")
        job.finish()
        return job.result()
    tail: deque[str] = deque(maxlen=30)

    def handle(line: str) -> None:
        tail.append(line)
        if on_line:
            on_line(line)

    code = run_job(job.command, env=job.env, cwd=job.run_dir, run_dir=job.run_dir, log_path=job.log_path,
                   on_line=handle, leftovers=job.leftovers)
    if code != 0 or not job.finished:
        errors = [line for line in tail if "Error" in line or "error" in line] or list(tail)[-8:]
        raise TrainingFailed(f"{job.kind} {job.name} failed (exit code {code}); log: {job.log_path}\n"
                             + "\n".join(errors[-8:]))
    job.finish()
    return job.result()


def console_printer(verbose: bool = False) -> Callable[[str], None]:
    """Print llmops progress lines with a progress bar; DeepSpeed's own chatter only with -v
    (it is always in ``train.log``). Tracebacks from the ranks are always shown."""
    from tqdm import tqdm

    state: dict[str, tqdm | None] = {"bar": None}

    def show(line: str) -> None:
        line = line.rstrip("\n")
        match = PROGRESS_RE.match(line)
        bar = state["bar"]
        if match:
            step, steps = int(match["step"]), int(match["steps"])
            if bar is None:
                bar = state["bar"] = tqdm(total=steps, desc="train", unit="step", initial=step, leave=True)
            bar.n = step
            if "val_loss" in line:
                bar.write(line)  # validation lines stay on screen; train lines only update the bar
            else:
                bar.set_postfix_str(match["rest"][:60])
            bar.refresh()
            if step == steps and "val_loss" in line:
                bar.close()
                state["bar"] = None
            return
        if verbose or is_progress(line) or "Error" in line or "Traceback" in line or line.startswith("[rank"):
            (bar.write if bar is not None else print)(line)

    return show
