"""Every record that crosses a process, task or DAG boundary: open this package first.

Each record is a pydantic model that refuses unknown fields and carries a
``schema_version`` (:class:`~llmops.records.base.Record`); a nested part is a
:class:`~llmops.records.common.Ref`. Writers call ``.write(path)`` (atomic) or ``.dump()``
(the JSON an XCom or an Asset event's ``extra`` carries, shown as it is by the Airflow UI
and REST API); readers call ``Record.read(path)`` or ``Record.load(data)``, which validate
and accept the previous version (a file without ``schema_version``: what llmops wrote
before records were typed). A renamed field fails where the file is read, naming it.

Where each hand-off is declared (module: records, and what they hold):

- ``common``: ``InputRef`` / ``OutputRef`` (an input or an output, named by content), ``CodeIdentity``.
- ``stages``: ``StageManifest`` (every ``manifest.json``; inputs are ``StageInput``),
  ``LatestReport`` (``reports/<kind>/latest.json``).
- ``crawl``: ``IndexEntry`` (an ``index.jsonl`` line), ``CrawlSummary``, ``ExtractSummary``,
  ``DroppedRecord`` (``dropped.jsonl`` lines: ``ExtractDropped``, ``CleanDropped``,
  ``DedupDropped``), ``GroundTruth``, ``AccessLogEntry`` and ``PublishedSections`` (the demo site).
- ``data``: the stage summaries (``CleanSummary`` … ``QaSummary``), ``TokenizerStats``,
  ``TokenShardMeta`` (``meta.json``), ``QaPair`` (Q&A lines), ``DataCard``
  (``data_card.json``), ``DataReport`` and ``LatestDataReport`` (the data run's report),
  ``CorpusEvent``, ``QaEvent``, ``TokensEvent`` (``llmops://corpus``, ``qa``, ``tokens``).
- ``training``: ``TrainingJobSpec`` (``job.json``), ``TrainingResult`` (``result.json``),
  ``CheckpointMarker`` (``complete.json``), ``JobLockRecord`` (``job.lock``), ``ModelInfo``
  (``llmops_model.json``) with ``ModelPreset``, ``ExportSummary``; the training tasks' XComs
  ``TrainingJobArgs``, ``TrainedJob``, ``TrainedModel``; ``TrainingReport``.
- ``evaluation``: ``CandidateEvaluation`` / ``AlreadyRegistered`` (the evaluate XCom),
  ``EvaluationReport`` (``metrics.json``), ``GateResult``, ``RegisteredVersion``.
- ``serving``: ``ServedModelInfo`` (Triton's ``model_info.json``), ``DeployResult`` (the deploy
  XCom and ``deploy.json``), ``ServerStatus``, ``ServerPidFile``, ``Answer``.
- ``events``: ``ModelEvent``, ``ChallengerEvent``, ``ChampionEvent`` (``llmops://model``,
  ``challenger``, ``champion``), ``StageOutput`` and ``ShardSpec`` (the data DAG's XComs).
- ``monitoring``: ``DriftReport`` (``drift.json``: verdict, windows of ``Signal``s, service,
  calibration, log stats), ``MetricSnapshot`` (Triton's counters between checks), ``DriftEvent``
  (``llmops://drift``). The inference log's per-request record is declared in
  ``include/triton/inference_log.py`` (the model runs where llmops is not installed).
- ``retrain``: ``RetrainDecision`` (``retrain/decisions.jsonl``: what each ``llmops_retrain`` run
  decided and why), ``RetrainBase`` (the champion a retraining continues from, in the incremental
  data card and ``TokensEvent.retrain``), ``IncrementSummary`` (the new documents), ``RetrainPlan``.
- ``stack``: ``ComponentPidFile`` (a stack component's pid file).
- ``ui``: ``Summary`` (the LLMOps view's ``/llmops/api/summary``: a section per stage, each ``ok``,
  ``empty`` or ``error`` with its reason), ``RetrainRequest`` / ``RollbackRequest`` / ``ActionResult``
  (its actions).

Bump a record's ``schema_version`` default when a field is renamed, removed or changes
meaning, and teach its ``upgrade`` classmethod the step from the previous version.
"""

from llmops.records.base import Record, RecordError

__all__ = ["Record", "RecordError"]
