"""Generate answers with an exported model and score them: quality, diversity, latency.

The model is a plain Hugging Face directory (see ``llmops.training.export``), so this
is ordinary ``generate``: prompts go through the tokenizer's own chat template (the one
the model was fine-tuned on), generation stops at the ``generation_config.json`` stop
ids (end of text or end of turn), and only the new tokens are decoded. Prompts are
batched with *left* padding and an attention mask: a decoder-only model continues from
the last position of each row, so the padding must sit before the prompt, never
between the prompt and the answer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmops.evaluation import metrics

SAMPLE_ROWS = 10  # rows of (question, reference, completion) kept for the report table


def load_model(model_dir: str | Path):
    """``(model, tokenizer)`` of an exported directory on CPU in eval mode, set up for batched generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"{model_dir} is not a Hugging Face model directory (no config.json); "
                                f"export a training run first (`llmops export`)")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to("cpu").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{model_dir}: the tokenizer has neither a pad nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _stop_ids(model, tokenizer) -> list[int]:
    """The ids that end an answer: the generation config's eos ids, else the tokenizer's eos."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("neither the generation config nor the tokenizer names an end-of-text token")
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def _prompts(tokenizer, questions: Sequence[str]) -> list[str]:
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the tokenizer has no chat template; evaluation prompts the model as it was fine-tuned")
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                          tokenize=False) for q in questions]


def generate_answers(model, tokenizer, questions: list[str], *, max_new_tokens: int = 64, batch_size: int = 8,
                     do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                     seed: int | None = None) -> list[dict[str, Any]]:
    """One record per question, in order: ``question``, ``completion``, ``new_tokens``, ``stopped``, ``seconds``.

    ``new_tokens`` counts the generated tokens up to and including the stop token;
    ``stopped`` is False when the answer ran into ``max_new_tokens`` instead (a truncated
    answer, worth reporting). ``seconds`` is the batch's wall time divided by its size,
    the per-request cost at this batch size. With ``seed`` set, sampling is reproducible:
    the global torch generator is seeded once at the start of the call.
    """
    import torch

    if isinstance(questions, str):
        raise TypeError("questions must be a list of strings, not a single string")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if do_sample and (temperature <= 0 or not 0 < top_p <= 1):
        raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1 (got {temperature}, {top_p})")
    if tokenizer.padding_side != "left":
        raise ValueError("batched generation needs tokenizer.padding_side == 'left' (use load_model)")
    stop = _stop_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
    if seed is not None:
        torch.manual_seed(seed)

    records: list[dict[str, Any]] = []
    prompts = _prompts(tokenizer, questions)
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        # The template already holds every special token; adding more (a BOS) would shift the prompt.
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        began = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                 max_new_tokens=max_new_tokens, eos_token_id=stop, pad_token_id=pad_id,
                                 **sampling)
        seconds = (time.perf_counter() - began) / len(batch)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        for question, ids in zip(questions[start:start + batch_size], new):
            end = next((i for i, t in enumerate(ids) if t in stop), None)
            kept = ids if end is None else ids[:end + 1]
            records.append({
                "question": question,
                "completion": tokenizer.decode(kept, skip_special_tokens=True).strip(),
                "new_tokens": len(kept),
                "stopped": end is not None,
                "seconds": seconds,
            })
    return records


def qa_generation_metrics(model, tokenizer, pairs: list[dict], *, max_new_tokens: int = 64,
                          diversity_samples: int = 2, seeds: Sequence[int] = (0, 1),
                          batch_size: int = 8) -> dict[str, Any]:
    """Score the model's answers to ``pairs`` (dicts with ``question`` and ``answer``).

    Quality (``bleu`` 0-100, ``rouge1``/``rouge2``/``rougeL`` and ``exact_match`` 0-1) is
    measured on greedy answers, so it is deterministic and comparable between models.
    Diversity (``distinct_1``/``distinct_2``) is measured on sampled answers
    (temperature 1.0, top-p 0.95), ``diversity_samples`` runs seeded with the first
    ``diversity_samples`` of ``seeds``, pooled: greedy decoding would hide how
    repetitive the model's distribution really is. Latency (``latency_s_p50``,
    ``latency_s_p95`` per request, ``tokens_per_s``) comes from the greedy run.
    """
    import numpy as np

    if isinstance(pairs, dict):
        raise TypeError("pairs must be a list of {'question', 'answer'} dicts, not one dict")
    if not pairs:
        raise ValueError("pairs is empty; there is nothing to evaluate")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict) or not isinstance(pair.get("question"), str) \
                or not isinstance(pair.get("answer"), str):
            raise TypeError(f"pairs[{i}] needs string 'question' and 'answer' fields, got {pair!r:.200}")
    if diversity_samples < 1:
        raise ValueError(f"diversity_samples must be at least 1, got {diversity_samples}")
    if len(seeds) < diversity_samples:
        raise ValueError(f"diversity_samples={diversity_samples} needs as many seeds, got {list(seeds)}")

    questions = [p["question"] for p in pairs]
    references = [p["answer"] for p in pairs]
    greedy = generate_answers(model, tokenizer, questions, max_new_tokens=max_new_tokens, batch_size=batch_size)
    predictions = [r["completion"] for r in greedy]

    sampled: list[str] = []
    for seed in list(seeds)[:diversity_samples]:
        sampled += [r["completion"] for r in generate_answers(
            model, tokenizer, questions, max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=True,
            temperature=1.0, top_p=0.95, seed=seed)]

    latencies = np.array([r["seconds"] for r in greedy])
    wall = float(latencies.sum())  # per-request shares of each batch add back up to the batch times
    tokens = sum(r["new_tokens"] for r in greedy)
    return {
        "bleu": metrics.bleu(predictions, references),
        **metrics.rouge(predictions, references),
        "exact_match": metrics.exact_match(predictions, references),
        "distinct_1": metrics.distinct_n(sampled, 1),
        "distinct_2": metrics.distinct_n(sampled, 2),
        "latency_s_p50": float(np.percentile(latencies, 50)),
        "latency_s_p95": float(np.percentile(latencies, 95)),
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "pairs": len(pairs),
        "stopped_share": sum(r["stopped"] for r in greedy) / len(greedy),
        "samples": [{"question": q, "reference": ref, "completion": c}
                    for q, ref, c in list(zip(questions, references, predictions))[:SAMPLE_ROWS]],
    }
