"""Perplexity and bits per byte of a causal language model on the held-out token shards.

Every validation document (its tokens, the trailing end of text included) is scored on
its own: a document never sees the previous one as context, so the number does not
depend on shard order. Long documents are cut into sliding windows
(``llmops.tokenizer.windows``) laid over the document's *prediction positions*: position
``j`` reads tokens ``..j`` and predicts token ``j+1``. Window ``(s, e)`` feeds tokens
``s..e-1`` to the model, and only positions from its new-token offset on are scored,
so each token after the first is predicted exactly once, from at most ``window``
tokens of context, and the model never sees more than ``window`` positions. (Laying
the windows over the raw tokens instead would, with ``stride == window``, leave the
first token of every window unpredicted.) The first token of a document has nothing
to be predicted from and is not scored.

Two numbers come out. Perplexity is per *token*, so it depends on the tokenizer: a
tokenizer with longer tokens has fewer, harder predictions. Bits per byte divides the
same total log-loss by the UTF-8 size of the text instead, which does not depend on
how the text was cut into tokens; it is the number to compare models with different
tokenizers (or vocabulary sizes) on, and the one a gate should prefer.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from llmops.tokenizer.encode import load_shard
from llmops.tokenizer.windows import new_token_offsets, sliding_windows

if TYPE_CHECKING:
    from llmops.records.data import TokenShardMeta

log = logging.getLogger(__name__)

SPLIT = "validation"


class LmMetrics(TypedDict):
    """What :func:`lm_metrics` measured."""

    perplexity: float
    bits_per_byte: float | None
    nll_nats: float
    predicted_tokens: int
    bytes: int
    documents: int
    window: int
    stride: int
    bytes_from: str
    split: str


def _resolve_window(meta: TokenShardMeta, max_positions: int | None, window: int | None,
                    stride: int | None) -> tuple[int, int]:
    """``(window, stride)``: the shards' defaults, never past the model's position table.

    An explicit window larger than ``max_position_embeddings`` is an error (RoPE past
    its trained range scores garbage, silently); the shards' default is clipped to it.
    """
    if window is None:
        window = int(meta.window or 0) or (max_positions or 0)
        if not window:
            raise ValueError("no window given and the shards' meta.json has none")
        if max_positions and window > max_positions:
            log.info("window %d from the shards exceeds max_position_embeddings %d; using %d",
                     window, max_positions, max_positions)
            window = max_positions
    elif max_positions and window > max_positions:
        raise ValueError(f"window {window} exceeds the model's max_position_embeddings {max_positions}")
    if stride is None:
        stride = min(int(meta.stride or window), window)
    return window, stride


def _load_text_tokenizer(tokenizer: Any, model: Any, expected_sha256: str | None):
    """A ``tokenizers.Tokenizer`` to turn document tokens back into text (for their bytes).

    ``tokenizer`` may be a ``tokenizers.Tokenizer``, a path (file or directory), or None:
    then the ``tokenizer.json`` saved next to the model (``model.name_or_path``). A file
    whose SHA-256 differs from the one the shards were encoded with is refused: the
    model would be scored on ids that mean different text to it.
    """
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    from llmops.artifacts import file_sha256
    from llmops.tokenizer.train import tokenizer_file

    source = tokenizer if tokenizer is not None else getattr(model, "name_or_path", None)
    if not source or not Path(source).exists():
        raise ValueError("scoring a subset of the documents needs a tokenizer to count their bytes: pass "
                         "tokenizer=<dir or tokenizer.json>, or load the model from its exported directory")
    path = tokenizer_file(source)
    if expected_sha256 and file_sha256(path) != expected_sha256:
        raise ValueError(f"{path} is not the tokenizer the shards were encoded with (SHA-256 differs)")
    return Tokenizer.from_file(str(path))


def _score_batch(model: Any, batch: list[tuple[np.ndarray, int]], pad_id: int, device: Any) -> tuple[float, int]:
    """Summed NLL (nats) and count of the scored predictions of ``batch``.

    Each item is ``(tokens, first)``: the model reads ``tokens[:-1]`` and position ``j``
    (``j >= first``) is scored on predicting ``tokens[j+1]``. Right padding is safe for
    a causal model (a real position never attends to a later pad), the mask says so anyway.
    """
    import torch

    width = max(len(t) - 1 for t, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    targets = torch.zeros((len(batch), width), dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    scored = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, (tokens, first) in enumerate(batch):
        t = torch.from_numpy(tokens.astype(np.int64))
        n = len(t) - 1
        ids[row, :n], targets[row, :n], attention[row, :n] = t[:-1], t[1:], 1
        scored[row, first:n] = True
    logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # fp32 even when the model runs in bf16
    picked = logprobs.gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1)
    mask = scored.to(device)
    return float(-picked[mask].double().sum()), int(mask.sum())


def lm_metrics(model: Any, tokens_dir: str | Path, *, window: int | None = None, stride: int | None = None,
               max_documents: int | None = None, batch_size: int = 8, tokenizer: Any = None) -> LmMetrics:
    """Perplexity and bits per byte of ``model`` on the validation split of ``tokens_dir``.

    ``window`` defaults to the shards' ``meta.json`` window (clipped to the model's
    ``max_position_embeddings``), ``stride`` to the shards' stride; a stride below the
    window gives every window's new tokens more context, at more compute.
    ``max_documents`` scores the first N documents in shard order (deterministic).

    Bytes: when every document is scored, the split's ``n_bytes`` from ``meta.json``
    (the UTF-8 size of the source texts, counted at encode time: exact, no tokenizer
    needed). For a subset, the documents are decoded with ``tokenizer`` (default: the
    tokenizer saved next to the model) and their UTF-8 bytes counted; the byte-level
    tokenizer round-trips text exactly, so both ways agree. The end-of-text token is
    scored (predicting where a document ends is part of modelling it) but has no bytes.

    Returns ``perplexity``, ``bits_per_byte``, ``nll_nats`` (total), ``predicted_tokens``,
    ``bytes``, ``documents``, plus ``window``, ``stride``, ``bytes_from``.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_documents is not None and max_documents < 1:
        raise ValueError(f"max_documents must be >= 1, got {max_documents}")
    tokens_dir = Path(tokens_dir)
    tokens, index, meta = load_shard(tokens_dir, SPLIT)
    n_docs = len(index) - 1
    if n_docs == 0:
        raise ValueError(f"{tokens_dir}: the {SPLIT} split has no documents to score")
    config = model.config
    window, stride = _resolve_window(meta, getattr(config, "max_position_embeddings", None), window, stride)
    if len(tokens) and int(np.max(tokens)) >= config.vocab_size:
        raise ValueError(f"{tokens_dir} holds token id {int(np.max(tokens))}, past the model's vocabulary "
                         f"({config.vocab_size}): these shards were not made for this model")
    count = n_docs if max_documents is None else min(max_documents, n_docs)
    eos_id = meta.eos_id
    pad_id = eos_id if meta.pad_id is None else meta.pad_id

    # Work items: (tokens of one window plus its target, first scored position).
    items: list[tuple[np.ndarray, int]] = []
    for i in range(count):
        doc = np.asarray(tokens[index[i]:index[i + 1]])
        if len(doc) == 0 or doc[-1] != eos_id:
            raise ValueError(f"{tokens_dir}: {SPLIT} document {i} does not end with end of text: corrupt shard")
        positions = len(doc) - 1  # prediction positions: every token but the last predicts the next
        spans = sliding_windows(positions, window, stride)
        for (start, end), new in zip(spans, new_token_offsets(spans), strict=True):
            items.append((doc[start:end + 1], new - start))
    # Longest first, so a batch holds windows of similar length (little padding) and
    # an out-of-memory error shows up on the first batch, not the last.
    items.sort(key=lambda item: -len(item[0]))

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll, predicted = 0.0, 0
    try:
        with torch.no_grad():
            for b in range(0, len(items), batch_size):
                batch_nll, batch_count = _score_batch(model, items[b:b + batch_size], pad_id, device)
                nll += batch_nll
                predicted += batch_count
    finally:
        model.train(was_training)

    if count == n_docs:
        n_bytes, bytes_from = meta.splits[SPLIT].n_bytes, "meta"
    else:
        text_tok = _load_text_tokenizer(tokenizer, model, meta.tokenizer_sha256)
        n_bytes = 0
        for i in range(count):
            ids = np.asarray(tokens[index[i]:index[i + 1] - 1]).tolist()
            n_bytes += len(text_tok.decode(ids, skip_special_tokens=False).encode("utf-8"))
        bytes_from = "decoded"
    if predicted == 0:
        raise ValueError(f"{tokens_dir}: the scored documents have no token to predict (each is just end of text)")
    return {
        "perplexity": math.exp(nll / predicted),
        "bits_per_byte": nll / math.log(2) / n_bytes if n_bytes else None,
        "nll_nats": nll,
        "predicted_tokens": predicted,
        "bytes": n_bytes,
        "documents": count,
        "window": window,
        "stride": stride,
        "bytes_from": bytes_from,
        "split": SPLIT,
    }

