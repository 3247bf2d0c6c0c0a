"""Before and after a retraining, on what it was for: the new pages' held-out questions.

The gate judges a retrained model on the mixed evaluation set (the old held-out questions
and the new ones); this answers the narrower question people ask after a retraining on new
pages: did the new version learn them? Per version: bits per byte of the reference answers
given the questions (how well it predicts the pages' own sentences), ROUGE-L of its greedy
answers against them, and one answer to show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from llmops.config import LlmopsConfig
from llmops.records.data import QaPair


@dataclass(frozen=True)
class OnNewPages:
    version: str
    bits_per_byte: float
    rouge_l: float
    question: str
    answer: str
    pairs: int


def new_page_pairs(card: Path) -> list[QaPair]:
    """The held-out pairs of an incremental data card's new pages."""
    from llmops.data.qa import HELDOUT_FILE, read_pairs
    from llmops.records.data import DataCard
    from llmops.retrain.lineage import card_input

    increment = DataCard.read(card).increment
    if increment is None:
        raise ValueError(f"{card} is not an incremental data card (no increment)")
    pages = set(increment.new_pages)
    return [p for p in read_pairs(card_input(card, "qa") / HELDOUT_FILE) if p.url in pages]


def answer_bits_per_byte(model, tokenizer, pairs: list[QaPair]) -> float:
    """Bits per UTF-8 byte of each reference answer, conditioned on its chat prompt, pooled."""
    import torch

    from llmops.evaluation.generation import chat_prompts

    nats, n_bytes = 0.0, 0
    for pair, prompt in zip(pairs, chat_prompts(tokenizer, [p.question for p in pairs]), strict=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(pair.answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + answer_ids])
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1]
        nats += float(torch.nn.functional.cross_entropy(logits, ids[0, len(prompt_ids):], reduction="sum"))
        n_bytes += len(pair.answer.encode())
    return nats / math.log(2) / max(n_bytes, 1)


def compare_versions(cfg: LlmopsConfig, versions: list[str], pairs: list[QaPair], *,
                     max_new_tokens: int = 48) -> list[OnNewPages]:
    """Each registered version of the served model on ``pairs``."""
    from llmops.evaluation.generation import generate_answers, load_model
    from llmops.evaluation.metrics import rouge
    from llmops.registry.model_registry import SERVED_MODEL, download

    if not pairs:
        raise ValueError("no held-out pairs of new pages to compare on")
    out = []
    for version in versions:
        uri = f"models:/{SERVED_MODEL}/{version}"
        model, tokenizer = load_model(download(cfg, uri, cfg.layout.cache("models", f"compare-{version}")))
        answers = [a["completion"] for a in generate_answers(model, tokenizer, [p.question for p in pairs],
                                                             max_new_tokens=max_new_tokens)]
        out.append(OnNewPages(version=version, bits_per_byte=answer_bits_per_byte(model, tokenizer, pairs),
                              rouge_l=rouge(answers, [p.answer for p in pairs])["rougeL"],
                              question=pairs[0].question, answer=answers[0], pairs=len(pairs)))
    return out
