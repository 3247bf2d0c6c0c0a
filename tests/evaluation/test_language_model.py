"""Perplexity / bits per byte against direct computations on tiny cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from llmops.records.data import TokenShardMeta, TokenSplit
from tests.training.fixtures import paths

torch = pytest.importorskip("torch")


def tiny_llama(vocab_size: int, max_positions: int = 128, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=max_positions,
                         eos_token_id=0, pad_token_id=1, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def write_shards(out: Path, docs: list[list[int]], texts: list[str], *, window: int = 8, stride: int = 8) -> Path:
    """A validation split by hand, in ``encode_corpus``'s layout (eos = 0 after every document)."""
    out.mkdir(parents=True, exist_ok=True)
    flat = np.array([t for d in docs for t in [*d, 0]], dtype=np.uint16)
    index = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([len(d) + 1 for d in docs], out=index[1:])
    for split, tokens, idx in (("validation", flat, index), ("train", flat, index)):
        tokens.tofile(out / f"{split}.bin")
        np.save(out / f"{split}.idx.npy", idx)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    split = TokenSplit(n_docs=len(docs), n_tokens=int(index[-1]), n_bytes=n_bytes)
    TokenShardMeta(format_version=1, dtype="uint16", vocab_size=50, eos_token="<|endoftext|>", eos_id=0,
                   pad_token="<|pad|>", pad_id=1, tokenizer_sha256="", validation_fraction=0.5, window=window,
                   stride=stride, splits={"validation": split, "train": split}, n_tokens=2 * split.n_tokens,
                   n_docs=2 * len(docs), n_bytes=2 * n_bytes, bytes_per_token=n_bytes / split.n_tokens,
                   eos_after_every_document=True, special_token_strings_in_text="encoded as ordinary text",
                   num_workers=1, encode_seconds=0.0, encode_mb_per_s=None).write(out)
    return out


def direct_nll(model, doc: list[int]) -> tuple[float, int]:
    """Total NLL of a document (eos appended) in one forward pass, via the model's own loss."""
    ids = torch.tensor([[*doc, 0]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss  # mean over the len-1 shifted predictions
    return float(loss) * (ids.shape[1] - 1), ids.shape[1] - 1


def test_perplexity_matches_the_models_own_loss(tmp_path: Path) -> None:
    from llmops.evaluation.language_model import lm_metrics

    model = tiny_llama(50)
    doc = [5, 9, 17, 3, 42, 8, 11]
    shards = write_shards(tmp_path / "tok", [doc], ["some text, 18 bytes"], window=16, stride=16)
    got = lm_metrics(model, shards)
    nll, n = direct_nll(model, doc)
    assert got["predicted_tokens"] == n == len(doc)  # every token but the first, eos included
    assert got["documents"] == 1 and got["bytes_from"] == "meta"
    assert got["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert got["nll_nats"] == pytest.approx(nll, rel=1e-5)
    assert got["bytes"] == len(b"some text, 18 bytes")
    assert got["bits_per_byte"] == pytest.approx(got["nll_nats"] / math.log(2) / got["bytes"], rel=1e-9)


def test_windows_predict_every_token_once_with_bounded_context(tmp_path: Path) -> None:
    """Documents longer than the window: the same total as scoring each token by hand
    with exactly the context its window gives it (here disjoint windows, stride == window)."""
    from llmops.evaluation.language_model import lm_metrics

    model = tiny_llama(60)
    rng = np.random.default_rng(0)
    docs = [rng.integers(2, 60, size=n).tolist() for n in (19, 4, 8)]
    shards = write_shards(tmp_path / "tok", docs, ["a" * 10, "b" * 3, "c" * 7], window=8, stride=8)
    got = lm_metrics(model, shards, batch_size=2)
    assert got["predicted_tokens"] == sum(len(d) for d in docs)  # (len+1 with eos) - 1 each
    expected = 0.0
    with torch.no_grad():
        for d in docs:
            full = [*d, 0]
            for target in range(1, len(full)):
                start = (target - 1) // 8 * 8  # the disjoint window holding the predicting position
                ctx = torch.tensor([full[start:target]])
                expected -= float(torch.log_softmax(model(input_ids=ctx).logits[0, -1].float(), -1)[full[target]])
    assert got["nll_nats"] == pytest.approx(expected, rel=1e-5)
    # An overlapping stride gives later windows more context; the token count does not change.
    overlapped = lm_metrics(model, shards, window=8, stride=3)
    assert overlapped["predicted_tokens"] == got["predicted_tokens"]


def test_subset_counts_decoded_bytes_and_window_limits(data_home: Path) -> None:
    from tokenizers import Tokenizer

    from llmops.evaluation.language_model import lm_metrics
    from llmops.tokenizer.encode import decode_document, load_shard

    p = paths(data_home)
    _, index, meta = load_shard(p["tokens"], "validation")
    model = tiny_llama(meta.vocab_size, max_positions=64)
    tok = Tokenizer.from_file(str(p["tokenizer"] / "tokenizer.json"))
    got = lm_metrics(model, p["tokens"], max_documents=2, tokenizer=p["tokenizer"])
    assert got["documents"] == 2 and got["bytes_from"] == "decoded" and got["window"] == 64
    assert got["bytes"] == sum(len(decode_document(p["tokens"], "validation", i, tok).encode()) for i in range(2))
    # An untrained model is close to uniform: perplexity near the vocabulary size.
    assert 0.5 * meta.vocab_size < got["perplexity"] < 2 * meta.vocab_size
    with pytest.raises(ValueError, match="max_position_embeddings"):
        lm_metrics(model, p["tokens"], window=65, max_documents=1, tokenizer=p["tokenizer"])
    with pytest.raises(ValueError, match="needs a tokenizer"):
        lm_metrics(model, p["tokens"], max_documents=1)
    with pytest.raises(ValueError, match="vocabulary"):
        lm_metrics(tiny_llama(10), p["tokens"], max_documents=1)
    assert model.training is False
    # Both byte counts agree: meta's n_bytes (counted from the source texts) is what
    # decoding every document gives, so scoring all or some documents is consistent.
    n_docs = len(index) - 1
    assert meta.splits["validation"].n_bytes == sum(
        len(decode_document(p["tokens"], "validation", i, tok).encode()) for i in range(n_docs))
