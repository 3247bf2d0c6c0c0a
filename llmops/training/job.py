"""A training job, prepared: inputs checked, run directory chosen, ``job.json`` written,
the ``deepspeed`` launcher command built. Nothing here starts a process; every check
that can fail without one fails here, with a message that says what to fix.

The run directory is keyed by (the stage version, the content of the inputs, the
config), like every llmops stage output: a relaunch of the same job (an Airflow retry,
a second ``llmops train``, a later data run whose shards did not change) lands in the
same directory and resumes from its newest complete checkpoint, and a finished job
(``result.json`` present) is not run again. The code's identity is recorded in
``job.json`` but is not keyed: a fix in the CLI between a failed try and its retry
must not restart a long job at step 0. A change that alters what training produces
bumps ``STAGE_VERSIONS["pretrain"]`` / ``["finetune"]`` in ``llmops.artifacts``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops.artifacts import (
    MANIFEST,
    StageResult,
    code_identity,
    code_version,
    file_sha256,
    finish_in_place,
    input_ref,
    key_view,
    read_manifest,
    stable_hash,
    stage_version,
)
from llmops.config import REPO_ROOT, FinetuneConfig, LlmopsConfig, PretrainConfig
from llmops.errors import PermanentError
from llmops.records.base import RecordError
from llmops.records.common import InputRef
from llmops.records.data import TokenShardMeta
from llmops.records.stages import StageManifest
from llmops.records.training import (
    UNKEYED_LOOP_FIELDS,
    Device,
    FinetuneDataSpec,
    FinetuneModelSpec,
    Kind,
    LaunchSpec,
    Lineage,
    MlflowRunRef,
    ModelInfo,
    Precision,
    PretrainDataSpec,
    PretrainModelSpec,
    TrainedJob,
    TrainingJobSpec,
    TrainingResult,
)
from llmops.training.checkpoint import CHECKPOINTS
from llmops.training.deepspeed_config import build_deepspeed_config, resolve_precision
from llmops.training.export import model_digest, tokenizer_digest
from llmops.training.model import INIT_INPUT, load_preset

if TYPE_CHECKING:
    from llmops.training.process import JobSpec

JOB_FILE = TrainingJobSpec.NAME
RESULT_FILE = TrainingResult.NAME
LOG_FILE = "train.log"
SHM_DIR = "/dev/shm"
WORKER_MODULE = "llmops.training.worker"


class PreflightError(PermanentError, ValueError):
    """The job cannot start: missing inputs, inconsistent tokenizer, bad config, too many ranks."""


@dataclass
class TrainingJob:
    """A prepared job: what to run and where."""

    kind: Kind
    name: str
    run_dir: Path
    spec: TrainingJobSpec
    command: list[str]
    env: dict[str, str]
    hostfile: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def leftovers(self) -> list[str]:
        """What the ranks leave behind on this host: on CPU, DeepSpeed's shared-memory
        all-reduce buffers (``/dev/shm/deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank>``,
        66 MB per rank, never unlinked by DeepSpeed). A local job's port is its own, so
        its buffers are told apart from another job's."""
        if self.hostfile is not None or self.spec.launch.device != "cpu":
            return []
        port = self.command[self.command.index("--master_port") + 1]
        return [f"{SHM_DIR}/deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"]

    @property
    def job_file(self) -> Path:
        return self.run_dir / JOB_FILE

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    @property
    def result_path(self) -> Path:
        return self.run_dir / RESULT_FILE

    @property
    def finished(self) -> bool:
        return self.result_path.exists()

    def result(self) -> TrainingResult:
        return TrainingResult.read(self.result_path)

    def trained(self) -> TrainedJob:
        """The finished job as the training task hands it on."""
        result = self.result()
        return TrainedJob(kind=self.kind, name=self.name, run_dir=str(self.run_dir),
                          first_val_loss=result.first_val_loss, final_val_loss=result.final_val_loss,
                          steps=result.steps, mlflow_run_id=result.mlflow_run_id)

    def finish(self) -> StageResult:
        """The finished run recorded like every keyed output: its ``manifest.json``, written
        once, after ``result.json`` (which stays what says "finished"), with the run's key.

        A run is named by its key, not by a digest of its files: training is not
        bit-reproducible across machines, and export is keyed by the run's key.
        """
        if (self.run_dir / MANIFEST).exists():
            return StageResult.from_path(self.run_dir)
        spec = self.spec
        summary = self.result().model_dump(mode="json", exclude={"schema_version"})
        config = keyed_config(spec.loop, spec.deepspeed, spec.model, spec.data, spec.inputs,
                              spec.launch.activation_checkpointing)
        return finish_in_place(self.run_dir, self.kind, spec.key, spec.inputs, config, summary,
                               digest=lambda _: spec.key, version=spec.version, unlisted=frozenset({CHECKPOINTS}))

    def process_spec(self) -> JobSpec:
        """The ``JobSpec`` that ``llmops.training.process.run_job`` and the operator run."""
        from llmops.training.process import JobSpec

        return JobSpec(command=self.command, env=self.env, cwd=self.run_dir, run_dir=self.run_dir,
                       leftovers=self.leftovers,
                       log_path=self.log_path)


# ---- inputs ------------------------------------------------------------------------

@dataclass(frozen=True)
class DataInputs:
    """What a finished data pipeline run gives training."""

    tokens: Path
    tokenizer: Path
    qa: Path | None
    """The Q&A set's directory (None when only token shards were named)."""
    data_card: InputRef | None
    """The data card, for lineage (None when only token shards were named)."""


def resolve_data_inputs(cfg: LlmopsConfig, data_card: str | Path | None = None,
                        tokens: str | Path | None = None) -> DataInputs:
    """Token shards, tokenizer, Q&A set and data card of a finished data pipeline run.

    ``data_card`` (a data-card stage directory) names all four at once; ``tokens`` alone
    works too (the tokenizer comes from the shards' manifest). With neither, the newest
    data card under ``$LLMOPS_HOME`` is used.
    """
    from llmops.artifacts import latest_output

    if tokens is None:
        card_dir = Path(data_card) if data_card else latest_output(cfg.home, "data_card")
        if card_dir is None:
            raise PreflightError(f"no data card under {cfg.layout.stage_dir('data_card')}: run the llmops_data DAG "
                                 f"(or `llmops data run`) first, or pass --tokens")
        if not (card_dir / MANIFEST).exists():
            raise PreflightError(f"{card_dir} is not a finished data card (no {MANIFEST})")
        manifest = read_manifest(card_dir)
        return DataInputs(tokens=_input_path(manifest, "tokens", card_dir),
                          tokenizer=_input_path(manifest, "tokenizer", card_dir),
                          qa=_input_path(manifest, "qa", card_dir),
                          data_card=InputRef(path=str(card_dir), hash=manifest.key, output_hash=manifest.output_hash))
    tokens = Path(tokens)
    if not (tokens / MANIFEST).exists():
        raise PreflightError(f"token shards {tokens} not found (no {MANIFEST}): run the data pipeline first")
    tok_input = _input_path(read_manifest(tokens), "tokenizer", tokens)
    return DataInputs(tokens=tokens, tokenizer=tok_input.parent if tok_input.suffix == ".json" else tok_input,
                      qa=None, data_card=None)


def _input_path(manifest: StageManifest, name: str, where: Path) -> Path:
    """The path of input ``name`` of a stage output (each stage names its own inputs)."""
    if name not in manifest.inputs:
        raise PreflightError(f"{where} names no {name} input in its {MANIFEST}")
    return Path(InputRef.model_validate(manifest.inputs[name]).path)


def check_token_shards(tokens: Path, tokenizer_dir: Path) -> TokenShardMeta:
    """The shards' ``meta.json``, after checking shards exist and match the tokenizer."""
    tokens, tokenizer_dir = Path(tokens), Path(tokenizer_dir)
    meta_path = tokens / TokenShardMeta.NAME
    missing = [p.name for p in (meta_path, tokens / "train.bin", tokens / "train.idx.npy",
                                tokens / "validation.bin") if not p.exists()]
    if missing:
        raise PreflightError(f"token shards in {tokens} are missing {missing}: run the encode stage first")
    meta = TokenShardMeta.read(meta_path)
    if any(meta.splits[split].n_tokens == 0 for split in ("train", "validation")):
        raise PreflightError(f"token shards in {tokens} have an empty split: {meta.splits}")
    tok_file = tokenizer_dir / "tokenizer.json"
    if not tok_file.exists():
        raise PreflightError(f"tokenizer {tok_file} not found")
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tok_file)).get_vocab_size(with_added_tokens=True)
    if vocab != meta.vocab_size:
        raise PreflightError(f"vocabulary mismatch: the shards in {tokens} were encoded with a {meta.vocab_size}"
                             f"-token vocabulary, the tokenizer {tok_file} has {vocab}")
    if file_sha256(tok_file) != meta.tokenizer_sha256:
        raise PreflightError(f"tokenizer mismatch: {tok_file} is not the tokenizer the shards in {tokens} were "
                             f"encoded with (SHA-256 differs from {TokenShardMeta.NAME})")
    return meta


def available_devices() -> tuple[Device, int]:
    """("gpu", count) when CUDA devices exist, else ("cpu", usable cores)."""
    import torch

    if torch.cuda.is_available():
        return "gpu", torch.cuda.device_count()
    return "cpu", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


MULTI_NODE_PORT = 29500
"""The rendezvous port of a multi-node job when ``deepspeed.master_port`` is 0 (DeepSpeed's default)."""


def pick_port(preferred: int) -> int:
    """``preferred`` if free, else a free one: two local jobs (mapped fine-tunes) must
    not meet at the same rendezvous port."""
    if preferred and _port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_hosts(hosts: list[str]) -> list[tuple[str, int]]:
    out = []
    for entry in hosts:
        host, _, slots = entry.partition(":")
        if not host or (slots and not slots.isdigit()):
            raise PreflightError(f"deepspeed.hosts entry {entry!r} must look like 'worker-0:4'")
        out.append((host, int(slots) if slots else 1))
    return out


def cluster_nodes(cfg: LlmopsConfig) -> list[tuple[str, int]] | None:
    """``[(host, slots)]`` of a multi-node job (from ``deepspeed.hostfile`` or ``hosts``); None when local."""
    ds = cfg.deepspeed
    if not (ds.hosts or ds.hostfile):
        return None
    if ds.hostfile:
        hostfile = Path(ds.hostfile)
        if not hostfile.exists():
            raise PreflightError(f"deepspeed.hostfile {hostfile} does not exist")
        nodes = []
        for line in hostfile.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                host, _, slots = line.partition(" slots=")
                if not slots.strip().isdigit():
                    raise PreflightError(f"{hostfile}: line {line!r} must look like 'worker-0 slots=4'")
                nodes.append((host.strip(), int(slots)))
    else:
        nodes = parse_hosts(ds.hosts)
    if not nodes:
        raise PreflightError("the hostfile lists no node")
    return nodes


def world_size(cfg: LlmopsConfig) -> int:
    nodes = cluster_nodes(cfg)
    if nodes is None:
        return cfg.deepspeed.ranks
    return min(cfg.deepspeed.ranks, min(n for _, n in nodes)) * len(nodes)


def launcher_command(cfg: LlmopsConfig, job_file: Path, run_dir: Path, *, port: int
                     ) -> tuple[list[str], Path | None, int]:
    """``(command, hostfile, world_size)`` for the ``deepspeed`` runner."""
    ds = cfg.deepspeed
    cmd = [sys.executable, "-u", "-m", "deepspeed.launcher.runner"]
    hostfile: Path | None = None
    nodes = cluster_nodes(cfg)
    if nodes is not None:
        if ds.hostfile:
            hostfile = Path(ds.hostfile)
        else:
            hostfile = run_dir / "hostfile"
            hostfile.write_text("".join(f"{h} slots={n}\n" for h, n in nodes))
        per_node = min(ds.ranks, min(n for _, n in nodes))
        cmd += ["--hostfile", str(hostfile), "--num_nodes", str(len(nodes)), "--num_gpus", str(per_node),
                "--master_addr", ds.master_addr or nodes[0][0], "--master_port", str(ds.master_port or MULTI_NODE_PORT),
                "--launcher", ds.launcher]
    else:
        cmd += ["--num_gpus", str(ds.ranks), "--master_port", str(port)]
    cmd += ["--no_local_rank", "--module", WORKER_MODULE, "--job", str(job_file)]
    return cmd, hostfile, world_size(cfg)


# ---- preparing a job ---------------------------------------------------------------

def _job_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    # The worker is imported by module name on every node: make the checkout importable.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def prepare_job(cfg: LlmopsConfig, kind: Kind, *, name: str, inputs: dict[str, InputRef],
                model: PretrainModelSpec | FinetuneModelSpec, data: PretrainDataSpec | FinetuneDataSpec,
                tokenizer: Path, lineage: Lineage | None = None, mlflow_parent: str | None = None,
                track: bool = True) -> TrainingJob:
    """Write ``job.json`` into the keyed run directory and build the launcher command.

    ``inputs`` name what the job reads, each with a content hash; ``lineage`` (the data
    card, where a base model came from) is recorded, not keyed.
    """
    loop = cfg.pretrain if kind == "pretrain" else cfg.finetune
    device, n_devices = available_devices()
    local = not (cfg.deepspeed.hosts or cfg.deepspeed.hostfile)
    if local and cfg.deepspeed.ranks > n_devices:
        what = "GPUs" if device == "gpu" else "CPU cores"
        raise PreflightError(f"deepspeed.ranks={cfg.deepspeed.ranks} but this machine has {n_devices} {what}; "
                             f"lower the ranks (LLMOPS_DEEPSPEED__RANKS) or add a hostfile for more nodes")
    import torch

    cuda = device == "gpu"
    requested = resolve_precision(cfg.deepspeed.precision, cuda, cuda and torch.cuda.is_bf16_supported())
    threads = cfg.deepspeed.threads_per_rank or max(1, n_devices // cfg.deepspeed.ranks if not cuda else 4)

    world = world_size(cfg)
    ds_config = build_deepspeed_config(cfg.deepspeed, loop, world_size=world, precision=requested)
    # What the user's config file may have changed wins: it is what the engine will do.
    zero_stage = int(ds_config.get("zero_optimization", {}).get("stage", 0))
    precision: Precision = ("bf16" if ds_config.get("bf16", {}).get("enabled") else
                            "fp16" if ds_config.get("fp16", {}).get("enabled") else "fp32")

    # The key: the stage version, the inputs by content and the settings that determine the result.
    config = keyed_config(loop, ds_config, model, data, inputs, cfg.deepspeed.activation_checkpointing)
    key = stable_hash({"kind": kind, "version": stage_version(kind), "inputs": key_view(inputs), "config": config})
    run_dir = cfg.layout.run_dir(kind, name, key)
    run_dir.mkdir(parents=True, exist_ok=True)
    job_file = run_dir / JOB_FILE

    port = pick_port(cfg.deepspeed.master_port) if local else cfg.deepspeed.master_port
    command, hostfile, world = launcher_command(cfg, job_file, run_dir, port=port)
    finished = (run_dir / RESULT_FILE).exists() and job_file.exists()
    if finished:  # keep its record as it is (and its MLflow run closed)
        mlflow = TrainingJobSpec.read(job_file).mlflow
    else:
        mlflow = _mlflow_run(cfg, kind, name, key, run_dir, mlflow_parent) if track else None

    spec = TrainingJobSpec(
        kind=kind, name=name, key=key, run_dir=str(run_dir), inputs=inputs, lineage=lineage or Lineage(),
        model=model, data=data, tokenizer=str(tokenizer),
        # As keyed: the stored record holds no variants, so it reads back equal.
        loop=type(loop).model_validate(config["loop"]),
        finetune=FinetuneConfig.model_validate(cfg.finetune.model_dump(exclude={"variants"}))
        if kind == "finetune" else None,
        deepspeed=ds_config,
        launch=LaunchSpec(world_size=world, ranks_per_node=world if local else cfg.deepspeed.ranks,
                          nodes=1 if local else len(cfg.deepspeed.hosts) or None, device=device,
                          precision=precision, threads_per_rank=threads,
                          activation_checkpointing=cfg.deepspeed.activation_checkpointing,
                          zero_stage=zero_stage, timeout_s=cfg.deepspeed.timeout_s, command=command),
        mlflow=mlflow, version=stage_version(kind), code_version=code_version(), code=code_identity())
    if not finished:
        spec.write(job_file)
    return TrainingJob(kind, name, run_dir, spec, command, _job_env(threads), hostfile)


def keyed_config(loop: PretrainConfig | FinetuneConfig, deepspeed: dict[str, Any],
                 model: PretrainModelSpec | FinetuneModelSpec, data: PretrainDataSpec | FinetuneDataSpec,
                 inputs: dict[str, InputRef], activation_checkpointing: bool) -> dict[str, Any]:
    """The settings that key a run (free-form, as a manifest's ``config``): what determines
    the result. The resolved DeepSpeed config is in it (world size, ZeRO stage, precision, a
    user file's contents); ports and host names are not, nor are the other fine-tuning
    variants, the data card or the code's identity. Inputs count by content; a setting
    naming an input by its path (``data.tokens``, ``model.base``) counts through that input."""
    def settings(part: PretrainModelSpec | FinetuneModelSpec | PretrainDataSpec | FinetuneDataSpec):
        # Every field, an unset one (``pad_id``) as None: the form keys were computed from.
        return {name: getattr(part, name) for name in type(part).model_fields if name not in inputs}

    return {"loop": loop.model_dump(mode="json", exclude=set(UNKEYED_LOOP_FIELDS)), "deepspeed": deepspeed,
            "model": settings(model), "activation_checkpointing": activation_checkpointing, "data": settings(data)}


def _mlflow_run(cfg: LlmopsConfig, kind: Kind, name: str, key: str, run_dir: Path,
                parent: str | None) -> MlflowRunRef:
    """The MLflow run of this job (created once; a relaunch logs into the same run)."""
    from llmops.registry import tracking

    tags = {"llmops.kind": kind, "llmops.name": name, "llmops.run_dir": str(run_dir)}
    run_id = tracking.job_run(cfg, key, f"{kind}-{name}", parent_run_id=parent, tags=tags)
    return MlflowRunRef(tracking_uri=tracking.tracking_uri(cfg), run_id=run_id,
                        system_metrics=cfg.mlflow.system_metrics,
                        system_metrics_interval_s=cfg.mlflow.system_metrics_interval_s)


def prepare_pretrain(cfg: LlmopsConfig, *, data_card: str | Path | None = None, tokens: str | Path | None = None,
                     mlflow_parent: str | None = None, track: bool = True,
                     init: str | Path | None = None) -> TrainingJob:
    """A pretraining job on the data pipeline's token shards.

    With ``init`` (a model directory or ``models:/`` URI) it continues from those weights for
    ``retrain.pretrain_steps`` steps at ``retrain.lr``: a retraining's continued pretraining from
    the champion, on the champion's tokenizer (checked: the shards must use the model's vocabulary).
    """
    data = resolve_data_inputs(cfg, data_card, tokens)
    meta = check_token_shards(data.tokens, data.tokenizer)
    init_ref = None
    if init is not None:
        init_dir = resolve_base_model(cfg, init)
        vocab = json.loads((init_dir / "config.json").read_text()).get("vocab_size")
        if vocab != meta.vocab_size:
            raise PreflightError(f"{init} has a {vocab}-token vocabulary but the shards in {data.tokens} were encoded "
                                 f"with {meta.vocab_size}: continued pretraining needs the model's own tokenizer")
        init_ref = InputRef(path=str(init_dir), hash=_base_digest(init_dir))
        steps = cfg.retrain.pretrain_steps
        cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(
            update={"steps": steps, "lr": cfg.retrain.lr,
                    "warmup_steps": min(cfg.pretrain.warmup_steps, steps // 10)})})
    try:
        preset = load_preset(cfg.pretrain.preset)
    except ValueError as exc:
        raise PreflightError(str(exc)) from None
    context = cfg.pretrain.context_length or meta.window
    for split in ("train", "validation"):
        if meta.splits[split].n_tokens < context + 1:
            raise PreflightError(f"the {split} split of {data.tokens} has {meta.splits[split].n_tokens} "
                                 f"tokens, fewer than one window of {context + 1}; lower "
                                 f"pretrain.context_length or add data")
    if context > preset.positions:
        raise PreflightError(f"context length {context} exceeds the preset's max_position_embeddings "
                             f"{preset.positions}")
    # Keyed on the shards' and the tokenizer's content, not on the data card: a data run
    # that changed nothing (a new card, the same shards) resumes or reuses this job.
    inputs = {"tokens": input_ref(data.tokens),
              "tokenizer": InputRef(path=str(data.tokenizer), hash=tokenizer_digest(data.tokenizer),
                                    sha256=meta.tokenizer_sha256)}
    if init_ref is not None:
        inputs[INIT_INPUT] = init_ref
    model = PretrainModelSpec(preset_name=cfg.pretrain.preset, preset=preset, vocab_size=meta.vocab_size,
                              eos_id=meta.eos_id, pad_id=meta.pad_id)
    return prepare_job(cfg, "pretrain", name=cfg.pretrain.preset, inputs=inputs, model=model,
                       data=PretrainDataSpec(tokens=str(data.tokens), context_length=context),
                       tokenizer=data.tokenizer,
                       lineage=Lineage(data_card=data.data_card, base_source=str(init) if init is not None else None),
                       mlflow_parent=mlflow_parent, track=track)


def resolve_base_model(cfg: LlmopsConfig, base: str | Path | None) -> Path:
    """A Hugging Face model directory: a path, or the newest exported pretrained model."""
    from llmops.artifacts import latest_output

    if base is None:
        found = latest_output(cfg.home, "model", where=lambda m: m.summary.get("kind") == "pretrain")
        if found is None:
            raise PreflightError(f"no pretrained model under {cfg.layout.stage_dir('model')}: run pretraining "
                                 f"first or pass --base")
        return found
    base_str = str(base)
    if base_str.startswith("models:/") or base_str.startswith("runs:/"):
        from llmops.registry import tracking

        # A fixed place per URI (not a fresh temp dir): the same base gives the same run
        # directory on every try, so a retry resumes; the key also holds the weights' hash,
        # so an alias that moved to another version is a different job.
        cache = cfg.layout.cache("models", stable_hash(base_str))
        cache.mkdir(parents=True, exist_ok=True)
        path = tracking.download_model(cfg, base_str, cache)
        if not (path / "config.json").exists():
            raise PreflightError(f"{base_str} is not a Hugging Face model directory (no config.json)")
        return path
    path = Path(base)
    if not (path / "config.json").exists():
        raise PreflightError(f"base model {path} is not a Hugging Face model directory (no config.json)")
    return path


def prepare_finetune(cfg: LlmopsConfig, *, variant: str | None = None, base: str | Path | None = None,
                     data: str | Path | None = None, data_card: str | Path | None = None,
                     mlflow_parent: str | None = None, track: bool = True, retraining: bool = False) -> TrainingJob:
    """A supervised fine-tuning job of one variant (default: the first configured); a
    retraining's runs ``retrain.finetune_steps`` steps."""
    if retraining:
        steps = cfg.retrain.finetune_steps
        cfg = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(
            update={"steps": steps, "warmup_steps": min(cfg.finetune.warmup_steps, steps // 10)})})
    variants = {v.name: v for v in cfg.finetune.variants}
    name = variant or cfg.finetune.variants[0].name
    if name not in variants and data is None:
        raise PreflightError(f"unknown fine-tuning variant {name!r} (configured: {sorted(variants)}); "
                             f"pass --data to define it")
    chosen = variants.get(name)
    base_dir = resolve_base_model(cfg, base)
    tok_dir = base_dir  # the exported model carries its tokenizer and chat template
    if not (tok_dir / "tokenizer.json").exists():
        raise PreflightError(f"base model {base_dir} has no tokenizer.json next to its weights")
    source = str(data) if data is not None else (chosen.data if chosen else "qa")
    data_card_ref = None
    if source == "qa":
        resolved = resolve_data_inputs(cfg, data_card)
        if resolved.qa is None:
            raise PreflightError("no Q&A set found: run the data pipeline or pass --data FILE.jsonl")
        pairs = resolved.qa / "finetune.jsonl"
        data_card_ref = resolved.data_card
    else:
        pairs = Path(source)
    if not pairs.exists():
        raise PreflightError(f"fine-tuning data {pairs} does not exist")
    method = (chosen.method if chosen and chosen.method else None) or cfg.finetune.method
    lr = (chosen.lr if chosen and chosen.lr else None) or cfg.finetune.lr
    cfg = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"method": method, "lr": lr})})
    base_info = _model_info(base_dir)
    # The base counts by its files (weights, config, tokenizer), wherever it was found: the
    # same model exported here or downloaded from the registry is the same input.
    inputs = {"base": InputRef(path=str(base_dir), hash=_base_digest(base_dir)),
              "pairs": InputRef(path=str(pairs), hash=file_sha256(pairs)),
              "tokenizer": InputRef(path=str(tok_dir), hash=tokenizer_digest(tok_dir),
                                    sha256=file_sha256(tok_dir / "tokenizer.json"))}
    lineage = Lineage(data_card=data_card_ref or (base_info.data_card if base_info else None),
                      base_source=str(base) if base is not None else None,
                      base_job_key=base_info.key if base_info else None)
    return prepare_job(cfg, "finetune", name=name, inputs=inputs,
                       model=FinetuneModelSpec(base=str(base_dir), method=method),
                       data=FinetuneDataSpec(pairs=str(pairs), max_length=cfg.finetune.max_length,
                                             validation_fraction=cfg.finetune.validation_fraction),
                       tokenizer=tok_dir, lineage=lineage, mlflow_parent=mlflow_parent, track=track)


def _base_digest(model_dir: Path) -> str:
    """Content digest of a base model: replaced weights under the same path are a new input."""
    if not (sorted(Path(model_dir).glob("*.safetensors")) or sorted(Path(model_dir).glob("*.bin"))):
        raise PreflightError(f"base model {model_dir} has no weights (*.safetensors or *.bin)")
    return model_digest(model_dir)


def _model_info(model_dir: Path) -> ModelInfo | None:
    """The lineage of a model exported by llmops; None for a model from elsewhere."""
    path = Path(model_dir) / ModelInfo.NAME
    if not path.exists():
        return None
    try:
        return ModelInfo.read(path)
    except RecordError as exc:
        raise PreflightError(f"base model {model_dir}: {exc}") from None
