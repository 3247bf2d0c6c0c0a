"""The model card (Markdown) logged with every registered model version: intended use,
data sources and the data card's numbers, training setup, evaluation results,
limitations and PII handling, all from the model's lineage and its evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from llmops.records.data import DataCard
from llmops.records.evaluation import EvalMetrics, GateResult
from llmops.records.training import ModelInfo

METRIC_ORDER = ("bits_per_byte", "perplexity", "bleu", "rouge1", "rouge2", "rougeL", "exact_match", "distinct_1",
                "distinct_2", "pii_leak_rate", "behaviour_pass_rate", "latency_s_p50", "tokens_per_s")


def model_info(model_dir: Path) -> ModelInfo | None:
    """The lineage an exported model carries (``llmops_model.json``); None for a model that has
    none (a base model from the Hub, a plain Hugging Face directory). A file that is there but
    does not validate raises ``RecordError``."""
    path = Path(model_dir) / ModelInfo.NAME
    return ModelInfo.read(path) if path.is_file() else None


def _data_card(info: ModelInfo | None) -> DataCard | None:
    if info is None or info.data_card is None:
        return None
    path = Path(info.data_card.path) / DataCard.NAME
    return DataCard.read(path) if path.exists() else None


def render_model_card(model_dir: Path, metrics: EvalMetrics, gate: GateResult, *, name: str,
                      version: str | None = None) -> str:
    info = model_info(model_dir)
    config = json.loads((Path(model_dir) / "config.json").read_text())
    card = _data_card(info)
    lines = [f"# Model card: {name}" + (f" version {version}" if version else ""), "",
             "## Intended use", "",
             "A small question-answering assistant for the documentation it was trained on (the demo: the "
             "Python language reference), served through Triton. It is a research-scale model: answers are "
             "often wrong or off-topic; it must not be used for decisions, nor as a source of facts about people.",
             "", "## Model and training", "", *_training_lines(info, config), "", "## Data", ""]
    if card and info and info.data_card:
        docs = card.documents
        lines += [f"- Source: crawled web pages, {docs.after_dedup} documents after cleaning and "
                  f"deduplication (duplicate rate {docs.duplicate_rate}).",
                  f"- Tokens: {card.tokens.n_tokens} in the shards.",
                  f"- Data card: `{info.data_card.path}` (hash `{info.data_card.hash}`)."]
    else:
        lines.append("- No data card is recorded for this model.")
    lines += ["", "## PII handling", "",
              "Personal data (names, e-mail addresses, phone numbers, SSNs, credit cards, IP addresses, locations, "
              "secrets) was redacted with Microsoft Presidio before tokenization; only the redacted corpus was "
              f"published for training. Canary check: PII leak rate {metrics.pii_leak_rate} (prompts made of "
              "the prefixes of planted values must not be completed).", "",
              "## Evaluation", "", "| metric | value |", "|---|---|"]
    for key in METRIC_ORDER:
        value = metrics.number(key)
        if value is not None:
            lines.append(f"| {key} | {value:.4g} |")
    lines += ["", f"Evaluation data hash: `{metrics.eval_data_hash}`. Gate: "
              f"**{'passed' if gate.passed else 'failed'}**"
              + (" (compared with the champion)" if gate.champion_compared else " (floors only)") + ".",
              "", "## Limitations", "",
              "- Trained on a few hundred kilobytes of text: fluent-looking but unreliable answers.",
              "- English only; questions far from the training documents get generic text.",
              "- Redaction is statistical: a PII value Presidio missed could have been trained on; the canary "
              "check samples, it does not prove absence.", ""]
    return "\n".join(lines)


def _training_lines(info: ModelInfo | None, config: dict) -> list[str]:
    """Architecture, training setup, base model and run (``config`` is the model's ``config.json``)."""
    if info is None:
        return [f"- Architecture: `{config.get('architectures')}`.",
                f"- Training: not recorded (the model carries no `{ModelInfo.NAME}`)."]
    return [
        f"- Architecture: `{config.get('architectures', ['?'])[0]}`, {info.parameters:,} parameters, "
        f"hidden size {config.get('hidden_size')}, {config.get('num_hidden_layers')} layers, "
        f"vocabulary {config.get('vocab_size')}, context {config.get('max_position_embeddings')}.",
        f"- Training: {info.kind} `{info.name}` on {info.world_size} DeepSpeed rank(s), ZeRO-{info.zero_stage}, "
        f"{info.precision}; method {info.model.method or 'pretraining'}; validation loss "
        f"{info.first_val_loss} → {info.final_val_loss}.",
        f"- Base model: `{info.model.base or 'trained from scratch'}`.",
        f"- Training run: `{info.run_dir}` (MLflow run `{info.mlflow_run_id}`), code `{info.code_version}`.",
    ]
