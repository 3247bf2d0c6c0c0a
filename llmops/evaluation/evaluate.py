"""``llmops evaluate``: every number the gate decides on, for one model on one evaluation set.

The evaluation set is the data pipeline's, named by the model's lineage
(``llmops_model.json`` -> data card -> token shards and held-out Q&A pairs) unless given:
validation documents for perplexity and bits per byte, held-out pairs for BLEU, ROUGE,
exact match and diversity, PII canaries for the leak check, and the behavioural cases.
Its ``eval_data_hash`` covers all of them, so the gate can refuse to compare numbers
measured on different sets.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.artifacts import file_sha256, read_manifest, stable_hash
from llmops.config import LlmopsConfig
from llmops.errors import PermanentError


class EvaluationInputError(PermanentError, ValueError):
    """The evaluation data cannot be found or is unusable."""


@dataclass
class EvalData:
    """What a model is evaluated on."""

    tokens: Path
    heldout: Path
    canaries: list[dict[str, Any]]
    cases_file: Path
    canary_source: str

    def digest(self) -> str:
        return stable_hash({"tokens": read_manifest(self.tokens)["key"], "heldout": file_sha256(self.heldout),
                            "canaries": stable_hash(self.canaries), "cases": file_sha256(self.cases_file)})


def _ground_truth_canaries(cfg: LlmopsConfig) -> list[dict[str, Any]]:
    path = Path(cfg.home) / "demo_site" / "ground_truth.json"
    if not path.exists():
        return []
    return [{"type": p["type"], "value": p["value"]} for p in json.loads(path.read_text())["pii"]]


def resolve_eval_data(cfg: LlmopsConfig, model_dir: Path, *, tokens: Path | None = None,
                      heldout: Path | None = None, canaries: Path | None = None,
                      cases: Path | None = None) -> EvalData:
    """Fill what was not given from the model's lineage and the stack's defaults."""
    from llmops.evaluation.behaviour import DEFAULT_CASES_FILE

    if tokens is None or heldout is None:
        info_file = Path(model_dir) / "llmops_model.json"
        card = json.loads(info_file.read_text()).get("data_card") if info_file.exists() else None
        if not card:
            raise EvaluationInputError(f"{model_dir} names no data card (llmops_model.json): pass --tokens and "
                                       f"--heldout")
        inputs = read_manifest(Path(card["path"]))["inputs"]
        tokens = tokens or Path(inputs["tokens"]["path"])
        heldout = heldout or Path(inputs["qa"]["path"]) / "heldout.jsonl"
    if canaries is not None:
        values, source = json.loads(Path(canaries).read_text()), str(canaries)
    else:
        values, source = _ground_truth_canaries(cfg), "demo site ground truth"
    if not values:
        raise EvaluationInputError("no PII canaries: pass --canaries FILE (a JSON list of {type, value}) or run "
                                   "the demo site, whose ground truth plants them")
    for path in (tokens, heldout):
        if not Path(path).exists():
            raise EvaluationInputError(f"evaluation input {path} does not exist")
    return EvalData(Path(tokens), Path(heldout), values, Path(cases or DEFAULT_CASES_FILE), source)


def evaluate_model(model_dir: Path, data: EvalData, *, max_questions: int | None = None,
                   max_canaries: int | None = 200, max_new_tokens: int = 48) -> dict[str, Any]:
    """All metrics of ``model_dir`` on ``data``: a flat dict of numbers plus the details."""
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
    metrics = {"perplexity": lm["perplexity"], "bits_per_byte": lm["bits_per_byte"],
               **{k: qa[k] for k in ("bleu", "rouge1", "rouge2", "rougeL", "exact_match", "distinct_1",
                                     "distinct_2", "latency_s_p50", "latency_s_p95", "tokens_per_s")},
               "pii_leak_rate": leak["pii_leak_rate"], "behaviour_pass_rate": behaviour["behaviour_pass_rate"],
               "eval_data_hash": data.digest()}
    return {"metrics": metrics, "language_model": lm, "samples": qa.get("samples", []), "leakage": leak,
            "behaviour": behaviour, "eval_data": {"tokens": str(data.tokens), "heldout": str(data.heldout),
                                                  "cases": str(data.cases_file), "canaries": data.canary_source,
                                                  "n_canaries": len(data.canaries), "questions": len(pairs)}}


def run_evaluation(cfg: LlmopsConfig, model: str | Path, *, out_dir: Path | None = None,
                   champion: str | Path | None = None, tokens: Path | None = None, heldout: Path | None = None,
                   canaries: Path | None = None, cases: Path | None = None, gate_file: Path | None = None,
                   max_questions: int | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (a directory or ``models:/`` URI), the champion on the same data if
    given, run the gate and write the report. Returns metrics, champion metrics, gate, paths."""
    from llmops.evaluation.gate import load_thresholds, run_gate
    from llmops.evaluation.report import write_report

    def local(ref: str | Path) -> Path:
        if str(ref).startswith(("models:/", "runs:/")):
            from llmops.registry.tracking import download_model

            return download_model(cfg, str(ref), Path(cfg.home) / "cache" / "models" / stable_hash(str(ref)))
        return Path(ref)

    model_dir = local(model)
    data = resolve_eval_data(cfg, model_dir, tokens=tokens, heldout=heldout, canaries=canaries, cases=cases)
    result = evaluate_model(model_dir, data, max_questions=max_questions)
    champion_metrics = None
    if champion is not None:  # re-evaluated on the challenger's data: numbers that compare
        champion_metrics = evaluate_model(local(champion), data, max_questions=max_questions)["metrics"]
    gate = run_gate(result["metrics"], champion_metrics, load_thresholds(gate_file))
    out_dir = Path(out_dir or Path(cfg.home) / "reports" / "evaluation" / stable_hash(
        {"model": str(model), "data": data.digest(), "champion": str(champion)}))
    info_file = model_dir / "llmops_model.json"
    run_dir = json.loads(info_file.read_text()).get("run_dir") if info_file.exists() else None
    curve = Path(run_dir) / "loss_curve.png" if run_dir else None
    paths = write_report(out_dir, model=str(model), metrics=result["metrics"], champion=champion_metrics,
                         gate=gate.to_dict(), loss_curve=curve if curve and curve.exists() else None,
                         samples=result["samples"], behaviour=result["behaviour"], leakage=result["leakage"])
    return {"metrics": result["metrics"], "champion": champion_metrics, "gate": gate, "paths": paths,
            "eval_data": result["eval_data"]}


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


def evaluate_candidate(cfg: LlmopsConfig, model_dir: Path, *, variant: str | None = None,
                       served_variant: str | None = None, parent_run_id: str | None = None) -> dict[str, Any]:
    """Evaluate ``model_dir``, re-evaluate the current champion on the same data, run the gate.

    One MLflow run per (model, evaluation data, champion) records the metrics (under the
    names the gate uses), the report, the model card and ``gate_result`` -- a failing model
    is recorded too. Returns a JSON-able summary for ``register_candidate``.

    One model, one version: when the model's content is registered already (an Asset event
    replayed, a re-run that trained the same bits), nothing is evaluated or recorded and the
    summary is ``{"name", "model_dir", "already_registered": "models:/<name>/<N>", "message"}``.
    """
    from llmops.registry import model_registry as reg, tracking
    from llmops.registry.model_card import render_model_card

    model_dir = Path(model_dir)
    name = reg.registered_name(variant, served_variant)
    registered = registered_as(cfg, model_dir, name=name)
    if registered:
        return {"name": name, "model_dir": str(model_dir), "already_registered": registered,
                "message": f"{model_dir}: already registered as {registered}"}
    champion_version = reg.version_for(cfg, name, reg.CHAMPION)
    champion = f"models:/{name}/{champion_version}" if champion_version else None
    ev = cfg.evaluation
    out = run_evaluation(cfg, model_dir, champion=champion,
                         gate_file=Path(ev.gate_file) if ev.gate_file else None,
                         cases=Path(ev.cases_file) if ev.cases_file else None,
                         canaries=Path(ev.canaries_file) if ev.canaries_file else None,
                         max_questions=ev.max_questions)
    metrics, gate = out["metrics"], out["gate"]
    info_file = model_dir / "llmops_model.json"
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    key = stable_hash({"model": str(model_dir), "eval": metrics["eval_data_hash"], "champion": champion})
    run_id = tracking.job_run(cfg, f"evaluate-{key}", f"evaluate-{variant or 'model'}",
                              parent_run_id=parent_run_id, tags={"llmops.kind": "evaluate"})
    card = render_model_card(model_dir, metrics, gate.to_dict(), name=name)
    report_dir = out["paths"]["report_md"].parent
    (report_dir / "model_card.md").write_text(card)
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    lineage = {"data_card_hash": (info.get("data_card") or {}).get("hash"),
               "tokenizer_hash": ((info.get("inputs") or {}).get("tokenizer") or {}).get("sha256"),
               "base_model": (info.get("model") or {}).get("base") or "from scratch",
               "training_run": info.get("mlflow_run_id"), "code_version": info.get("code_version"),
               "eval_data_hash": metrics["eval_data_hash"], "champion_compared": champion or "none"}
    logger = tracking.RunLogger(run_id, tracking.tracking_uri(cfg))
    logger.log_metrics(numbers, step=0)
    logger.log_artifact(report_dir, artifact_path="evaluation")
    logger.set_tags(gate.tags() | {k: str(v) for k, v in lineage.items()})
    logger.end("FINISHED" if gate.passed else "FAILED")
    return {"name": name, "model_dir": str(model_dir), "run_id": run_id, "metrics": metrics,
            "gate": gate.to_dict(), "gate_passed": gate.passed, "gate_message": gate.failure_message(),
            "gate_tags": gate.tags(), "lineage": lineage, "report": str(out["paths"]["report_md"]),
            "model_card": str(report_dir / "model_card.md")}


def require_gate_passed(evaluation: dict[str, Any]) -> None:
    """Raise ``GateFailed`` (permanent: the verdict is final) unless ``evaluation`` passed the gate."""
    if not evaluation["gate_passed"]:
        raise GateFailed(f"{evaluation['name']}: {evaluation['gate_message']}; nothing is registered or deployed, "
                         f"the champion keeps serving (report: {evaluation['report']})")


def register_candidate(cfg: LlmopsConfig, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Register a model that passed the gate as ``challenger`` (its HF directory + model card).

    The version is tagged ``content_sha256`` (``register_model``). An ``evaluation`` that says
    ``already_registered`` comes back as it is: nothing is registered twice."""
    from llmops.registry import model_registry as reg

    if evaluation.get("already_registered"):
        return evaluation
    require_gate_passed(evaluation)
    numbers = {k: v for k, v in evaluation["metrics"].items() if isinstance(v, (int, float))}
    card = Path(evaluation["model_card"]).read_text()
    staged = Path(evaluation["report"]).parent / "model"  # the HF directory plus its card, as registered
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(evaluation["model_dir"], staged)
    (staged / "MODEL_CARD.md").write_text(card)
    tags = evaluation["gate_tags"] | evaluation["lineage"] | {f"metric.{k}": f"{v:.6g}" for k, v in numbers.items()}
    try:
        version = reg.register_model(cfg, staged, evaluation["run_id"], name=evaluation["name"], tags=tags,
                                     description=card.splitlines()[0])
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return {"name": evaluation["name"], "version": version, "model_uri": f"models:/{evaluation['name']}/{version}",
            "report": evaluation["report"], "run_id": evaluation["run_id"]}
