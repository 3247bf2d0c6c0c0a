"""``DeepSpeedTrainingOperator``: one pretraining or fine-tuning job as an Airflow task.

(Not named ``deepspeed.py``: Airflow imports every file of the plugins folder under its
bare file name, and a module called ``deepspeed`` would shadow the real package.)

The job (inputs checked, run directory, ``job.json``, ``deepspeed`` command) is prepared
by ``llmops.training.job``; ``ProcessGroupOperator`` runs it in its own process group,
streams its output into the task log, kills the whole tree on ``on_kill`` or
``execution_timeout``, and refuses to start while an earlier attempt still lives.
A retry lands in the same run directory (it is keyed by inputs and config) and the
ranks resume from the newest complete checkpoint; a finished job is not run again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from llmops.records.training import TrainedJob, TrainingJobArgs
from llmops_airflow.config import config_from_params
from llmops_airflow.operators.subprocess_job import ProcessGroupOperator

if TYPE_CHECKING:
    from llmops.training.job import TrainingJob
    from llmops.training.process import JobSpec


class DeepSpeedTrainingOperator(ProcessGroupOperator):
    """Run ``llmops.training`` job ``kind`` with the DAG run's Params applied to the config.

    :param kind: ``pretrain`` or ``finetune``.
    :param job_args: templated, read as a ``TrainingJobArgs`` record: for pretrain ``{"data_card": path}``
        (or ``{"tokens": path}``; ``"init"``: continue from a model's weights), for finetune
        ``{"variant": name, "base": model dir or models:/ URI, "data_card": path}``; both take
        ``"mlflow_parent"`` (the DAG run's MLflow run id).
        ``"skip": reason`` skips. The task's XCom is a ``TrainedJob``.
    :param param_to_config: DAG Param name -> dotted llmops config key.
    """

    template_fields: Sequence[str] = (*ProcessGroupOperator.template_fields, "job_args")
    ui_color = "#ffd8b1"

    def __init__(self, *, kind: Literal["pretrain", "finetune"], job_args: Mapping[str, Any] | None = None,
                 param_to_config: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in ("pretrain", "finetune"):
            raise ValueError(f"kind must be 'pretrain' or 'finetune', got {kind!r}")
        self.kind = kind
        self.job_args = job_args or {}
        self.param_to_config = param_to_config or {}
        self._job: TrainingJob | None = None

    def _prepare(self, context: Any) -> TrainingJob:
        # Bad settings or inputs raise permanent errors here, before any process starts:
        # the task fails at once (RETRY_BY_KIND, see ProcessGroupOperator).
        from llmops.training.job import prepare_finetune, prepare_pretrain

        args = self._args()
        cfg = config_from_params(context["params"], self.param_to_config)
        if self.kind == "pretrain":
            return prepare_pretrain(cfg, data_card=args.data_card, tokens=args.tokens,
                                    mlflow_parent=args.mlflow_parent, init=args.init)
        return prepare_finetune(cfg, variant=args.variant, base=args.base, data_card=args.data_card,
                                mlflow_parent=args.mlflow_parent, retraining=args.retraining)

    def _args(self) -> TrainingJobArgs:
        return TrainingJobArgs.load(self.job_args, source=f"{self.task_id}'s job_args")

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowSkipException

        skip = self._args().skip
        if skip:
            raise AirflowSkipException(skip)
        job = self._job = self._prepare(context)
        for note in job.notes:
            self.log.warning("%s", note)
        self.log.info("%s %s: run directory %s (%d rank(s))", job.kind, job.name, job.run_dir,
                      job.spec.launch.world_size)
        if job.finished:
            self.log.info("this job (same inputs, settings and code) already finished in %s: reusing its result, "
                          "not training again", job.run_dir)
            return self._trained(job).dump()
        return super().execute(context)

    def build_job(self, context: Any) -> JobSpec:
        if self._job is None:
            self._job = self._prepare(context)
        return self._job.process_spec()

    def on_success(self, context: Any, spec: Any) -> Any:
        from airflow.sdk.exceptions import AirflowException

        job = self._job
        assert job is not None, "on_success runs after build_job"
        if not job.finished:
            raise AirflowException(f"the training processes exited cleanly but {job.result_path} is missing")
        return self._trained(job).dump()

    @staticmethod
    def _trained(job: TrainingJob) -> TrainedJob:
        """The task's XCom (dumped to JSON); the run directory gets its manifest first."""
        job.finish()
        return job.trained()
