"""MLflow tracking for training jobs: one MLflow run per Airflow DAG run, one nested run per job.

    experiment cfg.mlflow.experiment
      run  <dag_id>/<run_id>            tags airflow.dag_id, airflow.run_id
        run  <job name>                 tag llmops.job_key, mlflow.parentRunId

Runs are found by tag before they are created, so an Airflow retry, a resumed training
job or a second mapped task of the same DAG run logs into the run that already exists
instead of scattering one job over several runs. The Airflow task resolves the run ids
(``dag_run_parent``, ``job_run``) and hands ``run_id`` + ``tracking_uri`` to the training
process, whose rank 0 logs through ``RunLogger``: nothing else about MLflow crosses the
process boundary, so the trainer needs no Airflow and no configuration.

Where the tracking store is (first that is set wins):
  1. ``cfg.mlflow.tracking_uri`` (``LLMOPS_MLFLOW__TRACKING_URI``);
  2. ``MLFLOW_TRACKING_URI``, the variable every MLflow tool reads, so a deployment that
     already exports it for its workers needs no second setting;
  3. the embedded store ``sqlite:///$LLMOPS_HOME/mlflow.db`` (what ``make mlflow`` serves).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import (
    MAX_DATASET_DIGEST_SIZE,
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from llmops.config import LlmopsConfig
from llmops.errors import TransientError

log = logging.getLogger(__name__)

DAG_ID_TAG = "airflow.dag_id"
RUN_ID_TAG = "airflow.run_id"
JOB_KEY_TAG = "llmops.job_key"
# Runs are looked up by a digest of their identity, not by the identity itself: Airflow run
# ids hold ':' and '+', job keys may hold anything, and a digest never needs quoting in
# MLflow's filter language.
LOOKUP_TAG = "llmops.lookup"
RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
_REMOTE_SCHEMES = ("http", "https", "databricks")


class TrackingError(TransientError, RuntimeError):
    """The MLflow tracking store cannot be reached or refused an operation; names the store."""


# --------------------------------------------------------------------------- where things go

def tracking_uri(cfg: LlmopsConfig) -> str:
    """The tracking store: the config's, else ``MLFLOW_TRACKING_URI``, else the embedded SQLite file."""
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    # cfg.home is absolute, so this is sqlite:////abs/path (the fourth slash is the root).
    return f"sqlite:///{cfg.layout.mlflow_db}"


def artifact_location(cfg: LlmopsConfig) -> str | None:
    """Artifact root for a new experiment; None lets a tracking *server* use its own root.

    A local path handed to a remote server would make every worker write artifacts to its
    own disk, where nobody else can read them; so the ``$LLMOPS_HOME/mlartifacts`` default
    applies only to local stores (SQLite, a database URL, a file store).
    """
    if cfg.mlflow.artifact_location:
        return cfg.mlflow.artifact_location
    if urlsplit(tracking_uri(cfg)).scheme in _REMOTE_SCHEMES:
        return None
    return cfg.layout.mlflow_artifacts.as_uri()


def redact(uri: str) -> str:
    """The URI without its password, for error messages and logs."""
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _failure(uri: str, exc: BaseException) -> str:
    """``exc`` as text with the URI's password masked (MLflow repeats the URL in its errors)."""
    text = f"{type(exc).__name__}: {exc}"
    password = urlsplit(uri).password
    return text.replace(password, "***") if password else text


def connect(uri: str) -> MlflowClient:
    """A client whose store answered a request; raises ``TrackingError`` naming the URI otherwise.

    Without this probe a wrong URI surfaces in the first log call of a training job, after
    the expensive part (launching ranks, loading data) has started.
    """
    try:
        with _sqlite_lock(uri):
            # The registry lives in the same store unless MLFLOW_REGISTRY_URI says otherwise;
            # never MLflow's process-wide default, which other code in the process may have set.
            client = MlflowClient(tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri)
            client.search_experiments(max_results=1)
        return client
    except Exception as exc:  # any failure here means "unreachable"
        raise TrackingError(f"cannot reach the MLflow tracking store {redact(uri)}: {_failure(uri, exc)}") from exc


@contextmanager
def _sqlite_lock(uri: str) -> Iterator[None]:
    """Serialise, across processes, what must not interleave on a SQLite store.

    The first connection of a process creates and migrates the schema; measured with
    MLflow 3.17, three processes doing that at once on a fresh file fail ("Online migration
    expected to match one row", "table _alembic_tmp_tags already exists") and can leave the
    file stuck half-migrated for good. Mapped tasks starting together on a fresh home do
    exactly that. The lock also makes find-or-create of runs atomic (``_find_or_create``).
    """
    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        yield
        return
    db = Path(uri[len("sqlite:///"):].split("?")[0])
    db.parent.mkdir(parents=True, exist_ok=True)  # MLflow creates the file, not its directory
    with open(f"{db}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def download_model(cfg: LlmopsConfig, model_uri: str, dst: Path | None = None) -> Path:
    """Download ``models:/name/version``, ``models:/name@alias`` or ``runs:/...`` from the configured store.

    Through MLflow's public API, changing nothing process-wide: the store's URIs are handed
    to ``mlflow.artifacts.download_artifacts``. For a ``models:/`` URI that is not enough:
    MLflow 3.17 still looks the version up in the process-wide registry whatever
    ``registry_uri`` says (``ModelsArtifactRepository._get_model_uri_infos``; the upstream
    pull request mlflow/mlflow#18313 would pass it through), so the version's location is
    resolved here with a client of this store, and that location is downloaded.
    """
    import mlflow

    uri = tracking_uri(cfg)
    artifact_uri = model_uri
    if model_uri.startswith("models:"):
        match = re.fullmatch(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))(?P<path>/.*)?",
                             model_uri)
        if match is None:
            raise ValueError(f"{model_uri!r}: use models:/<name>/<version> or models:/<name>@<alias>")
        client = connect(uri)
        name = match["name"]
        version = match["version"] or client.get_model_version_by_alias(name, match["alias"]).version
        artifact_uri = client.get_model_version_download_uri(name, version) + (match["path"] or "")
    return Path(mlflow.artifacts.download_artifacts(
        artifact_uri, dst_path=str(dst) if dst else None,
        tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or uri))


def _client(cfg_or_uri: LlmopsConfig | str) -> tuple[MlflowClient, str]:
    uri = cfg_or_uri if isinstance(cfg_or_uri, str) else tracking_uri(cfg_or_uri)
    return connect(uri), uri


# --------------------------------------------------------------------------- experiment and runs

def ensure_experiment(cfg: LlmopsConfig, client: MlflowClient | None = None) -> str:
    """Id of ``cfg.mlflow.experiment``, created with ``artifact_location(cfg)`` when needed."""
    return get_or_create_experiment(client or _client(cfg)[0], cfg.mlflow.experiment, artifact_location(cfg))


def get_or_create_experiment(client: MlflowClient, name: str, location: str | None = None) -> str:
    """Id of experiment ``name``, created (or restored from the bin) when needed.

    Idempotent and safe when several tasks race to create it: the loser of the race gets
    RESOURCE_ALREADY_EXISTS and reads the winner's experiment.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:  # pragma: no cover - deleted between the two calls
                raise
    if experiment.lifecycle_stage == "deleted":
        # A deleted experiment still owns its name; creating another would fail forever.
        log.warning("MLflow experiment %r was deleted; restoring it", name)
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _lookup(kind: str, identity: str) -> str:
    return hashlib.sha256(f"{kind}\0{identity}".encode()).hexdigest()[:32]


def _find_or_create(client: MlflowClient, uri: str, experiment_id: str, lookup: str, run_name: str,
                    tags: dict[str, str]) -> tuple[str, bool]:
    """(run id, created) of the oldest active run carrying ``lookup``; creates one if none.

    Mapped tasks of one DAG run start together and may all miss the parent run. On the
    embedded SQLite store a file lock makes find-then-create atomic. A server or database
    store has no such lock: there each creator re-reads and keeps the oldest run, deleting
    its own if it lost, so creators converge; only a creation that commits after the
    winner's re-read yet carries an earlier start time (a writer stalled between taking its
    timestamp and committing) could still split them.
    """
    def search() -> list[Any]:
        return client.search_runs([experiment_id], filter_string=f"tags.`{LOOKUP_TAG}` = '{lookup}'",
                                  order_by=["attributes.start_time ASC"], max_results=50)

    with _sqlite_lock(uri):
        found = search()
        if found:
            return _oldest(found).info.run_id, False
        run = client.create_run(experiment_id, run_name=run_name, tags={**tags, LOOKUP_TAG: lookup})
        winner = _oldest(search() or [run])
        if winner.info.run_id != run.info.run_id:
            client.delete_run(run.info.run_id)
            return winner.info.run_id, False
        return run.info.run_id, True


def _oldest(runs: list[Any]) -> Any:
    return min(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def dag_run_parent(cfg: LlmopsConfig, dag_id: str, run_id: str) -> str:
    """The MLflow run standing for one Airflow DAG run (found or created); same id every call."""
    client, uri = _client(cfg)
    experiment_id = ensure_experiment(cfg, client)
    parent, _created = _find_or_create(client, uri, experiment_id, _lookup("dag_run", f"{dag_id}\0{run_id}"),
                                       f"{dag_id}/{run_id}", {DAG_ID_TAG: dag_id, RUN_ID_TAG: run_id})
    return parent


def job_run(cfg: LlmopsConfig, job_key: str, name: str, *, parent_run_id: str | None,
            tags: Mapping[str, Any] | None = None) -> str:
    """The MLflow run of one training job, nested under ``parent_run_id``; found by ``job_key``.

    ``job_key`` identifies the job's work (e.g. its stage key), not the attempt: an Airflow
    retry or a resumed job gets the same run, set back to RUNNING, so its curves continue
    where they stopped. ``tags`` are (re)applied on every call. A job resumed under a later
    DAG run keeps its first parent (that is where it started) and records the new one in
    ``llmops.resumed_under``.
    """
    client, uri = _client(cfg)
    experiment_id = ensure_experiment(cfg, client)
    base = {_key(k): _clip(str(v), MAX_TAG_VAL_LENGTH) for k, v in {JOB_KEY_TAG: job_key, **(tags or {})}.items()}
    if parent_run_id:
        base[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run_id, created = _find_or_create(client, uri, experiment_id, _lookup("job", job_key), name, base)
    if not created:
        run = client.get_run(run_id)
        update = dict(base)
        if parent_run_id and run.data.tags.get(MLFLOW_PARENT_RUN_ID, parent_run_id) != parent_run_id:
            update.pop(MLFLOW_PARENT_RUN_ID)
            update["llmops.resumed_under"] = parent_run_id
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in update.items()])
        if run.info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
    return run_id


# --------------------------------------------------------------------------- logging from any process

def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"loop": {"lr": 1e-3}}`` -> ``{"loop.lr": 1e-3}``: MLflow params are flat strings."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


_BAD_KEY = re.compile(r"[^\w\-. /:]")


def _key(key: str) -> str:
    # MLflow accepts letters, digits, _ - . space / and (off Windows) ':'; anything else
    # would fail the whole batch, so it becomes '_'.
    return _BAD_KEY.sub("_", key)[:MAX_ENTITY_KEY_LENGTH]


class RunLogger:
    """Logs params, metrics, artifacts and inputs to one existing run, from any process.

    Only ``run_id`` and ``tracking_uri`` are needed, so the training process's rank 0 can
    build one from its job file. Metrics are buffered and written with ``log_batch``
    (every ``flush_every`` values or ``flush_interval_s`` seconds, and on ``flush``/``close``/
    ``end``): one database round trip per step would slow a fast CPU loop down noticeably.
    """

    def __init__(self, run_id: str, tracking_uri: str, *, flush_every: int = 200,
                 flush_interval_s: float = 10.0, max_buffer: int = 100_000) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.flush_every = max(1, min(flush_every, MAX_METRICS_PER_BATCH))
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self.client = connect(tracking_uri)
        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            raise TrackingError(f"MLflow run {run_id} not found in {redact(tracking_uri)}: "
                                f"{_failure(tracking_uri, exc)}") from exc
        # Params are immutable in MLflow; remembering what is logged lets a resumed job skip
        # the unchanged ones and warn about changed ones instead of failing the batch.
        self._params: dict[str, str] = dict(run.data.params)
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self._failing = False

    @classmethod
    def from_mapping(cls, job: Mapping[str, Any], **kwargs: Any) -> RunLogger:
        """From a job file's ``{"run_id": ..., "tracking_uri": ...}``."""
        return cls(job["run_id"], job["tracking_uri"], **kwargs)

    # -- params and tags

    def log_params(self, params: Mapping[str, Any]) -> dict[str, str]:
        """Log nested params with dotted keys; returns the ones newly written.

        A param already logged with the same value is skipped; one with a different value
        (a resumed job whose config changed) is skipped with a warning, because MLflow
        refuses to change a param and that must not kill a training job.
        """
        new: dict[str, str] = {}
        for key, value in flatten(params).items():
            key, text = _key(key), _clip(str(value), MAX_PARAM_VAL_LENGTH)
            old = self._params.get(key)
            if old is None:
                new[key] = text
            elif old != text:
                log.warning("MLflow param %r stays %r (MLflow params cannot change); ignoring new value %r",
                            key, _clip(old, 80), _clip(text, 80))
        items = [Param(k, v) for k, v in new.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self._call("log params", self.client.log_batch, self.run_id, params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])
        self._params |= new
        return new

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(_key(k), _clip(str(v), MAX_TAG_VAL_LENGTH)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self._call("set tags", self.client.log_batch, self.run_id, tags=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    # -- metrics

    def log_metrics(self, metrics: Mapping[str, float | int], step: int) -> None:
        """Buffer one step's metrics; NaN and infinities are dropped with a warning.

        A diverged loss is worth a warning in the task log, but MLflow stores NaN as a
        value that breaks its charts, and the training loop decides what divergence means.
        """
        now_ms = int(time.time() * 1000)
        for key, value in metrics.items():
            if value is None or isinstance(value, bool):
                continue
            value = float(value)
            if not math.isfinite(value):
                log.warning("not logging %s=%s at step %d to MLflow (not finite)", key, value, step)
                continue
            self._buffer.append(Metric(_key(key), value, now_ms, int(step)))
        if len(self._buffer) > self.max_buffer:
            dropped = len(self._buffer) - self.max_buffer
            log.warning("MLflow metric buffer full (store unreachable?): dropping the %d oldest values", dropped)
            del self._buffer[:dropped]
        waited = time.monotonic() - self._last_flush >= self.flush_interval_s
        # After a failed flush, wait the interval out: a server that is down can take
        # minutes per attempt (MLflow's HTTP retries), which must not happen every step.
        if waited or (len(self._buffer) >= self.flush_every and not self._failing):
            self.flush(raise_on_error=False)

    def flush(self, *, raise_on_error: bool = True) -> None:
        """Write buffered metrics. On failure the values stay buffered for the next flush.

        Periodic flushes only warn, so a tracking server restarting mid-training costs
        freshness, not the job; ``close``/``end`` raise if the values still cannot be written.
        """
        self._last_flush = time.monotonic()
        while self._buffer:
            chunk = self._buffer[:MAX_METRICS_PER_BATCH]
            try:
                self._call("log metrics", self.client.log_batch, self.run_id, metrics=chunk)
            except TrackingError as exc:
                self._failing = True
                if raise_on_error:
                    raise
                log.warning("%s; keeping %d values for the next flush", exc, len(self._buffer))
                return
            del self._buffer[:len(chunk)]
        self._failing = False

    # -- artifacts and inputs

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """A file, or every file under a directory."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact {path} does not exist")
        log_fn = self.client.log_artifacts if path.is_dir() else self.client.log_artifact
        self._call(f"log artifact {path.name}", log_fn, self.run_id, str(path), artifact_path)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """``obj`` as JSON (or YAML for a .yaml/.yml name) under ``artifact_file``."""
        self._call(f"log {artifact_file}", self.client.log_dict, self.run_id, obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._call(f"log {artifact_file}", self.client.log_text, self.run_id, text, artifact_file)

    def log_dataset_inputs(self, datasets: Iterable[Mapping[str, Any]]) -> None:
        """Record what the job read as MLflow dataset inputs (the run's "Datasets used").

        Each mapping has ``name``, ``digest`` (a content hash) and ``source`` (a path or URI),
        optionally ``context`` (default ``training``) and any other keys, which go into the
        dataset's profile. MLflow keeps at most 36 characters of a digest, so the full hash
        is in the profile and in the input tag ``llmops.digest``. Logging the same dataset
        again (a retry) adds nothing: MLflow deduplicates by name and digest.
        """
        inputs = []
        for ds in datasets:
            missing = {"name", "digest", "source"} - set(ds)
            if missing:
                raise ValueError(f"dataset input {dict(ds)!r} lacks {sorted(missing)}")
            digest, context = str(ds["digest"]), str(ds.get("context", "training"))
            source_type, source = _dataset_source(str(ds["source"]))
            profile = {k: v for k, v in ds.items() if k not in ("name", "source", "context")}
            entity = Dataset(name=str(ds["name"]), digest=digest[:MAX_DATASET_DIGEST_SIZE],
                             source_type=source_type, source=source,
                             profile=json.dumps(profile, sort_keys=True, default=str))
            tags = [InputTag("mlflow.data.context", context), InputTag("llmops.digest", _clip(digest, 500))]
            inputs.append(DatasetInput(entity, tags))
        if inputs:
            self._call("log dataset inputs", self.client.log_inputs, self.run_id, datasets=inputs)

    # -- the end

    def close(self) -> None:
        """Flush; the run stays open (another process or attempt may still log to it)."""
        self.flush()

    def end(self, status: RunStatus = "FINISHED") -> None:
        """Flush and mark the run FINISHED, FAILED or KILLED."""
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise ValueError(f"status must be FINISHED, FAILED or KILLED, got {status!r}")
        self.close()
        self._call(f"end run as {status}", self.client.set_terminated, self.run_id, status)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Ends the run: FINISHED, KILLED on Ctrl-C/SIGTERM-as-exception, FAILED on an error."""
        if exc_type is None:
            self.end("FINISHED")
        else:
            status: RunStatus = "KILLED" if issubclass(exc_type, (KeyboardInterrupt, SystemExit)) else "FAILED"
            try:
                self.end(status)
            except Exception:  # never hide the training error behind a tracking one
                log.exception("could not mark MLflow run %s as %s", self.run_id, status)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # MlflowException, connection, SQL and disk errors alike
            raise TrackingError(f"MLflow {what} for run {self.run_id} in {redact(self.tracking_uri)} "
                                f"failed: {_failure(self.tracking_uri, exc)}") from exc


def _dataset_source(uri: str) -> tuple[str, str]:
    """(source_type, source JSON) the way MLflow's own dataset sources write them."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    try:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(uri)
        return source._get_source_type(), source.to_json()
    except Exception:  # noqa: BLE001 - no resolver (e.g. llmops://tokens): kept as it is
        return "external", json.dumps({"uri": uri})


# --------------------------------------------------------------------------- system metrics

class SystemMetrics:
    """Handle of a running system-metrics sampler; ``stop()`` flushes and ends it (idempotent)."""

    def __init__(self, monitor: Any) -> None:
        self._monitor = monitor

    def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_system_metrics(run_id: str, tracking_uri: str, *, interval_s: float = 5.0,
                         node_id: str | None = None) -> SystemMetrics:
    """Sample CPU, memory, disk, network (and GPU with ``nvidia-ml-py``) into ``system/...``.

    MLflow's default of 10 s gives a one-minute CPU job six points; 5 s shows its shape.
    Steps continue after the run's last ``system/`` step, so a resumed job appends instead
    of overwriting. ``node_id`` separates the machines of a multi-node job
    (``system/<node_id>/...``). The sampler is a daemon thread of the calling process and
    stops by itself once the run is no longer RUNNING.
    """
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    connect(tracking_uri)
    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, samples_before_logging=1,
                                   resume_logging=True, node_id=node_id, tracking_uri=tracking_uri)
    monitor.start()
    return SystemMetrics(monitor)
