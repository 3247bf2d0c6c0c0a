"""Training data: token windows for pretraining, chat-formatted pairs for fine-tuning.

Both are addressed by the *global sample index* rather than iterated: optimizer step
``s``, micro-step ``m`` and rank ``r`` always read the same samples, so a resumed job
continues exactly where the checkpoint left off (the data position *is* the step) and
each rank reads only its own part without a sampler object to save.

Order: every epoch is a fresh permutation of the samples drawn from ``seed + epoch``,
identical on all ranks, and rank ``r`` takes its slice of each global batch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict

import numpy as np

from llmops.errors import PermanentError
from llmops.tokenizer.encode import load_shard
from llmops.tokenizer.windows import sliding_windows

IGNORE_INDEX = -100  # label value the loss skips (prompt tokens, padding)


class DataError(PermanentError, ValueError):
    """Training data is missing, empty or inconsistent with the model/tokenizer."""


def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


@dataclass(frozen=True)
class Schedule:
    """Which samples a rank reads at each optimizer step."""

    n_samples: int
    micro_batch_size: int
    grad_accum_steps: int
    world_size: int
    seed: int

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.grad_accum_steps * self.world_size

    def indices(self, step: int, micro: int, rank: int) -> np.ndarray:
        """Sample ids of rank ``rank``'s micro-batch ``micro`` of optimizer step ``step`` (0-based)."""
        first = (step * self.grad_accum_steps + micro) * self.world_size * self.micro_batch_size
        first += rank * self.micro_batch_size
        flat = np.arange(first, first + self.micro_batch_size)
        epochs, positions = np.divmod(flat, self.n_samples)
        out = np.empty_like(flat)
        for epoch in np.unique(epochs):
            perm = _permutation(self.n_samples, self.seed, int(epoch))
            mask = epochs == epoch
            out[mask] = perm[positions[mask]]
        return out

    def epoch_at(self, step: int) -> float:
        return step * self.global_batch / self.n_samples


class TokenWindows:
    """``context_length + 1``-token windows over one split of the token shards.

    Windows come from the data pipeline's ``sliding_windows`` with stride equal to the
    context, so consecutive windows share one token: the last label of a window is the
    first input of the next, and every token is predicted once per epoch. A trailing
    window shorter than ``context_length + 1`` is dropped (counted in ``dropped_tokens``)
    rather than padded, so every sample is full-length.
    """

    def __init__(self, tokens_dir: Path, split: str, context_length: int):
        self.tokens, _, self.meta = load_shard(Path(tokens_dir), split)
        span = context_length + 1
        windows = sliding_windows(len(self.tokens), span, context_length) if len(self.tokens) else []
        self.starts = np.array([s for s, e in windows if e - s == span], dtype=np.int64)
        self.context_length = context_length
        self.dropped_tokens = int(len(self.tokens) - (self.starts[-1] + span if len(self.starts) else 0))
        if len(self.starts) == 0:
            raise DataError(f"{tokens_dir}: the {split} split has {len(self.tokens)} tokens, fewer than one "
                            f"window of {span}; lower the context length or add data")

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, sample_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, labels) int64 arrays of shape (batch, context): labels are inputs shifted by one."""
        span = self.context_length + 1
        rows = np.stack([np.asarray(self.tokens[s:s + span], dtype=np.int64) for s in self.starts[sample_ids]])
        return rows[:, :-1], rows[:, 1:]


# ---- supervised fine-tuning -------------------------------------------------------

def _unit_hash(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Pair(TypedDict):
    """What training reads of a line of a fine-tuning JSONL file (the Q&A set's lines carry more)."""

    question: str
    answer: str
    page_id: NotRequired[str]
    """The source page: its questions stay on one side of the train/validation split."""


def read_pairs(path: Path) -> list[Pair]:
    """Question/answer records of a JSONL file; each needs non-empty ``question`` and ``answer``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"fine-tuning data {path} does not exist")
    pairs: list[Pair] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) and record[k].strip()
                                                   for k in ("question", "answer")):
            raise DataError(f"{path}:{n}: needs non-empty string fields 'question' and 'answer'")
        pair = Pair(question=record["question"], answer=record["answer"])
        if record.get("page_id"):
            pair["page_id"] = str(record["page_id"])
        pairs.append(pair)
    if not pairs:
        raise DataError(f"fine-tuning data {path} holds no question/answer pair")
    return pairs


def split_pairs(pairs: list[Pair], validation_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Train/validation split by source page (``page_id``, else the question), so that the
    questions of one page never sit on both sides. Keeps at least one pair on each side."""
    def key(p: Pair) -> str:
        return str(p.get("page_id") or p["question"])

    val = [p for p in pairs if _unit_hash(key(p), seed) < validation_fraction]
    train = [p for p in pairs if _unit_hash(key(p), seed) >= validation_fraction]
    if not val and len(train) > 1:
        val, train = train[-1:], train[:-1]
    if not train:
        raise DataError(f"all {len(pairs)} pairs fell in validation; add data or lower validation_fraction")
    return train, val


@dataclass
class ChatExamples:
    """Tokenised chat examples: ``input_ids`` and ``labels`` with the prompt masked out."""

    input_ids: list[np.ndarray]
    labels: list[np.ndarray]
    truncated: int
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, sample_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs, labels, attention_mask), right-padded to the longest in the batch.

        ``labels`` are already shifted (label ``t`` is the token after input ``t``), the
        same contract as ``TokenWindows.batch``, so one loss function serves both.
        """
        seqs = [self.input_ids[i] for i in sample_ids]
        labs = [self.labels[i] for i in sample_ids]
        width = max(len(s) for s in seqs) - 1
        inputs = np.full((len(seqs), width), self.pad_id, dtype=np.int64)
        labels = np.full((len(seqs), width), IGNORE_INDEX, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for row, (s, lab) in enumerate(zip(seqs, labs, strict=True)):
            inputs[row, :len(s) - 1] = s[:-1]
            labels[row, :len(s) - 1] = lab[1:]
            mask[row, :len(s) - 1] = 1
        return inputs, labels, mask


def encode_chat_examples(pairs: list[Pair], tokenizer, max_length: int) -> ChatExamples:
    """Format each pair with the tokenizer's chat template and mask the prompt.

    The sequence is ``prompt + answer-turn + eos``: the template renders
    ``<|user|>q<|end|><|assistant|>`` as the prompt (``add_generation_prompt``) and the
    rest of the conversation as the answer turn; the end-of-text id closes it so that
    generation learns to stop. Only answer tokens (and the closing ones) carry labels.
    Too-long examples are cut on the answer side, keeping the whole prompt, and counted.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("the tokenizer has no chat template; fine-tuning needs one to format prompts")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise DataError("the tokenizer has no end-of-text (eos) token")
    inputs, labels, truncated = [], [], 0
    for pair in pairs:
        user = [{"role": "user", "content": pair["question"]}]
        prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": pair["answer"]}],
                                             tokenize=False)
        if not full.startswith(prompt):
            raise DataError("the chat template renders the prompt differently inside a conversation; "
                            "cannot mask the prompt reliably")
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"] + [eos_id]
        if len(prompt_ids) + 2 > max_length:
            truncated += 1
            continue  # not even room for an answer token: nothing to learn from this one
        if len(prompt_ids) + len(answer_ids) > max_length:
            truncated += 1
            answer_ids = answer_ids[:max_length - len(prompt_ids)]
        ids = np.array(prompt_ids + answer_ids, dtype=np.int64)
        lab = ids.copy()
        lab[:len(prompt_ids)] = IGNORE_INDEX
        inputs.append(ids)
        labels.append(lab)
    if not inputs:
        raise DataError(f"no example fits in max_length={max_length} tokens")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    return ChatExamples(inputs, labels, truncated, pad_id)
