"""Typed settings: one YAML file plus environment overrides, validated.

Resolution order (later wins):
  1. the defaults declared below;
  2. the YAML file: ``$LLMOPS_CONFIG`` or ``include/llmops.yaml`` of the checkout;
  3. environment variables ``LLMOPS_<SECTION>__<FIELD>`` (e.g.
     ``LLMOPS_SCRAPE__MAX_PAGES=50``); values are parsed as YAML scalars, so
     ``true``, ``50`` and ``[en, de]`` mean what they look like;
  4. ``LLMOPS_HOME`` for the home directory.

Every model forbids unknown keys, so a typo fails loudly with the dotted key name
instead of being silently ignored.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from llmops.errors import PermanentError
from llmops.layout import Layout

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = REPO_ROOT / "include" / "llmops.yaml"
ENV_PREFIX = "LLMOPS_"


class ConfigError(PermanentError, ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


class DemoSiteConfig(_Section):
    seed: int = 1234
    """Seed for Faker and every random choice: the same seed builds the same site."""
    host: str = "127.0.0.1"
    """Address the demo site binds to (loopback only by design)."""
    port: int = Field(8765, ge=0, le=65535)
    """TCP port of the demo site; 0 picks a free one."""
    slow_delay_s: float = Field(6.0, gt=0)
    """How long the 'slow' fault page stalls; keep it above ``scrape.timeout_s``."""
    huge_page_bytes: int = Field(3_000_000, gt=0)
    """Size of the 'too large' fault page; keep it above ``scrape.max_bytes``."""


class ScrapeConfig(_Section):
    user_agent: str = "llmops-crawler/0.1"
    """User-Agent sent with every request and matched against robots.txt groups."""
    max_pages: int = Field(500, ge=1)
    """Upper bound on URLs requested in one crawl (robots.txt and sitemap not counted)."""
    concurrency_per_host: int = Field(4, ge=1)
    """Simultaneous connections to one host."""
    rate_limit_per_host: float = Field(50.0, gt=0)
    """Maximum requests per second to one host (robots.txt Crawl-delay wins if slower)."""
    timeout_s: float = Field(3.0, gt=0)
    """Total time allowed for one HTTP request, body included."""
    retries: int = Field(2, ge=0)
    """Extra attempts after a 5xx answer or a timeout; 4xx answers are never retried."""
    backoff_s: float = Field(0.2, ge=0)
    """First retry delay; doubles on every further attempt."""
    max_bytes: int = Field(2_000_000, gt=0)
    """Responses larger than this are dropped (reason ``too_large``)."""
    allowed_content_types: list[str] = ["text/html", "application/xhtml+xml"]
    """Media types kept; anything else is recorded with reason ``content_type``."""
    same_host_only: bool = True
    """Follow links only on the seed URL's host."""
    max_redirects: int = Field(5, ge=0)
    """Redirect hops before a URL is recorded as ``redirect_loop``/``too_many_redirects``."""
    respect_robots: bool = True
    """Obey robots.txt (disallowed URLs are recorded, never requested)."""
    follow_links: bool = True
    """Discover pages through links as well as through the sitemap."""


class ExtractConfig(_Section):
    include_tables: bool = True
    """Keep table text (worked examples live in tables)."""
    include_comments: bool = False
    """Keep user comment sections; off because comments are not article text."""
    favor_precision: bool = False
    """trafilatura's precision mode: drops more borderline text."""
    min_text_chars: int = Field(1, ge=0)
    """Pages whose extracted text is shorter are dropped with reason ``no_text``."""


class CleanConfig(_Section):
    unicode_form: Literal["NFC", "NFKC"] = "NFKC"
    """Unicode normalisation form applied before anything else."""
    lowercase: bool = False
    """Lowercase the text (off: the tokenizer learns case)."""
    min_chars: int = Field(200, ge=0)
    """Documents shorter than this are dropped (filter ``length``)."""
    max_chars: int = Field(500_000, ge=1)
    """Documents longer than this are dropped (filter ``length``)."""
    min_words: int = Field(30, ge=0)
    """Documents with fewer words are dropped (filter ``length``)."""
    max_symbol_ratio: float = Field(0.35, ge=0, le=1)
    """Maximum share of characters that are neither letters, digits nor spaces
    (filter ``symbols``); reference docs are full of code, hence the lenient value."""
    max_duplicate_line_fraction: float = Field(0.4, ge=0, le=1)
    """Maximum share of lines that repeat an earlier line (filter ``repetition``).
    Gopher uses 0.3 for web text; interactive-session examples in reference docs
    repeat ``Traceback ...`` lines legitimately (the ``raise`` page measures 0.31)."""
    max_top_trigram_fraction: float = Field(0.2, ge=0, le=1)
    """Maximum share of words covered by the most frequent word trigram (``repetition``)."""
    min_punctuated_line_fraction: float = Field(0.12, ge=0, le=1)
    """Minimum share of lines ending in terminal punctuation (filter ``line_punctuation``,
    FineWeb's rule): drops link lists and navigation pages. 0 disables it."""
    languages: list[str] = ["en"]
    """Accepted ISO 639-1 languages (filter ``language``); empty accepts all."""
    min_language_confidence: float = Field(0.5, ge=0, le=1)
    """Minimum language-identification probability for an accepted language."""


class DedupConfig(_Section):
    num_perm: int = Field(128, ge=16)
    """MinHash permutations: more is more accurate and slower."""
    threshold: float = Field(0.7, gt=0, lt=1)
    """Estimated Jaccard similarity above which two documents are near-duplicates."""
    shingle_words: int = Field(5, ge=1)
    """Word n-gram size of the shingles MinHash is computed over."""
    seed: int = 1
    """MinHash seed: fixed so clusters are reproducible."""


PII_ENTITIES = ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "CREDIT_CARD", "IP_ADDRESS", "LOCATION",
                "SECRET"]


class PiiConfig(_Section):
    entities: list[str] = PII_ENTITIES
    """Presidio entity types to redact (``SECRET`` is our recognizer for API keys and tokens)."""
    operator: Literal["replace", "mask", "hash", "pseudonymize"] = "replace"
    """``replace``: ``<ENTITY_TYPE>``; ``mask``: ``*`` characters; ``hash``: salted SHA-256;
    ``pseudonymize``: consistent surrogates within a document (``SubjectA``), dates shifted."""
    hash_salt: SecretStr = SecretStr("")
    """Secret salt for ``hash`` and for ``pseudonymize``'s date offsets, at least 16 characters
    (set ``LLMOPS_PII__HASH_SALT`` so every worker and run hashes alike). Required by those
    operators: without it a hash of a name or phone number could be reversed by guessing.
    Never printed nor written to a manifest."""
    score_threshold: float = Field(0.35, ge=0, le=1)
    """Minimum recognizer confidence for a finding to be redacted."""
    spacy_model: str = "en_core_web_sm"
    """spaCy pipeline: its tokenizer gives recognizers their context words, its NER finds
    DATE_TIME and, with ``person_ner``, PERSON (installed from PyPI, never downloaded)."""
    person_ner: bool = False
    """Also run spaCy's NER for PERSON, kept only where a cue agrees (NER alone takes products
    for people). Off: on the PII evaluation set's dev half it found no name the other signals
    missed; on dev2 it raised PERSON recall 0.986 -> 0.990 and lowered precision 0.926 -> 0.917
    and intact look-alikes 0.943 -> 0.936, at 2.3x the analysis time (below 3x plain
    Presidio's speed on a busy machine)."""
    batch_size: int = Field(64, ge=1)
    """Texts per ``nlp.pipe`` batch."""
    processes: int = Field(2, ge=1)
    """Worker processes for redaction (both cores on the demo machine)."""
    date_shift_max_days: int = Field(30, ge=1)
    """``pseudonymize``: dates move by a per-document offset of up to this many days."""

    @field_validator("entities")
    @classmethod
    def _entity_names(cls, value: list[str]) -> list[str]:
        # " EMAIL_ADDRESS" or "email" would silently switch a redaction off.
        names = [v.strip() for v in value]
        bad = [n for n in names if not re.fullmatch(r"[A-Z][A-Z0-9_]*", n)]
        if bad or not names:
            raise ValueError(f"entity types are Presidio names like PERSON or EMAIL_ADDRESS, got {bad or names}")
        return names

    @model_validator(mode="after")
    def _salt_when_needed(self) -> PiiConfig:
        if self.operator in ("hash", "pseudonymize") and len(self.hash_salt.get_secret_value()) < 16:
            raise ValueError(f"operator {self.operator!r} needs pii.hash_salt of at least 16 characters "
                             "(set LLMOPS_PII__HASH_SALT)")
        return self

    def salt_fingerprint(self) -> str:
        """Identifies the salt in a manifest without revealing it (a keyed hash of a constant)."""
        import hmac

        salt = self.hash_salt.get_secret_value().encode()
        return hmac.new(salt, b"llmops-salt-id", "sha256").hexdigest()[:16] if salt else ""


class TokenizerConfig(_Section):
    vocab_size: int = Field(4096, ge=256)
    """Byte-level BPE vocabulary size, special tokens included."""
    min_frequency: int = Field(2, ge=1)
    """A merge must occur at least this often in the corpus."""
    end_of_text: str = "<|endoftext|>"
    """Separates documents in the token shards; also the end-of-sequence token."""
    pad_token: str = "<|pad|>"
    """Padding token for batched training and generation."""
    template_tokens: list[str] = ["<|user|>", "<|assistant|>", "<|end|>"]
    """Special tokens of the chat (Q&A) template."""
    reuse: str | None = None
    """A ``tokenizer.json`` (or a directory holding one) to reuse instead of training one."""
    validation_fraction: float = Field(0.05, gt=0, lt=1)
    """Share of documents held out for validation (deterministic, by document id)."""
    num_workers: int = Field(2, ge=1)
    """Processes used to encode the shards."""
    window: int = Field(256, ge=2)
    """Training window in tokens (context length + 1: inputs and shifted labels); recorded
    in the shards' meta.json for the trainer's sliding windows."""
    stride: int = Field(256, ge=1)
    """Step between training windows; smaller than ``window`` makes them overlap."""

    @model_validator(mode="after")
    def _stride_within_window(self) -> TokenizerConfig:
        if self.stride > self.window:
            raise ValueError(f"stride {self.stride} > window {self.window} would skip tokens")
        return self


class QaConfig(_Section):
    heldout_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of pages whose Q&A pairs are held out for evaluation (never fine-tuned on)."""
    seed: int = 1234
    """Seed of the page split: the same seed gives the same split."""
    decontamination_ngram: int = Field(8, ge=3)
    """Word n-gram size of the overlap check of evaluation items against training text."""
    decontamination_threshold: float = Field(0.7, gt=0, le=1)
    """An evaluation item whose n-grams are at least this much in training text is contaminated."""


class DeepSpeedLaunchConfig(_Section):
    ranks: int = Field(2, ge=1)
    """Processes per node (``deepspeed --num_gpus``): one per GPU, or CPU processes without GPUs."""
    hosts: list[str] = []
    """Multi-node: ``host:slots`` entries written to a hostfile (first host is the master); empty runs locally."""
    hostfile: str | None = None
    """Multi-node: an existing MPI-style hostfile (``worker-0 slots=4``) instead of ``hosts``."""
    master_addr: str | None = None
    """Address of rank 0 for multi-node runs; default the first host."""
    master_port: int = Field(0, ge=0, le=65535)
    """TCP port of the torch.distributed rendezvous. 0: a local run takes a port the OS picks
    (so concurrent local jobs, e.g. mapped fine-tunes, never meet at one port) and a
    multi-node run uses 29500; a set port is used as is (a local run falls back to a free
    one when it is busy)."""
    launcher: str = "pdsh"
    """Multi-node launcher backend of the ``deepspeed`` runner: pdsh, openmpi, slurm, ..."""
    zero_stage: int = Field(2, ge=0, le=3)
    """ZeRO stage: 0 plain data parallel, 1 optimizer states, 2 + gradients, 3 + parameters (all tested on CPU)."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Training precision; ``auto`` is bf16 on GPUs that support it, fp32 on CPU."""
    activation_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""
    threads_per_rank: int | None = Field(None, ge=1)
    """torch intra-op threads per CPU rank; default the cores divided by the ranks."""
    config_file: str | None = None
    """A DeepSpeed JSON config merged over the generated one (validated before launch)."""
    timeout_s: int = Field(600, ge=30)
    """torch.distributed timeout: a rank that waits longer on the others fails instead of hanging."""


class LoopConfig(_Section):
    steps: int = Field(300, ge=1)
    """Optimizer steps in total (a resumed run continues to this count)."""
    micro_batch_size: int = Field(8, ge=1)
    """Sequences per rank per forward pass."""
    grad_accum_steps: int = Field(1, ge=1)
    """Micro-batches accumulated per optimizer step; global batch = micro x accum x world size."""
    lr: float = Field(3e-3, gt=0)
    """Peak learning rate (AdamW), reached after the warmup."""
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """The cosine schedule decays to ``lr * min_lr_ratio`` at the last step."""
    warmup_steps: int = Field(20, ge=0)
    """Linear warmup from 0 to ``lr``."""
    weight_decay: float = Field(0.1, ge=0)
    """AdamW weight decay (not applied to norms and biases)."""
    grad_clip: float = Field(1.0, ge=0)
    """Clip the global gradient norm to this value; 0 turns clipping off."""
    eval_every: int = Field(50, ge=1)
    """Validation loss and perplexity every this many steps (and at the last step)."""
    eval_batches: int = Field(8, ge=1)
    """Validation micro-batches per evaluation, per rank."""
    checkpoint_every: int = Field(50, ge=1)
    """Save a DeepSpeed checkpoint every this many steps (and at the last step)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Complete checkpoints kept; older ones are deleted once a newer one is complete."""
    log_every: int = Field(10, ge=1)
    """Train-loss, learning-rate and throughput logging interval (steps)."""
    seed: int = 1234
    """Seed of the weights' initialisation, the data order and dropout."""

    @model_validator(mode="after")
    def _log_windows_align_with_checkpoints(self) -> LoopConfig:
        # A resumed job restarts at a checkpoint; a logging window straddling it would be
        # logged twice with different values.
        if self.checkpoint_every % self.log_every:
            raise ValueError(f"checkpoint_every ({self.checkpoint_every}) must be a multiple of log_every "
                             f"({self.log_every})")
        return self


class PretrainConfig(LoopConfig):
    preset: str = "tiny"
    """Model preset: ``include/models/<preset>.yaml`` (tiny, 125m, 1b) or a path to such a YAML."""
    context_length: int | None = Field(None, ge=8)
    """Tokens per training window; default the token shards' window (``tokenizer.window``)."""


class FinetuneVariantConfig(_Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")
    """Variant name: the model is exported as ``llmops-<name>`` (the first variant is the served one)."""
    data: str = "qa"
    """``qa`` for the data pipeline's Q&A set, or a path to a JSONL file of {question, answer}."""
    method: Literal["full", "lora"] | None = None
    """Overrides ``finetune.method`` for this variant."""
    lr: float | None = Field(None, gt=0)
    """Overrides ``finetune.lr`` for this variant (full fine-tuning wants a lower one than LoRA)."""


class FinetuneConfig(LoopConfig):
    steps: int = Field(120, ge=1)
    """Optimizer steps in total (a resumed run continues to this count)."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate (AdamW), reached after the warmup."""
    warmup_steps: int = Field(10, ge=0)
    """Linear warmup from 0 to ``lr``."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay (not applied to norms and biases)."""
    eval_every: int = Field(40, ge=1)
    """Validation loss and perplexity every this many steps (and at the last step)."""
    checkpoint_every: int = Field(40, ge=1)
    """Save a DeepSpeed checkpoint every this many steps (and at the last step)."""
    method: Literal["full", "lora"] = "lora"
    """``full`` updates every weight; ``lora`` trains low-rank adapters (peft), merged at export."""
    lora_r: int = Field(16, ge=1)
    """LoRA rank."""
    lora_alpha: int = Field(32, ge=1)
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA branch."""
    lora_target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    """Linear layers that get adapters."""
    max_length: int = Field(256, ge=16)
    """Longest prompt + answer in tokens; longer examples are truncated on the answer side and counted."""
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    """Share of the fine-tuning pairs (by page) held back for validation loss."""
    parallel_jobs: int = Field(1, ge=1)
    """Fine-tuning jobs (mapped tasks) that may run at once. Jobs on one machine share its
    GPUs or cores, so 1 unless each Airflow worker has its own devices."""
    variants: list[FinetuneVariantConfig] = [FinetuneVariantConfig(name="qa")]
    """Fine-tuned variants made from one pretrained base, one Airflow mapped task each."""

    @field_validator("variants")
    @classmethod
    def _unique_variants(cls, value: list[FinetuneVariantConfig]) -> list[FinetuneVariantConfig]:
        names = [v.name for v in value]
        if not names:
            raise ValueError("at least one variant is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        return value


class MlflowConfig(_Section):
    tracking_uri: str | None = None
    """MLflow tracking server or store; default ``sqlite:///$LLMOPS_HOME/mlflow.db``."""
    artifact_location: str | None = None
    """Where new experiments store artifacts; default ``$LLMOPS_HOME/mlartifacts``."""
    experiment: str = "llmops"
    """Experiment that DAG runs and training jobs are logged under."""
    system_metrics: bool = True
    """Log CPU, memory (and GPU where present) usage of training jobs."""
    system_metrics_interval_s: float = Field(5.0, gt=0)
    """Seconds between system-metric samples."""
    ui_port: int = Field(5000, ge=1, le=65535)
    """Port of ``make mlflow``."""


class EvaluationConfig(_Section):
    gate_file: str | None = None
    """Gate thresholds YAML; default ``include/eval/gate.yaml``."""
    cases_file: str | None = None
    """Behavioural cases YAML; default ``include/eval/behaviour.yaml``."""
    canaries_file: str | None = None
    """JSON list of ``{type, value}`` PII canaries; default the demo site's planted values."""
    max_questions: int | None = Field(None, ge=1)
    """Evaluate generation on the first N held-out pairs only (all by default)."""


class ServingConfig(_Section):
    model_name: str = Field("llmops", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    """Name the served model has in Triton (and in client calls)."""
    staging_model_name: str = Field("llmops_staging", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    """Name a new version is loaded under for smoke tests before it replaces the served one."""
    repository: Path | None = None
    """Triton model repository; default ``$LLMOPS_HOME/triton/models``."""
    host: str = "127.0.0.1"
    """Address clients use to reach the server (the embedded server binds to all interfaces)."""
    http_port: int = Field(8000, ge=1, le=65535)
    """Triton HTTP/REST port."""
    grpc_port: int = Field(8001, ge=1, le=65535)
    """Triton gRPC port."""
    metrics_port: int = Field(8002, ge=1, le=65535)
    """Triton Prometheus metrics port."""
    startup_timeout_s: float = Field(180.0, gt=0)
    """How long ``serve start`` waits for ``/v2/health/ready`` before giving up."""
    admin_header: str = Field("llmops-admin-key", pattern=r"^[a-z0-9-]+$")
    """Header (HTTP) / metadata key (gRPC) that unlocks the restricted APIs."""
    admin_key: SecretStr | None = None
    """Value of ``admin_header``. Default: ``$LLMOPS_SERVING__ADMIN_KEY``, else a random key
    generated once into ``$LLMOPS_HOME/triton/admin.key`` (mode 0600). Never logged."""
    restricted_apis: list[str] = ["model-repository", "model-config", "statistics", "trace", "logging", "shared-memory"]
    """Triton APIs that require the admin key; inference, metadata and health stay open."""
    device: Literal["auto", "cpu", "gpu"] = "auto"
    """Instance kind: ``auto`` is GPU where the server sees one, else CPU."""
    instance_count: int = Field(1, ge=1)
    """Model instances (copies of the model) per device."""
    threads_per_instance: int = Field(1, ge=1)
    """torch intra-op threads of each CPU instance. One is fastest for small models on a
    few shared cores (measured 5-20x faster than two on 2 cores, where the threads fight
    the server's own); raise it for large models on dedicated CPUs."""
    max_batch_size: int = Field(8, ge=1)
    """Largest batch Triton's dynamic batcher hands to one ``execute`` call."""
    preferred_batch_sizes: list[int] = [4, 8]
    """Batch sizes the dynamic batcher tries to form before the queue delay runs out."""
    max_queue_delay_us: int = Field(2000, ge=0)
    """Microseconds a request may wait for others to join its batch."""
    max_queue_size: int = Field(64, ge=1)
    """Queued requests beyond this are refused at once (back-pressure) instead of piling up."""
    default_max_tokens: int = Field(48, ge=1)
    """New tokens generated when a request does not send ``max_tokens``."""
    max_tokens_limit: int = Field(256, ge=1)
    """Largest ``max_tokens`` a request may ask for; more is a bad request."""
    max_prompt_tokens: int = Field(256, ge=1)
    """Longest prompt (after the chat template) accepted; longer is a bad request."""

    @model_validator(mode="after")
    def _distinct_names_and_limits(self) -> ServingConfig:
        if self.staging_model_name == self.model_name:
            raise ValueError(f"staging_model_name must differ from model_name ({self.model_name!r}): staging "
                             f"a version would unload the served one")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens_limit "
                             f"({self.max_tokens_limit})")
        return self


class DriftThresholds(_Section):
    """Effect sizes above which a signal counts as drifted in a window. Calibrated on the demo
    (README, "Monitoring"): at most 5% false alarms over 20 windows resampled from the
    reference, and a topic shift caught within 2 windows. Distances, not p-values: with
    thousands of requests every p-value is tiny and means nothing."""

    length_wasserstein: float = Field(1.0, gt=0)
    """Wasserstein distance between the prompt lengths (tokens), divided by the reference's
    standard deviation."""
    token_js: float = Field(0.45, gt=0, le=1)
    """Jensen–Shannon distance (base 2, 0..1) between the question tokens' frequencies over
    the top-K ids plus ``other``."""
    token_psi: float = Field(1.6, gt=0)
    """Population stability index over the same buckets (0.25 is the usual 'major shift' for
    large samples; small windows need more)."""
    bytes_per_token_wasserstein: float = Field(0.9, gt=0)
    """Wasserstein distance between the questions' bytes per token, divided by the reference's
    standard deviation."""
    language_cramers_v: float = Field(0.3, gt=0, le=1)
    """Cramér's V of the language counts (reference vs window), from the chi² table."""
    bits_per_byte_ratio: float = Field(1.2, gt=1)
    """Median bits per byte of the window's questions over the reference's: how much more
    the model is surprised by what users now ask."""
    empty_answer_rate: float = Field(0.2, gt=0, le=1)
    """Rise of the share of empty answers over the reference's (absolute)."""
    length_limit_rate: float = Field(0.3, gt=0, le=1)
    """Rise of the share of answers stopped at ``max_tokens`` over the reference's (absolute)."""


class MonitorConfig(_Section):
    inference_log: bool = True
    """Write one record per request of the served model (counts and measurements, never text)
    to ``$LLMOPS_HOME/monitoring/inference``; read by ``llmops drift check``."""
    log_dir: Path | None = None
    """Where the inference log is written and read; default ``$LLMOPS_HOME/monitoring/inference``.
    In production a volume shared by the Triton service and the Airflow workers."""
    top_k: int = Field(256, ge=1, le=65536)
    """The log counts a question's tokens over this many of the champion corpus's most frequent
    token ids (plus one ``other`` count)."""
    queue_size: int = Field(10_000, ge=1)
    """Records an instance holds for its writer thread; when full, records are dropped and counted."""
    retention_hours: float = Field(168.0, gt=0)
    """Inference-log files older than this are deleted."""
    schedule: str | None = "0 * * * *"
    """Cron schedule of ``llmops_monitor`` (read when the DAG is parsed); null: only by hand."""
    window: str = Field("1h", pattern=r"^\s*(\d+|\d+(\.\d+)?\s*(s|m|h|d))\s*$")
    """One window: a number of requests (``200``) or a duration (``90s``, ``30m``, ``1h``, ``1d``)."""
    reference_window: str | None = None
    """How much traffic after a deployment joins the held-out questions as the reference;
    default the same as ``window``."""
    min_requests: int = Field(20, ge=2)
    """A window with fewer answered requests gives ``not_enough_data``."""
    persistence: int = Field(2, ge=1)
    """Drift only when this many consecutive windows drifted (the latest included): one odd
    window retrains nothing."""
    vote: int = Field(2, ge=1)
    """A window drifted when at least this many data and quality features crossed their thresholds
    (``token_js`` and ``token_psi`` read the same token counts: together they are one vote)."""
    thresholds: DriftThresholds = DriftThresholds()
    calibration_windows: int = Field(20, ge=5)
    """Windows resampled from the reference to measure the false-alarm rate of the thresholds."""
    p95_latency_ms: float = Field(5000.0, gt=0)
    """Service alert: p95 request latency (queue + compute, from Triton's metrics) above this.
    Shown, never a reason to retrain."""
    failure_rate: float = Field(0.05, ge=0, le=1)
    """Service alert: share of failed requests (Triton's metrics) above this."""


DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(s|m|h|d)?\s*$"
"""A duration: seconds (``90``) or a number with a unit (``90s``, ``30m``, ``6h``, ``7d``)."""


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
"""Seconds per unit of a duration (``retrain.cooldown``, ``monitor.window``)."""


def duration_seconds(text: str) -> float:
    """``"6h"`` -> 21600.0; a bare number is seconds (the config validates the form)."""
    text = text.strip()
    unit = text[-1] if text[-1] in DURATION_UNITS else "s"
    number = text[:-1] if text[-1] in DURATION_UNITS else text
    return float(number) * DURATION_UNITS[unit]


class RetrainConfig(_Section):
    schedule: str | None = "0 3 * * 1"
    """Cron schedule of ``llmops_retrain`` besides ``llmops://drift`` (read when the DAG is parsed;
    default weekly, Monday 03:00 UTC); null: on drift and by hand only."""
    cooldown: str = Field("6h", pattern=DURATION_PATTERN, coerce_numbers_to_str=True)
    """After a deployment, drift and scheduled retrainings wait this long (``0`` never waits):
    the first traffic after a new champion is its reference, not a reason to retrain it."""
    replay_fraction: float = Field(0.25, ge=0, le=1)
    """Share of the champion's training documents replayed beside the new ones in continued
    pretraining, against forgetting what it knew."""
    pretrain_steps: int = Field(30, ge=1)
    """Optimizer steps of continued pretraining from the champion's weights."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate of that continued pretraining: trained weights want a gentler one than a
    model from scratch. Chosen on the demo (README, ``llmops_retrain``): at ``pretrain.lr`` (3e-3,
    60 steps) the retrained model lost its chat manners and failed the gate; 3e-4 (60 steps) and
    1e-3 (30 steps) passed, the latter better and cheaper."""
    finetune_steps: int = Field(40, ge=1)
    """Optimizer steps of the served variant's fine-tuning that follows (on the old and new Q&A pairs)."""
    seed: int = 1234
    """Seed of the replay sample: the same champion and new documents give the same sample."""


class AirflowConfig(_Section):
    host: str = "127.0.0.1"
    """Address the embedded Airflow API server (UI and REST API) binds to; loopback only by default."""
    api_port: int = Field(8080, ge=1, le=65535)
    """Port of the embedded Airflow API server (``llmops stack start``): UI, REST and execution API."""
    parallelism: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    """Task instances that run at once (Airflow's ``[core] parallelism``); default the machine's core
    count. LocalExecutor forks this many worker processes up front, idle or not (~130 MB resident
    each, most of it shared with the scheduler; Airflow's default of 32 shows as 6 GB of RSS)."""
    worker_log_server_port: int = Field(8793, ge=1, le=65535)
    """Port the scheduler's log server listens on (all interfaces; requests need a signed token);
    the API server reads running tasks' logs from it."""
    trigger_log_server_port: int = Field(8794, ge=1, le=65535)
    """Port the triggerer's log server listens on (logs of deferred tasks)."""
    startup_timeout_s: float = Field(240.0, gt=0)
    """How long ``llmops stack start`` waits for every component to report healthy."""


class DataPipelineConfig(_Section):
    seed_url: str = Field("http://127.0.0.1:8765/", pattern=r"^https?://")
    """Where the crawl starts (the demo site by default): an http or https URL."""
    sitemap_url: str | None = None
    """Optional sitemap; defaults to ``<seed origin>/sitemap.xml`` when it exists."""
    num_shards: int = Field(2, ge=1, le=64)
    """Shards the crawl is split into for the mapped extract/clean tasks."""


class LlmopsConfig(_Section):
    home: Path = Path(".llmops")
    """Root of every artifact, the Airflow home, the embedded MLflow store and Triton's model repository."""
    data: DataPipelineConfig = DataPipelineConfig()
    demo_site: DemoSiteConfig = DemoSiteConfig()
    scrape: ScrapeConfig = ScrapeConfig()
    extract: ExtractConfig = ExtractConfig()
    clean: CleanConfig = CleanConfig()
    dedup: DedupConfig = DedupConfig()
    pii: PiiConfig = PiiConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    qa: QaConfig = QaConfig()
    deepspeed: DeepSpeedLaunchConfig = DeepSpeedLaunchConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    mlflow: MlflowConfig = MlflowConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    serving: ServingConfig = ServingConfig()
    monitor: MonitorConfig = MonitorConfig()
    retrain: RetrainConfig = RetrainConfig()
    airflow: AirflowConfig = AirflowConfig()

    @model_validator(mode="after")
    def _home_absolute(self) -> LlmopsConfig:
        if not self.home.is_absolute():
            object.__setattr__(self, "home", (Path.cwd() / self.home).resolve())
        return self

    @property
    def layout(self) -> Layout:
        """Where everything lives under :attr:`home` (``llmops.layout``)."""
        return Layout(self.home)


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``LLMOPS_SCRAPE__MAX_PAGES=5`` -> ``{"scrape": {"max_pages": 5}}``."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        try:
            node[path[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: not a valid value ({exc.__class__.__name__})") from exc
    return tree


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``, nested mappings key by key."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _format_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        got = f" (got {err['input']!r})" if err["type"] != "extra_forbidden" else ""
        parts.append(f"{key}: {err['msg']}{got}")
    return "invalid configuration: " + "; ".join(parts)


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> LlmopsConfig:
    """Load, merge and validate the configuration; raises ``ConfigError`` naming the key."""
    environ = dict(os.environ if environ is None else environ)
    source = "--config" if path else "LLMOPS_CONFIG" if environ.get("LLMOPS_CONFIG") else None
    path = Path(path or environ.get("LLMOPS_CONFIG") or DEFAULT_CONFIG_FILE)
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    elif source:  # a file someone named must exist; only the default may be absent
        raise ConfigError(f"{source} points to {path}, which does not exist")
    merged = deep_merge(raw, _env_overrides(environ))
    if environ.get("LLMOPS_HOME"):
        merged["home"] = environ["LLMOPS_HOME"]
    merged = deep_merge(merged, overrides or {})
    try:
        return LlmopsConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


def with_overrides(cfg: LlmopsConfig, overrides: dict[str, Any]) -> LlmopsConfig:
    """``cfg`` with nested ``overrides`` applied and validated again (CLI flags, DAG Params)."""
    def drop_none(tree: dict[str, Any]) -> dict[str, Any]:  # an unset flag keeps the configured value
        return {k: drop_none(v) if isinstance(v, dict) else v for k, v in tree.items() if v is not None}

    merged = deep_merge(cfg.model_dump(mode="python"), drop_none(overrides))
    try:
        return LlmopsConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


# ---- one knob, many faces: what a DAG Param or a CLI flag takes from its field ---------


def field_description(dotted: str) -> str:
    """The field's docstring as one line of plain text (the trigger form shows no reST)."""
    return " ".join(field_schema(dotted).get("description", dotted).replace("``", "`").split())


def configured_value(cfg: LlmopsConfig, dotted: str) -> object:
    """The value of ``dotted`` in ``cfg`` (``scrape.max_pages`` -> ``cfg.scrape.max_pages``)."""
    node: object = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def shown_value(value: object) -> str:
    """A configured value as a trigger form or ``--help`` shows it (JSON, strings bare)."""
    return value if isinstance(value, str) else json.dumps(value)


def field_schema(dotted: str) -> dict[str, Any]:
    """The JSON schema of configuration field ``dotted`` (``scrape.max_pages``): its type,
    bounds and docstring, from which DAG Params and CLI flags are made."""
    *sections, leaf = dotted.split(".")
    model: type[BaseModel] = LlmopsConfig
    for part in sections:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise KeyError(f"{dotted}: {part} is not a configuration section")
        model = annotation
    properties = _properties(model)
    if leaf not in properties:
        raise KeyError(f"{dotted} is not a configuration key")
    return properties[leaf]


@functools.cache
def _properties(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    return model.model_json_schema()["properties"]
