"""Tokenizer stage: train (or reuse) a byte-level BPE tokenizer and encode the corpus
into memory-mappable token shards with document boundaries (see ``encode``)."""

from llmops.tokenizer.encode import (
                                     decode_document,
                                     encode_corpus,
                                     encode_throughput,
                                     load_shard,
                                     split_documents,
                                     token_dtype,
)
from llmops.tokenizer.train import (
                                     load_tokenizer,
                                     run_tokenizer,
                                     save_tokenizer,
                                     train_tokenizer,
)
from llmops.tokenizer.windows import sliding_windows

__all__ = [
    "decode_document", "encode_corpus", "encode_throughput", "load_shard", "load_tokenizer", "run_tokenizer",
    "save_tokenizer", "sliding_windows", "split_documents", "token_dtype", "train_tokenizer",
]
