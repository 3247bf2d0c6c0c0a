"""Encode the corpus into flat token shards with a document-boundary index.

Layout of ``out_dir`` (nanoGPT-style flat files, memory-mapped by the trainer)::

    train.bin, validation.bin          token ids, uint16 when every id fits, else uint32
    train.idx.npy, validation.idx.npy  int64 document start offsets, n_docs + 1 long
    train_docs.json, validation_docs.json   document ids, in shard order
    meta.json                          dtype, ids of the special tokens, counts, tokenizer SHA-256

The end-of-text id follows *every* document, so documents are separated in the flat
stream and a model learns where a document ends. Document ``i`` of a split is
``tokens[idx[i]:idx[i+1]]``, its last token being end of text.

Literal special-token strings inside a document (say a page quoting ``<|user|>``) are
encoded as ordinary text (``Tokenizer.encode_special_tokens = True``): only the
pipeline itself puts special ids into the shards, so scraped text can neither end a
document early nor forge a chat turn. Those strings still round-trip exactly, as the
byte pieces they were encoded to.

Train/validation membership is a property of the document id alone (a hash), so a
document stays on its side when the corpus grows or is reordered, and validation
documents are never trained on.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from llmops.artifacts import file_sha256
from llmops.config import TokenizerConfig
from llmops.records.data import TokenShardMeta, TokenSplit
from llmops.tokenizer.train import load_tokenizer, tokenizer_file

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")
META_FILE = TokenShardMeta.NAME
FORMAT_VERSION = 1
# Text per encode call, at most. Big enough that the per-call overhead and the
# inter-process transfer are amortised, small enough to balance workers and keep
# memory flat whatever the corpus size. Small corpora get smaller chunks
# (``_chunk_bytes``) so that every worker has some.
CHUNK_BYTES = 1 << 20
MIN_CHUNK_BYTES = 16 << 10
CHUNK_DOCS = 4096
READ_BATCH_ROWS = 1024


# ---- dtype and split ---------------------------------------------------------------

def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id (0 .. vocab_size-1) fits in 16 bits, else uint32.

    uint16 halves the disk and page-cache footprint of the shards, which is why it is
    worth the check; a 65,536-entry vocabulary still fits (largest id 65,535).
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise ValueError(f"vocab_size {vocab_size} does not fit in uint32")


def _unit_hash(doc_id: str) -> float:
    """A uniform number in [0, 1) from the id: the same on every machine and run."""
    return int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


def split_documents(ids: Sequence[str], validation_fraction: float) -> tuple[set[str], set[str]]:
    """``(train_ids, validation_ids)``: a document is held out when its id hashes below the fraction.

    Order-independent and stable as the corpus grows (a document's side depends on its
    id only). With two or more documents, at least one is held out and at least one
    kept for training: if the hash puts none on one side, the document with the lowest
    (highest) hash is moved, the only case where the rest of the corpus matters.
    Duplicate ids land on the same side.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    unique = sorted(set(ids))
    score = {i: _unit_hash(i) for i in unique}
    validation = {i for i in unique if score[i] < validation_fraction}
    if len(unique) == 1:
        validation = set()  # one document: training needs it more than validation does
    if len(unique) >= 2:
        if not validation:
            validation = {min(unique, key=lambda i: (score[i], i))}
        if len(validation) == len(unique):
            validation.discard(max(unique, key=lambda i: (score[i], i)))
    return set(unique) - validation, validation


# ---- encoding ----------------------------------------------------------------------

@dataclass
class _Worker:
    """What a pool process encodes with, set once by :func:`_init_worker`."""

    tok: Tokenizer
    eos_id: int
    dtype: np.dtype


_WORKER: _Worker | None = None


def _prepare(tok: Tokenizer) -> Tokenizer:
    """Literal special-token strings in documents are text, not control ids (see module doc)."""
    tok.encode_special_tokens = True
    return tok


def _init_worker(tokenizer_json: str, eos_id: int, dtype: str) -> None:
    # One process per core: Rust-side threads in every worker would oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _WORKER
    _WORKER = _Worker(_prepare(Tokenizer.from_str(tokenizer_json)), eos_id, np.dtype(dtype))


def _encode_texts(tok: Tokenizer, texts: list[str], eos_id: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Flat tokens (end of text after each document) and per-document lengths (eos included).

    ``encode_batch_fast`` skips the character offsets ``encode_batch`` computes and we
    never use; the ids are converted per document straight into the shard dtype.
    """
    encodings = tok.encode_batch_fast(texts, add_special_tokens=False)
    eos = np.array([eos_id], dtype=dtype)
    parts: list[np.ndarray] = []
    for enc in encodings:
        parts.append(np.asarray(enc.ids, dtype=dtype))
        parts.append(eos)
    lengths = np.fromiter((len(e) + 1 for e in encodings), dtype=np.int64, count=len(encodings))
    return (np.concatenate(parts) if parts else np.zeros(0, dtype)), lengths


def _encode_in_worker(job: tuple[str, list[str]]) -> tuple[str, np.ndarray, np.ndarray]:
    split, texts = job
    if _WORKER is None:
        raise RuntimeError("_encode_in_worker runs only in a pool started with _init_worker")
    tokens, lengths = _encode_texts(_WORKER.tok, texts, _WORKER.eos_id, _WORKER.dtype)
    return split, tokens, lengths


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork where there is one (workers start in milliseconds, the imports inherited).

    A fork after the parent used tokenizers' thread pool is safe here: the workers
    switch Rust-side parallelism off before encoding anything.
    """
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _chunk_bytes(corpus_path: Path, workers: int) -> int:
    """About four chunks per worker for a small corpus, ``CHUNK_BYTES`` for a large one.

    In-process (one worker) chunks stay large: Rust spreads each call over the cores,
    and the fewer the calls, the better it balances. The text size is estimated from
    the Parquet metadata (uncompressed column size) without reading the text.
    Chunking never changes the shards, only the speed.
    """
    if workers <= 1:
        return CHUNK_BYTES
    meta = pq.ParquetFile(corpus_path).metadata
    text_col = meta.schema.names.index("text")
    size = sum(meta.row_group(g).column(text_col).total_uncompressed_size for g in range(meta.num_row_groups))
    return int(min(CHUNK_BYTES, max(MIN_CHUNK_BYTES, size // (4 * workers))))


def _iter_chunks(corpus_path: Path, validation: set[str], chunk_bytes: int,
                 docs: dict[str, list[str]], n_bytes: dict[str, int]) -> Iterator[tuple[str, list[str]]]:
    """``(split, texts)`` chunks in corpus order, streaming the Parquet file.

    Records each document's id in ``docs[split]`` and its UTF-8 size in ``n_bytes``
    as it goes, so the caller learns them without holding the texts.
    """
    pending: dict[str, list[str]] = {s: [] for s in SPLITS}
    pending_bytes = {s: 0 for s in SPLITS}
    for batch in pq.ParquetFile(corpus_path).iter_batches(batch_size=READ_BATCH_ROWS, columns=["id", "text"]):
        for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist(), strict=True):
            if text is None:
                raise ValueError(f"{corpus_path}: document {doc_id!r} has no text")
            split = "validation" if doc_id in validation else "train"
            size = len(text.encode("utf-8"))
            docs[split].append(doc_id)
            n_bytes[split] += size
            pending[split].append(text)
            pending_bytes[split] += size
            if pending_bytes[split] >= chunk_bytes or len(pending[split]) >= CHUNK_DOCS:
                yield split, pending[split]
                pending[split], pending_bytes[split] = [], 0
    for split in SPLITS:
        if pending[split]:
            yield split, pending[split]


@contextlib.contextmanager
def _encoded(chunks: Iterator[tuple[str, list[str]]], tok: Tokenizer, tok_path: Path, eos_id: int,
             dtype: np.dtype, workers: int) -> Iterator[Iterator[tuple[str, np.ndarray, np.ndarray]]]:
    """``(split, tokens, lengths)`` per chunk, in chunk order, here or over ``workers`` processes.

    A daemonic process (e.g. some executors' task runners) may not have children, so it
    encodes in-process. The pool is a ``ProcessPoolExecutor``: a worker killed by the OOM
    killer raises ``BrokenProcessPool`` instead of leaving ``Pool.imap`` waiting forever.
    """
    if workers <= 1 or multiprocessing.current_process().daemon:
        yield ((split, *_encode_texts(tok, texts, eos_id, dtype)) for split, texts in chunks)
        return
    from concurrent.futures import ProcessPoolExecutor

    executor = ProcessPoolExecutor(workers, mp_context=_pool_context(), initializer=_init_worker,
                                   initargs=(tok_path.read_text(encoding="utf-8"), eos_id, dtype.str))

    def in_order() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        window: collections.deque = collections.deque()  # bounded: chunks stream, order is kept
        for chunk in chunks:
            window.append(executor.submit(_encode_in_worker, chunk))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    try:
        yield in_order()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def encode_corpus(corpus_path: Path, tokenizer_dir: Path, out_dir: Path, cfg: TokenizerConfig,
                  progress: bool = False) -> TokenShardMeta:
    """Encode every document of the corpus into the train/validation shards; return ``meta``.

    Parallelism: with ``cfg.num_workers <= 1`` the chunks are encoded in this process
    by ``encode_batch_fast``, which already spreads one chunk over all cores in Rust;
    with more, ``cfg.num_workers`` processes encode whole chunks single-threaded, so
    the Python-side id conversion (the part Rust cannot parallelise) runs in parallel
    too. Results are consumed in submission order (``imap``), so the shards are
    byte-identical whatever the worker count.
    """
    from tqdm import tqdm

    corpus_path, out_dir = Path(corpus_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_path = tokenizer_file(tokenizer_dir)
    tok = _prepare(load_tokenizer(tok_path))
    eos_id, pad_id = tok.token_to_id(cfg.end_of_text), tok.token_to_id(cfg.pad_token)
    if eos_id is None:
        raise ValueError(f"tokenizer {tok_path} has no end-of-text token {cfg.end_of_text!r}")
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    # The largest id, not the count: a reused tokenizer's ids may have gaps, and an id
    # past 65535 in a uint16 shard would wrap around silently.
    dtype = token_dtype(max(tok.get_vocab(with_added_tokens=True).values()) + 1)

    ids = pq.read_table(corpus_path, columns=["id"]).column("id").to_pylist()
    _, validation = split_documents(ids, cfg.validation_fraction)
    docs: dict[str, list[str]] = {s: [] for s in SPLITS}
    n_bytes = {s: 0 for s in SPLITS}
    lengths: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    chunks = _iter_chunks(corpus_path, validation, _chunk_bytes(corpus_path, cfg.num_workers), docs, n_bytes)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        files = {s: stack.enter_context(open(out_dir / f"{s}.bin", "wb")) for s in SPLITS}
        bar = stack.enter_context(tqdm(total=len(ids), desc="encode", unit="doc", disable=not progress))
        results = stack.enter_context(_encoded(chunks, tok, tok_path, eos_id, dtype, cfg.num_workers))
        for split, tokens, lens in results:
            tokens.tofile(files[split])
            lengths[split].append(lens)
            bar.update(len(lens))
    seconds = time.perf_counter() - started

    splits: dict[str, TokenSplit] = {}
    for split in SPLITS:
        lens = np.concatenate(lengths[split]) if lengths[split] else np.zeros(0, np.int64)
        index = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=index[1:])
        np.save(out_dir / f"{split}.idx.npy", index)
        (out_dir / f"{split}_docs.json").write_text(json.dumps(docs[split], ensure_ascii=False) + "\n")
        splits[split] = TokenSplit(n_docs=len(docs[split]), n_tokens=int(index[-1]), n_bytes=n_bytes[split])
    total_bytes = sum(s.n_bytes for s in splits.values())
    meta = TokenShardMeta(
        format_version=FORMAT_VERSION,
        dtype=dtype.name,
        vocab_size=vocab_size,
        eos_token=cfg.end_of_text,
        eos_id=eos_id,
        pad_token=cfg.pad_token,
        pad_id=pad_id,
        tokenizer_sha256=file_sha256(tok_path),
        validation_fraction=cfg.validation_fraction,
        window=cfg.window,  # the trainer's default sliding windows
        stride=cfg.stride,
        splits=splits,
        n_tokens=sum(s.n_tokens for s in splits.values()),
        n_docs=sum(s.n_docs for s in splits.values()),
        n_bytes=total_bytes,
        bytes_per_token=round(total_bytes / max(1, sum(s.n_tokens - s.n_docs for s in splits.values())), 4),
        eos_after_every_document=True,
        special_token_strings_in_text="encoded as ordinary text",
        num_workers=cfg.num_workers,
        encode_seconds=round(seconds, 3),
        encode_mb_per_s=round(total_bytes / 1e6 / seconds, 3) if seconds > 0 else None,
    )
    meta.write(out_dir)
    log.info("encoded %d docs, %d tokens (%s) in %.2fs", meta.n_docs, meta.n_tokens, dtype.name, seconds)
    return meta


# ---- reading back ------------------------------------------------------------------

def load_shard(out_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, TokenShardMeta]:
    """``(tokens, index, meta)``: tokens memory-mapped read-only (an empty array for an empty split)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    out_dir = Path(out_dir)
    meta = TokenShardMeta.read(out_dir)
    index = np.load(out_dir / f"{split}.idx.npy")
    dtype = np.dtype(meta.dtype)
    if index[-1] == 0:  # numpy cannot map an empty file
        return np.zeros(0, dtype=dtype), index, meta
    tokens = np.memmap(out_dir / f"{split}.bin", dtype=dtype, mode="r")
    if len(tokens) != index[-1]:
        raise ValueError(f"{out_dir}/{split}.bin holds {len(tokens)} tokens, the index says {index[-1]}")
    return tokens, index, meta


def document_tokens(out_dir: Path, split: str, i: int) -> np.ndarray:
    """Tokens of document ``i`` without its trailing end of text."""
    tokens, index, meta = load_shard(out_dir, split)
    if not 0 <= i < len(index) - 1:
        raise IndexError(f"{split} has {len(index) - 1} documents, no document {i}")
    doc = tokens[index[i]:index[i + 1]]
    if len(doc) == 0 or doc[-1] != meta.eos_id:
        raise ValueError(f"{split} document {i} does not end with end of text: corrupt shard")
    return np.asarray(doc[:-1])


def decode_document(out_dir: Path, split: str, i: int, tokenizer: Tokenizer | str | Path) -> str:
    """The text of document ``i``, decoded byte-level from its tokens.

    Nothing is skipped (``skip_special_tokens=False``): a document holds no special
    ids (literal special-token strings were encoded as text), and skipping would drop
    any token that happens to share a special token's id.
    """
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
    return tok.decode(document_tokens(out_dir, split, i).tolist(), skip_special_tokens=False)


# ---- benchmark ---------------------------------------------------------------------

def encode_throughput(corpus_path: Path, tokenizer_dir: Path, cfg: TokenizerConfig,
                      repeats: int = 3) -> dict[str, float | None]:
    """MB/s of ``encode_corpus`` against bare ``Tokenizer.encode_batch`` on the same texts.

    Same process, best of ``repeats`` each. Every timed call starts from a freshly
    loaded tokenizer, as ``encode_corpus`` and its workers do: a reused one would
    arrive with its BPE word cache warm, which flatters it on small corpora. The
    texts are in memory for the bare calls, while ``encode_corpus`` also reads the
    Parquet file and writes the shards. ``encode_batch_fast`` (what ``encode_corpus``
    calls: no character offsets) is measured too, as the tighter bound.
    """
    from llmops.tokenizer.train import read_texts

    texts = read_texts(Path(corpus_path))
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    def best(fn, fresh_tokenizer: bool) -> float:
        times = []
        for _ in range(repeats):
            tok = _prepare(load_tokenizer(tokenizer_dir)) if fresh_tokenizer else None
            t0 = time.perf_counter()
            fn(tok)
            times.append(time.perf_counter() - t0)
        return min(times)

    raw = best(lambda tok: tok.encode_batch(texts, add_special_tokens=False), True)
    raw_fast = best(lambda tok: tok.encode_batch_fast(texts, add_special_tokens=False), True)
    with tempfile.TemporaryDirectory() as tmp:
        full = best(lambda _: encode_corpus(Path(corpus_path), Path(tokenizer_dir), Path(tmp), cfg), False)
    return {
        "mb": round(mb, 3),
        "n_docs": len(texts),
        "num_workers": cfg.num_workers,
        "cpu_count": os.cpu_count(),
        "encode_batch_mb_s": round(mb / raw, 3),
        "encode_batch_fast_mb_s": round(mb / raw_fast, 3),
        "encode_corpus_mb_s": round(mb / full, 3),
        "ratio_vs_encode_batch": round(raw / full, 3),
        "ratio_vs_encode_batch_fast": round(raw_fast / full, 3),
    }
