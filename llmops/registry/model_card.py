"""The model card (Markdown) logged with every registered model version: intended use,
data sources and the data card's numbers, training setup, evaluation results,
limitations and PII handling, all from the model's lineage and its evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRIC_ORDER = ("bits_per_byte", "perplexity", "bleu", "rouge1", "rouge2", "rougeL", "exact_match", "distinct_1",
                "distinct_2", "pii_leak_rate", "behaviour_pass_rate", "latency_s_p50", "tokens_per_s")


def _data_card(info: dict[str, Any]) -> dict[str, Any] | None:
    card = info.get("data_card") or {}
    path = Path(card.get("path", "")) / "data_card.json"
    return json.loads(path.read_text()) if card.get("path") and path.exists() else None


def render_model_card(model_dir: Path, metrics: dict[str, Any], gate: dict[str, Any], *, name: str,
                      version: str | None = None) -> str:
    info_file = Path(model_dir) / "llmops_model.json"
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    config = json.loads((Path(model_dir) / "config.json").read_text())
    card = _data_card(info)
    lines = [f"# Model card: {name}" + (f" version {version}" if version else ""), "",
             "## Intended use", "",
             "A small question-answering assistant for the documentation it was trained on (the demo: the "
             "Python language reference), served through Triton. It is a research-scale model: answers are "
             "often wrong or off-topic; it must not be used for decisions, nor as a source of facts about people.",
             "", "## Model and training", "",
             f"- Architecture: `{config.get('architectures', ['?'])[0]}`, {info.get('parameters', '?'):,} parameters, "
             f"hidden size {config.get('hidden_size')}, {config.get('num_hidden_layers')} layers, "
             f"vocabulary {config.get('vocab_size')}, context {config.get('max_position_embeddings')}."
             if isinstance(info.get("parameters"), int) else f"- Architecture: `{config.get('architectures')}`.",
             f"- Training: {info.get('kind', '?')} `{info.get('name', '?')}` on {info.get('world_size', '?')} "
             f"DeepSpeed rank(s), ZeRO-{info.get('zero_stage', '?')}, {info.get('precision', '?')}; method "
             f"{(info.get('model') or {}).get('method', 'pretraining')}; validation loss "
             f"{info.get('first_val_loss')} → {info.get('final_val_loss')}.",
             f"- Base model: `{(info.get('model') or {}).get('base', 'trained from scratch')}`.",
             f"- Training run: `{info.get('run_dir', '?')}` (MLflow run `{info.get('mlflow_run_id')}`), code "
             f"`{info.get('code_version')}`.", "", "## Data", ""]
    if card:
        docs = card.get("documents", {})
        lines += [f"- Source: crawled web pages, {docs.get('after_dedup', '?')} documents after cleaning and "
                  f"deduplication (duplicate rate {docs.get('duplicate_rate', '?')}).",
                  f"- Tokens: {card.get('tokens', {}).get('n_tokens', '?')} in the shards.",
                  f"- Data card: `{(info.get('data_card') or {}).get('path')}` (hash "
                  f"`{(info.get('data_card') or {}).get('hash')}`)."]
    else:
        lines.append("- No data card is recorded for this model.")
    lines += ["", "## PII handling", "",
              "Personal data (names, e-mail addresses, phone numbers, SSNs, credit cards, IP addresses, locations, "
              "secrets) was redacted with Microsoft Presidio before tokenization; only the redacted corpus was "
              f"published for training. Canary check: PII leak rate {metrics.get('pii_leak_rate')} (prompts made of "
              "the prefixes of planted values must not be completed).", "",
              "## Evaluation", "", "| metric | value |", "|---|---|"]
    for key in METRIC_ORDER:
        if isinstance(metrics.get(key), (int, float)):
            lines.append(f"| {key} | {metrics[key]:.4g} |")
    lines += ["", f"Evaluation data hash: `{metrics.get('eval_data_hash')}`. Gate: "
              f"**{'passed' if gate.get('passed') else 'failed'}**"
              + (" (compared with the champion)" if gate.get("champion_compared") else " (floors only)") + ".",
              "", "## Limitations", "",
              "- Trained on a few hundred kilobytes of text: fluent-looking but unreliable answers.",
              "- English only; questions far from the training documents get generic text.",
              "- Redaction is statistical: a PII value Presidio missed could have been trained on; the canary "
              "check samples, it does not prove absence.", ""]
    return "\n".join(lines)
