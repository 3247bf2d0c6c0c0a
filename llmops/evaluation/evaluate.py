"""``llmops evaluate``: every number the gate decides on, for one model on one evaluation set.

The evaluation set is the data pipeline's, named by the model's lineage
(``llmops_model.json`` -> data card -> token shards and held-out Q&A pairs) unless given:
validation documents for perplexity and bits per byte, held-out pairs for BLEU, ROUGE,
exact match and diversity, PII canaries for the leak check, and the behavioural cases.
Its ``eval_data_hash`` covers all of them, so the gate can refuse to compare numbers
measured on different sets.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import TypeAdapter, ValidationError

from llmops.artifacts import StageResult, build_stage, file_sha256, read_manifest, stable_hash
from llmops.config import LlmopsConfig
from llmops.errors import PermanentError
from llmops.records.base import RecordError
from llmops.records.common import InputRef
from llmops.records.crawl import GroundTruth
from llmops.records.data import DataCard
from llmops.records.evaluation import (
    AlreadyRegistered,
    CandidateEvaluation,
    EvalMetrics,
    EvaluatedOn,
    EvaluationReport,
    GateResult,
    ModelLineage,
    PiiCanary,
    RegisteredVersion,
)
from llmops.records.training import ModelInfo
from llmops.registry.model_card import model_info

if TYPE_CHECKING:
    from llmops.evaluation.behaviour import BehaviourResult
    from llmops.evaluation.generation import Sample
    from llmops.evaluation.language_model import LmMetrics
    from llmops.evaluation.leakage import Leakage


class EvaluationInputError(PermanentError, ValueError):
    """The evaluation data cannot be found or is unusable."""


@dataclass
class EvalData:
    """What a model is evaluated on."""

    tokens: Path
    heldout: Path
    canaries: list[PiiCanary]
    cases_file: Path
    canary_source: str

    def digest(self) -> str:
        return stable_hash({"tokens": read_manifest(self.tokens).key, "heldout": file_sha256(self.heldout),
                            "canaries": stable_hash(self.canaries), "cases": file_sha256(self.cases_file)})


def _ground_truth_canaries(cfg: LlmopsConfig) -> list[PiiCanary]:
    """The PII the demo site planted, by type and value (where it was planted does not change
    what is probed, nor the evaluation data's hash)."""
    path = cfg.layout.demo_site / GroundTruth.NAME
    if not path.exists():
        return []
    return [PiiCanary(type=p.type, value=p.value) for p in GroundTruth.read(path).pii]


def _canaries_file(path: Path) -> list[PiiCanary]:
    try:
        return TypeAdapter(list[PiiCanary]).validate_json(Path(path).read_text())
    except ValidationError as exc:
        raise EvaluationInputError(f"{path}: expected a JSON list of {{type, value}}: {exc}") from None


def _lineage_data(model_dir: Path) -> tuple[Path, Path]:
    """The token shards and the held-out pairs of the data card the model was trained on."""
    info = model_info(model_dir)
    if info is None or info.data_card is None:
        raise EvaluationInputError(f"{model_dir} names no data card ({ModelInfo.NAME}): pass --tokens and --heldout")
    inputs = read_manifest(Path(info.data_card.path)).inputs
    tokens, qa = InputRef.model_validate(inputs["tokens"]), InputRef.model_validate(inputs["qa"])
    return Path(tokens.path), Path(qa.path) / "heldout.jsonl"


def resolve_eval_data(cfg: LlmopsConfig, model_dir: Path, *, tokens: Path | None = None,
                      heldout: Path | None = None, canaries: Path | None = None,
                      cases: Path | None = None) -> EvalData:
    """Fill what was not given from the model's lineage and the stack's defaults."""
    from llmops.evaluation.behaviour import DEFAULT_CASES_FILE

    if tokens is None or heldout is None:
        card_tokens, card_heldout = _lineage_data(model_dir)
        tokens, heldout = tokens or card_tokens, heldout or card_heldout
    if canaries is not None:
        values, source = _canaries_file(canaries), str(canaries)
    else:
        values, source = _ground_truth_canaries(cfg), "demo site ground truth"
    if not values:
        raise EvaluationInputError("no PII canaries: pass --canaries FILE (a JSON list of {type, value}) or run "
                                   "the demo site, whose ground truth plants them")
    for path in (tokens, heldout):
        if not Path(path).exists():
            raise EvaluationInputError(f"evaluation input {path} does not exist")
    return EvalData(Path(tokens), Path(heldout), values, Path(cases or DEFAULT_CASES_FILE), source)


@dataclass
class Measurements:
    """Everything measured of one model on one evaluation set: the gate's numbers and the report's details."""

    metrics: EvalMetrics
    language_model: LmMetrics
    samples: list[Sample]
    leakage: Leakage
    behaviour: BehaviourResult
    evaluated_on: EvaluatedOn


def evaluate_model(model_dir: Path, data: EvalData, *, max_questions: int | None = None,
                   max_canaries: int | None = 200, max_new_tokens: int = 48) -> Measurements:
    """All metrics of ``model_dir`` on ``data``, and the details the report shows."""
    from llmops.data.store import read_jsonl
    from llmops.evaluation.behaviour import load_cases, run_cases
    from llmops.evaluation.generation import load_model, qa_generation_metrics
    from llmops.evaluation.language_model import lm_metrics
    from llmops.evaluation.leakage import canary_prompts, leak_rate

    model, tokenizer = load_model(model_dir)
    pairs = read_jsonl(data.heldout)[:max_questions] if max_questions else read_jsonl(data.heldout)
    if not pairs:
        raise EvaluationInputError(f"{data.heldout} holds no question/answer pair")
    lm = lm_metrics(model, data.tokens)
    qa = qa_generation_metrics(model, tokenizer, pairs, max_new_tokens=max_new_tokens)
    leak = leak_rate(model, tokenizer, canary_prompts(data.canaries, limit=max_canaries))
    behaviour = run_cases(model, tokenizer, load_cases(data.cases_file))
    metrics = EvalMetrics(
        perplexity=lm["perplexity"], bits_per_byte=lm["bits_per_byte"], bleu=qa["bleu"], rouge1=qa["rouge1"],
        rouge2=qa["rouge2"], rougeL=qa["rougeL"], exact_match=qa["exact_match"], distinct_1=qa["distinct_1"],
        distinct_2=qa["distinct_2"], latency_s_p50=qa["latency_s_p50"], latency_s_p95=qa["latency_s_p95"],
        tokens_per_s=qa["tokens_per_s"], pii_leak_rate=leak["pii_leak_rate"],
        behaviour_pass_rate=behaviour["behaviour_pass_rate"], eval_data_hash=data.digest())
    evaluated_on = EvaluatedOn(tokens=str(data.tokens), heldout=str(data.heldout), cases=str(data.cases_file),
                               canaries=data.canary_source, n_canaries=len(data.canaries), questions=len(pairs))
    return Measurements(metrics, lm, qa["samples"], leak, behaviour, evaluated_on)


@dataclass
class ModelEvaluation:
    """What :func:`run_evaluation` measured and decided, and its report (a keyed output)."""

    metrics: EvalMetrics
    champion: EvalMetrics | None
    gate: GateResult
    report: StageResult

    @property
    def report_md(self) -> Path:
        return self.report.path / "report.md"

    @property
    def model_card(self) -> Path:
        return self.report.path / "model_card.md"


def run_evaluation(cfg: LlmopsConfig, model: str | Path, *, out_dir: Path | None = None,
                   champion: str | Path | None = None, tokens: Path | None = None, heldout: Path | None = None,
                   canaries: Path | None = None, cases: Path | None = None, gate_file: Path | None = None,
                   max_questions: int | None = None, model_card: str | None = None) -> ModelEvaluation:
    """Evaluate ``model`` (a directory or ``models:/`` URI), the champion on the same data if
    given, run the gate and write the report (with the model card of registered model
    ``model_card``, when named).

    The report is ``reports/evaluation/<key>/`` (or ``out_dir``), written through the
    keyed-output API: a manifest, an atomic rename. Every evaluation is a new measurement
    (latencies, the champion of the moment) and is never reused: its key holds a fresh id,
    next to what was evaluated, on which data, against which champion, with which gate.
    """
    from llmops.evaluation.gate import load_thresholds, run_gate
    from llmops.evaluation.report import write_report
    from llmops.registry.model_card import render_model_card

    def local(ref: str | Path) -> Path:
        if str(ref).startswith(("models:/", "runs:/")):
            from llmops.registry.tracking import download_model

            return download_model(cfg, str(ref), cfg.layout.cache("models", stable_hash(str(ref))))
        return Path(ref)

    model_dir = local(model)
    data = resolve_eval_data(cfg, model_dir, tokens=tokens, heldout=heldout, canaries=canaries, cases=cases)
    thresholds = load_thresholds(gate_file)
    info = model_info(model_dir)
    curve = Path(info.run_dir) / "loss_curve.png" if info else None

    def build(tmp: Path) -> EvaluatedOn:
        result = evaluate_model(model_dir, data, max_questions=max_questions)
        champion_metrics = None
        if champion is not None:  # re-evaluated on the challenger's data: numbers that compare
            champion_metrics = evaluate_model(local(champion), data, max_questions=max_questions).metrics
        gate = run_gate(result.metrics, champion_metrics, thresholds)
        write_report(tmp, model=str(model), metrics=result.metrics, champion=champion_metrics, gate=gate,
                     loss_curve=curve if curve and curve.exists() else None, samples=result.samples,
                     behaviour=result.behaviour, leakage=result.leakage)
        if model_card:
            (tmp / "model_card.md").write_text(render_model_card(model_dir, result.metrics, gate, name=model_card))
        return result.evaluated_on

    inputs = {"model": str(model), "champion": None if champion is None else str(champion),
              "eval_data": data.digest()}
    config = {"max_questions": max_questions, "gate": thresholds.model_dump(mode="json"), "model_card": model_card,
              "evaluation_id": uuid.uuid4().hex}
    stage = build_stage(cfg.home, "evaluation", inputs, config, build, out_dir,
                        parent=cfg.layout.reports("evaluation"))
    report = EvaluationReport.read(stage.path)
    if report.gate is None:
        raise RecordError(f"{stage.path / EvaluationReport.NAME} records no gate verdict")
    return ModelEvaluation(report.metrics, report.champion, report.gate, stage)


class GateFailed(PermanentError, RuntimeError):
    """The challenger failed the gate; the message lists every failed check with its numbers."""


def registered_as(cfg: LlmopsConfig, model_dir: Path, *, name: str | None = None) -> str | None:
    """``models:/<name>/<N>`` when a version with this model's content (``content_sha256``) is
    registered already (under ``name``, or any name), else None.

    A directory that is not a complete model (no config.json or weights) is not registered:
    None, and loading it for the evaluation reports what is missing.
    """
    from llmops.registry import model_registry as reg

    try:
        digest = reg.content_sha256(model_dir)
    except reg.RegistryError:
        return None
    return reg.find_by_content(cfg, digest, name=name)


def _lineage(info: ModelInfo | None, metrics: EvalMetrics, champion: str | None) -> ModelLineage:
    tokenizer = info.inputs.get("tokenizer") if info else None
    retrain = None
    if info and info.data_card and (Path(info.data_card.path) / DataCard.NAME).exists():
        retrain = DataCard.read(Path(info.data_card.path)).retrain  # an incremental card: a retraining
    return ModelLineage(base_version=retrain.version if retrain else None,
                        drift_report=retrain.drift_report if retrain else None,
                        data_card_hash=info.data_card.hash if info and info.data_card else None,
                   tokenizer_hash=tokenizer.sha256 if tokenizer else None,
                   base_model=(info.model.base if info else None) or "from scratch",
                   training_run=info.mlflow_run_id if info else None,
                   code_version=info.code_version if info else None,
                   eval_data_hash=metrics.eval_data_hash, champion_compared=champion or "none")


def evaluate_candidate(cfg: LlmopsConfig, model_dir: Path, *, variant: str | None = None,
                       served_variant: str | None = None,
                       parent_run_id: str | None = None) -> CandidateEvaluation | AlreadyRegistered:
    """Evaluate ``model_dir``, re-evaluate the current champion on the same data, run the gate.

    One MLflow run per (model, evaluation data, champion) records the metrics (under the
    names the gate uses), the report, the model card and ``gate_result`` -- a failing model
    is recorded too. Returns what ``register_candidate`` reads.

    One model, one version: when the model's content is registered already (an Asset event
    replayed, a re-run that trained the same bits), nothing is evaluated or recorded and the
    result is :class:`AlreadyRegistered`.
    """
    from llmops.registry import model_registry as reg, tracking

    model_dir = Path(model_dir)
    name = reg.registered_name(variant, served_variant)
    registered = registered_as(cfg, model_dir, name=name)
    if registered:
        return AlreadyRegistered(name=name, model_dir=str(model_dir), already_registered=registered,
                                 message=f"{model_dir}: already registered as {registered}")
    champion_version = reg.version_for(cfg, name, reg.CHAMPION)
    champion = f"models:/{name}/{champion_version}" if champion_version else None
    ev = cfg.evaluation
    out = run_evaluation(cfg, model_dir, champion=champion,
                         gate_file=Path(ev.gate_file) if ev.gate_file else None,
                         cases=Path(ev.cases_file) if ev.cases_file else None,
                         canaries=Path(ev.canaries_file) if ev.canaries_file else None,
                         max_questions=ev.max_questions, model_card=name)
    key = stable_hash({"model": str(model_dir), "eval": out.metrics.eval_data_hash, "champion": champion})
    run_id = tracking.job_run(cfg, f"evaluate-{key}", f"evaluate-{variant or 'model'}",
                              parent_run_id=parent_run_id, tags={"llmops.kind": "evaluate"})
    lineage = _lineage(model_info(model_dir), out.metrics, champion)
    logger = tracking.RunLogger(run_id, tracking.tracking_uri(cfg))
    logger.log_metrics(out.metrics.numbers(), step=0)
    logger.log_artifact(out.report.path, artifact_path="evaluation")
    logger.set_tags(out.gate.tags() | lineage.tags())
    logger.end("FINISHED" if out.gate.passed else "FAILED")
    return CandidateEvaluation(name=name, model_dir=str(model_dir), run_id=run_id, metrics=out.metrics, gate=out.gate,
                               gate_passed=out.gate.passed, gate_message=out.gate.failure_message(),
                               gate_tags=out.gate.tags(), lineage=lineage, report=str(out.report_md),
                               model_card=str(out.model_card))


def require_gate_passed(evaluation: CandidateEvaluation) -> None:
    """Raise ``GateFailed`` (permanent: the verdict is final) unless ``evaluation`` passed the gate."""
    if not evaluation.gate_passed:
        raise GateFailed(f"{evaluation.name}: {evaluation.gate_message}; nothing is registered or deployed, "
                         f"the champion keeps serving (report: {evaluation.report})")


def register_candidate(cfg: LlmopsConfig,
                       evaluation: CandidateEvaluation | AlreadyRegistered) -> RegisteredVersion | AlreadyRegistered:
    """Register a model that passed the gate as ``challenger`` (its HF directory + model card).

    The version is tagged ``content_sha256`` (``register_model``). An :class:`AlreadyRegistered`
    comes back as it is: nothing is registered twice."""
    from llmops.registry import model_registry as reg

    if isinstance(evaluation, AlreadyRegistered):
        return evaluation
    require_gate_passed(evaluation)
    card = Path(evaluation.model_card).read_text()
    numbers = evaluation.metrics.numbers()
    tags = (evaluation.gate_tags | evaluation.lineage.tags()
            | {f"metric.{k}": f"{v:.6g}" for k, v in numbers.items()})
    # The HF directory plus its card, as registered; staged beside the reports (same disk as
    # the model, and swept with the reports' work in progress if a worker dies here).
    parent = cfg.layout.reports("evaluation")
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-register-", dir=parent) as tmp:
        staged = Path(tmp) / "model"
        shutil.copytree(evaluation.model_dir, staged)
        (staged / "MODEL_CARD.md").write_text(card)
        version = reg.register_model(cfg, staged, evaluation.run_id, name=evaluation.name, tags=tags,
                                     description=card.splitlines()[0])
    return RegisteredVersion(name=evaluation.name, version=version, model_uri=f"models:/{evaluation.name}/{version}",
                             report=evaluation.report, run_id=evaluation.run_id)
