import json
from pathlib import Path

import numpy as np
import pytest

from llmops.artifacts import file_sha256
from llmops.config import TokenizerConfig
from llmops.records.data import TokenShardMeta
from llmops.tokenizer import encode as encode_mod
from llmops.tokenizer.encode import (
    decode_document,
    document_tokens,
    encode_corpus,
    encode_throughput,
    load_shard,
    split_documents,
    token_dtype,
)
from llmops.tokenizer.train import load_tokenizer
from tests.tokenizer.conftest import corpus_rows, write_corpus

SPLITS = ("train", "validation")


def _docs(shards: Path, split: str) -> list[str]:
    return json.loads((shards / f"{split}_docs.json").read_text())


def test_whole_corpus_round_trips_exactly(shards: Path, tokenizer_dir: Path):
    texts = {r["id"]: r["text"] for r in corpus_rows()}
    tok = load_tokenizer(tokenizer_dir)
    seen = []
    for split in SPLITS:
        for i, doc_id in enumerate(_docs(shards, split)):
            assert decode_document(shards, split, i, tok) == texts[doc_id], doc_id
            seen.append(doc_id)
    assert sorted(seen) == sorted(texts)
    # A path works as well as a loaded tokenizer.
    assert decode_document(shards, "train", 0, tokenizer_dir) == texts[_docs(shards, "train")[0]]


def test_literal_special_token_strings_are_encoded_as_text(shards: Path, tokenizer_dir: Path):
    split = next(s for s in SPLITS if "extra-literal-specials" in _docs(shards, s))
    i = _docs(shards, split).index("extra-literal-specials")
    ids = document_tokens(shards, split, i)
    assert not set(ids.tolist()) & {0, 1, 2, 3, 4}  # no special id forged by the text
    assert "<|endoftext|> is not the end" in decode_document(shards, split, i, tokenizer_dir)


def test_dtype_choice():
    assert token_dtype(1000) == np.uint16
    assert token_dtype(65_535) == np.uint16
    assert token_dtype(65_536) == np.uint16  # largest id 65535 still fits
    assert token_dtype(65_537) == np.uint32
    assert token_dtype(200_000) == np.uint32
    with pytest.raises(ValueError):
        token_dtype(0)


def test_end_of_text_after_every_document_and_nowhere_else(shards: Path):
    for split in SPLITS:
        tokens, index, meta = load_shard(shards, split)
        assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
        eos_positions = np.flatnonzero(np.asarray(tokens) == meta.eos_id)
        assert eos_positions.tolist() == (index[1:] - 1).tolist()


def test_boundary_index_is_consistent(shards: Path):
    meta = TokenShardMeta.read(shards / "meta.json")
    for split in SPLITS:
        tokens, index, _ = load_shard(shards, split)
        docs = _docs(shards, split)
        assert index.dtype == np.int64 and len(index) == len(docs) + 1
        assert index[0] == 0 and index[-1] == len(tokens) == meta.splits[split].n_tokens
        assert np.all(np.diff(index) >= 1)  # every document has at least its end of text
        assert (shards / f"{split}.bin").stat().st_size == len(tokens) * 2
    split = next(s for s in SPLITS if "extra-empty" in _docs(shards, s))
    empty = _docs(shards, split).index("extra-empty")
    _, index, _ = load_shard(shards, split)
    assert index[empty + 1] - index[empty] == 1  # an empty document is just its end of text


def test_split_is_deterministic_disjoint_and_order_independent():
    ids = [f"doc-{i}" for i in range(2000)]
    train, validation = split_documents(ids, 0.05)
    assert (train, validation) == split_documents(list(reversed(ids)), 0.05)
    assert not train & validation and train | validation == set(ids)
    assert 60 < len(validation) < 140  # ~5 %
    # Membership depends on the id alone: growing the corpus moves nobody.
    train2, validation2 = split_documents(ids + [f"new-{i}" for i in range(500)], 0.05)
    assert validation <= validation2 and train <= train2


def test_split_small_corpora():
    assert split_documents([], 0.05) == (set(), set())
    assert split_documents(["only"], 0.05) == ({"only"}, set())  # a lone document is trained on
    assert split_documents(["only"], 0.99) == ({"only"}, set())
    for n in range(2, 12):
        train, validation = split_documents([f"d{i}" for i in range(n)], 0.01)
        assert len(validation) >= 1 and len(train) >= 1
    train, validation = split_documents(["a", "b", "c"], 0.99)
    assert len(train) >= 1 and len(validation) >= 1
    with pytest.raises(ValueError):
        split_documents(["a"], 1.0)


def test_shards_follow_the_split(shards: Path, tok_cfg: TokenizerConfig):
    ids = [r["id"] for r in corpus_rows()]
    train, validation = split_documents(ids, tok_cfg.validation_fraction)
    assert set(_docs(shards, "train")) == train and set(_docs(shards, "validation")) == validation
    assert validation and not train & validation
    order = {doc_id: i for i, doc_id in enumerate(ids)}  # corpus order within each split
    for split in SPLITS:
        assert _docs(shards, split) == sorted(_docs(shards, split), key=order.__getitem__)


def test_meta_contents(shards: Path, tokenizer_dir: Path, tok_cfg: TokenizerConfig):
    meta = TokenShardMeta.read(shards / "meta.json")
    assert meta.dtype == "uint16" and meta.vocab_size == 1000
    assert (meta.eos_id, meta.pad_id) == (0, 1)
    assert meta.eos_token == tok_cfg.end_of_text and meta.pad_token == tok_cfg.pad_token
    assert meta.tokenizer_sha256 == file_sha256(tokenizer_dir / "tokenizer.json")
    assert (meta.window, meta.stride) == (tok_cfg.window, tok_cfg.stride)
    rows = corpus_rows()
    by_id = {r["id"]: r["text"] for r in rows}
    for split in SPLITS:
        s = meta.splits[split]
        docs = _docs(shards, split)
        assert s.n_docs == len(docs)
        assert s.n_bytes == sum(len(by_id[d].encode()) for d in docs)
    assert meta.n_docs == len(rows) and meta.n_tokens == sum(s.n_tokens for s in meta.splits.values())
    assert meta.validation_fraction == tok_cfg.validation_fraction and meta.num_workers == 2


def test_worker_count_and_chunking_do_not_change_the_shards(corpus: Path, tokenizer_dir: Path, shards: Path,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(encode_mod, "CHUNK_BYTES", 20_000)  # many chunks, so workers interleave
    monkeypatch.setattr(encode_mod, "MIN_CHUNK_BYTES", 1_000)
    for workers in (1, 3):
        out = tmp_path / f"w{workers}"
        encode_corpus(corpus, tokenizer_dir, out, TokenizerConfig(vocab_size=1000, validation_fraction=0.1,
                                                                  num_workers=workers))
        for name in ("train.bin", "validation.bin", "train.idx.npy", "validation.idx.npy", "train_docs.json",
                     "validation_docs.json"):
            assert (out / name).read_bytes() == (shards / name).read_bytes(), (workers, name)


def test_uint32_shards_when_the_vocabulary_is_large(corpus: Path, tokenizer_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch):
    # Training a >65k vocabulary is too slow for a test: force the dtype decision instead.
    monkeypatch.setattr(encode_mod, "token_dtype", lambda vocab_size: np.dtype(np.uint32))
    meta = encode_corpus(corpus, tokenizer_dir, tmp_path, TokenizerConfig(validation_fraction=0.1, num_workers=1))
    tokens, index, _ = load_shard(tmp_path, "train")
    assert meta.dtype == "uint32" and tokens.dtype == np.uint32
    assert (tmp_path / "train.bin").stat().st_size == 4 * index[-1]
    texts = {r["id"]: r["text"] for r in corpus_rows()}
    for i, doc_id in enumerate(_docs(tmp_path, "train")):
        assert decode_document(tmp_path, "train", i, tokenizer_dir) == texts[doc_id]


def test_single_document_corpus_has_an_empty_validation_split(tokenizer_dir: Path, tmp_path: Path):
    corpus = write_corpus(tmp_path / "one.parquet", corpus_rows()[:1])
    meta = encode_corpus(corpus, tokenizer_dir, tmp_path / "out", TokenizerConfig(num_workers=1))
    empty = next(s for s in SPLITS if meta.splits[s].n_docs == 0)
    tokens, index, _ = load_shard(tmp_path / "out", empty)
    assert len(tokens) == 0 and index.tolist() == [0]
    with pytest.raises(IndexError):
        document_tokens(tmp_path / "out", empty, 0)


def test_encode_throughput_reports_both_rates(corpus: Path, tokenizer_dir: Path, tok_cfg: TokenizerConfig):
    result = encode_throughput(corpus, tokenizer_dir, tok_cfg, repeats=1)
    assert result["mb"] > 0.4
    for key in ("encode_batch_mb_s", "encode_batch_fast_mb_s", "encode_corpus_mb_s", "ratio_vs_encode_batch"):
        assert result[key] > 0


@pytest.mark.parametrize("workers", [1, 2])
def test_a_document_without_text_is_an_error(tokenizer_dir: Path, tmp_path: Path, workers: int):
    rows = corpus_rows()[:5] + [{"id": "broken", "url": "https://x.test/", "text": None}]
    corpus = write_corpus(tmp_path / "broken.parquet", rows)
    with pytest.raises(ValueError, match="'broken' has no text"):
        encode_corpus(corpus, tokenizer_dir, tmp_path / "out", TokenizerConfig(num_workers=workers))


def _die(chunk):  # stands in for a worker the OOM killer takes
    import os

    os._exit(137)


def test_a_killed_worker_fails_the_encode_instead_of_hanging(corpus: Path, tokenizer_dir: Path, tmp_path: Path,
                                                              monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    monkeypatch.setattr(encode_mod, "_encode_in_worker", _die)
    with pytest.raises(BrokenProcessPool):
        encode_mod.encode_corpus(corpus, tokenizer_dir, tmp_path, TokenizerConfig(vocab_size=1000, num_workers=2))
