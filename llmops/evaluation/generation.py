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
from typing import TypedDict

from llmops.errors import PermanentError
from llmops.evaluation import metrics

SAMPLE_ROWS = 10  # rows of (question, reference, completion) kept for the report table


class Continuation(TypedDict):
    """One prompt's greedy or sampled continuation (:func:`continue_prompts`)."""

    ids: list[int]
    stopped: bool
    seconds: float


class Answer(TypedDict):
    """One question's answer (:func:`generate_answers`)."""

    question: str
    completion: str
    new_tokens: int
    stopped: bool
    seconds: float


class Sample(TypedDict):
    """One row of the report's sample table."""

    question: str
    reference: str
    completion: str


class QaMetrics(TypedDict):
    """What :func:`qa_generation_metrics` measured."""

    bleu: float
    rouge1: float
    rouge2: float
    rougeL: float  # noqa: N815 - the metric's name
    exact_match: float
    distinct_1: float
    distinct_2: float
    latency_s_p50: float
    latency_s_p95: float
    tokens_per_s: float
    pairs: int
    stopped_share: float
    samples: list[Sample]


class ModelLoadError(PermanentError, ValueError):
    """The directory holds no model that loads (no config.json, broken or mismatched weights,
    no usable tokenizer). Permanent: the same files fail the same way on every try."""


def load_model(model_dir: str | Path):
    """``(model, tokenizer)`` of an exported directory on CPU in eval mode, set up for batched generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise ModelLoadError(f"{model_dir} is not a Hugging Face model directory (no config.json); "
                             f"export a training run first (`llmops export`)")
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to("cpu").eval()
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except Exception as exc:  # transformers and safetensors raise OSError, ValueError, RuntimeError and their own
        raise ModelLoadError(f"{model_dir}: the model does not load: {type(exc).__name__}: {exc}") from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"{model_dir}: the tokenizer has neither a pad nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def stop_token_ids(model, tokenizer=None) -> list[int]:
    """The ids that end an answer: generation_config.json's ``eos_token_id`` (int or list),
    else the model config's, else the tokenizer's; ``[]`` when none names one."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = getattr(model.config, "eos_token_id", None)
    if ids is None and tokenizer is not None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return []
    return [int(i) for i in ([ids] if isinstance(ids, int) else ids)]


def chat_prompts(tokenizer, questions: Sequence[str]) -> list[str]:
    """Each question as one user turn through the tokenizer's chat template, ready for the answer."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("the tokenizer has no chat template; evaluation prompts the model as it was fine-tuned")
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                          tokenize=False) for q in questions]


def continue_prompts(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 8,
                     stop_ids: Sequence[int] | None = None, do_sample: bool = False, temperature: float = 1.0,
                     top_p: float = 1.0) -> list[Continuation]:
    """The one batched generation loop of the evaluation: ``{ids, stopped, seconds}`` per prompt, in order.

    Prompts are tokenized as they are (a chat prompt already holds its special tokens),
    batched with *left* padding and an attention mask, so every row's new tokens start
    at the same column and pads are never attended to. ``ids`` are the new tokens up to
    and including the first stop id (default: :func:`stop_token_ids`), so the pads
    ``generate`` appends to rows that finished early never show; ``stopped`` is False
    when a row ran into ``max_new_tokens``; ``seconds`` is the batch's wall time divided
    by its size (the per-request cost at this batch size). Sampling uses the global
    torch generator: seed it before the call for reproducible samples.
    """
    import torch

    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not a single string")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if do_sample and (temperature <= 0 or not 0 < top_p <= 1):
        raise ValueError(f"sampling needs temperature > 0 and 0 < top_p <= 1 (got {temperature}, {top_p})")
    stop = list(stop_token_ids(model, tokenizer) if stop_ids is None else stop_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(stop), 0)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
    device = next(model.parameters()).device
    side, was_training = tokenizer.padding_side, model.training
    tokenizer.padding_side = "left"
    model.eval()
    records: list[Continuation] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start:start + batch_size])
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            began = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(input_ids=enc["input_ids"].to(device),
                                     attention_mask=enc["attention_mask"].to(device), max_new_tokens=max_new_tokens,
                                     eos_token_id=stop or None, pad_token_id=pad_id, num_beams=1, **sampling)
            seconds = (time.perf_counter() - began) / len(batch)
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                end = next((i for i, t in enumerate(row) if t in stop), None)
                records.append({"ids": row if end is None else row[:end + 1], "stopped": end is not None,
                                "seconds": seconds})
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return records


def generate_answers(model, tokenizer, questions: list[str], *, max_new_tokens: int = 64, batch_size: int = 8,
                     do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                     seed: int | None = None) -> list[Answer]:
    """One record per question, in order: ``question``, ``completion``, ``new_tokens``, ``stopped``, ``seconds``.

    ``new_tokens`` counts the generated tokens up to and including the stop token;
    ``stopped`` is False when the answer ran into ``max_new_tokens`` instead (a truncated
    answer, worth reporting). With ``seed`` set, sampling is reproducible: the global
    torch generator is seeded once at the start of the call.
    """
    import torch

    if isinstance(questions, str):
        raise TypeError("questions must be a list of strings, not a single string")
    if tokenizer.padding_side != "left":
        raise ValueError("batched generation needs tokenizer.padding_side == 'left' (use load_model)")
    if not stop_token_ids(model, tokenizer):
        raise ValueError("neither the generation config nor the tokenizer names an end-of-text token")
    if seed is not None:
        torch.manual_seed(seed)
    records = continue_prompts(model, tokenizer, chat_prompts(tokenizer, questions), max_new_tokens=max_new_tokens,
                               batch_size=batch_size, do_sample=do_sample, temperature=temperature, top_p=top_p)
    return [{"question": q, "completion": tokenizer.decode(r["ids"], skip_special_tokens=True).strip(),
             "new_tokens": len(r["ids"]), "stopped": r["stopped"], "seconds": r["seconds"]}
            for q, r in zip(questions, records, strict=True)]


def qa_generation_metrics(model, tokenizer, pairs: list[dict], *, max_new_tokens: int = 64,
                          diversity_samples: int = 2, seeds: Sequence[int] = (0, 1),
                          batch_size: int = 8) -> QaMetrics:
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
    rouge = metrics.rouge(predictions, references)
    return {
        "bleu": metrics.bleu(predictions, references),
        "rouge1": rouge["rouge1"], "rouge2": rouge["rouge2"], "rougeL": rouge["rougeL"],
        "exact_match": metrics.exact_match(predictions, references),
        "distinct_1": metrics.distinct_n(sampled, 1),
        "distinct_2": metrics.distinct_n(sampled, 2),
        "latency_s_p50": float(np.percentile(latencies, 50)),
        "latency_s_p95": float(np.percentile(latencies, 95)),
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "pairs": len(pairs),
        "stopped_share": sum(r["stopped"] for r in greedy) / len(greedy),
        "samples": [{"question": q, "reference": ref, "completion": c}
                    for q, ref, c in list(zip(questions, references, predictions, strict=True))[:SAMPLE_ROWS]],
    }
