"""Train (or reuse) a byte-level BPE tokenizer and save it so transformers loads it.

Byte-level BPE (GPT-2 style) starts from the 256 byte values, so every string, in any
script, with control characters or invalid-looking input, encodes without an unknown
token and decodes back to exactly the same text. There is no normalizer and no prefix
space for the same reason: either would change the text before it is tokenized.

Special tokens (end of text, padding, the chat-template tokens) are added to the
vocabulary as *special* tokens: they are never merged into, and they get the first ids
(end of text is 0, padding is 1), so the ids stay the same whatever the corpus.

Reuse: when ``cfg.reuse`` names a tokenizer (a deployed model's), that exact file is
copied instead of training a new one: the model's embedding rows belong to those ids,
so retraining from it must keep them. The copy is byte-for-byte, so its SHA-256 is
unchanged and shows which tokenizer a shard was encoded with.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NotRequired, TypedDict

import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llmops.artifacts import file_sha256
from llmops.config import TokenizerConfig
from llmops.records.data import TextStats, TokenizerStats

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def special_tokens(cfg: TokenizerConfig) -> list[str]:
    """End of text first, padding second, then the template tokens (duplicates dropped)."""
    return list(dict.fromkeys([cfg.end_of_text, cfg.pad_token, *cfg.template_tokens]))


def new_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE pipeline: no normalizer, no prefix space (exact round trip)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """Byte-level BPE trained on ``texts`` with ``cfg.vocab_size`` entries (specials included).

    All 256 bytes are in the initial alphabet whatever the corpus holds, so text the
    corpus never showed (another script, an emoji) still encodes.
    """
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=special_tokens(cfg),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def tokenizer_file(path: str | Path) -> Path:
    """``path`` itself when it is a file, else ``path/tokenizer.json``; must exist."""
    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer at {path} (expected a tokenizer.json or a directory holding one)")
    return file


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A ``tokenizer.json`` or a directory holding one (a saved tokenizer or a model dir)."""
    return Tokenizer.from_file(str(tokenizer_file(path)))


def check_compatible(tok: Tokenizer, cfg: TokenizerConfig) -> None:
    """Refuse a tokenizer the shards cannot rely on: raises ``ValueError`` saying why.

    The shards need every configured special token as a single special id (end of
    text separates documents), and exact round trips need a byte-level decoder and
    no normalizer. Adding missing tokens is not an option: a reused tokenizer belongs
    to a model whose embedding has no rows for new ids.
    """
    added = {t.content: t for t in tok.get_added_tokens_decoder().values()}
    missing = [t for t in special_tokens(cfg) if t not in added or not added[t].special]
    if missing:
        raise ValueError(f"tokenizer lacks special tokens {missing} required by the tokenizer config")
    spec = json.loads(tok.to_str())
    if (spec.get("decoder") or {}).get("type") != "ByteLevel" or spec.get("normalizer") is not None:
        raise ValueError("tokenizer is not plain byte-level BPE (ByteLevel decoder, no normalizer): "
                         "text would not round-trip exactly")


def count_merges(tok: Tokenizer) -> int:
    return len(json.loads(tok.to_str())["model"].get("merges", []))


def text_stats(tok: Tokenizer, texts: Sequence[str]) -> TextStats:
    """Tokens per document, bytes per token, fertility (tokens per whitespace-separated
    word) and the unknown-token rate, encoded the way the shards are.

    Literal special-token strings in the text count as ordinary text
    (``encode_special_tokens``), as in ``encode.encode_corpus``. A byte-level BPE has
    no unknown token, so its rate is 0 by construction; it is measured anyway, since
    a reused tokenizer may have one.
    """
    if not texts:
        return TextStats(n_docs=0, n_tokens=0, n_bytes=0, tokens_per_doc=0.0, bytes_per_token=0.0,
                         fertility=0.0, unk_rate=0.0)
    previous = tok.encode_special_tokens
    tok.encode_special_tokens = True
    try:
        encodings = tok.encode_batch_fast(list(texts), add_special_tokens=False)
    finally:
        tok.encode_special_tokens = previous
    n_tokens = sum(len(e) for e in encodings)
    unk = getattr(tok.model, "unk_token", None)
    unk_id = tok.token_to_id(unk) if unk else None
    n_unk = sum(e.ids.count(unk_id) for e in encodings) if unk_id is not None else 0
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_words = sum(len(t.split()) for t in texts)
    return TextStats(
        n_docs=len(texts),
        n_tokens=n_tokens,
        n_bytes=n_bytes,
        tokens_per_doc=round(n_tokens / len(texts), 3),
        bytes_per_token=round(n_bytes / n_tokens, 4) if n_tokens else 0.0,
        fertility=round(n_tokens / n_words, 4) if n_words else 0.0,
        unk_rate=round(n_unk / n_tokens, 6) if n_tokens else 0.0,
    )


class _AddedToken(TypedDict):
    content: str
    lstrip: bool
    rstrip: bool
    normalized: bool
    single_word: bool
    special: bool


class _HfTokenizerConfig(TypedDict):
    """``tokenizer_config.json``: transformers' keys."""

    tokenizer_class: str
    bos_token: None
    eos_token: str
    pad_token: str
    unk_token: None
    additional_special_tokens: list[str]
    added_tokens_decoder: dict[str, _AddedToken]
    clean_up_tokenization_spaces: bool
    add_prefix_space: bool
    model_max_length: int
    chat_template: NotRequired[str]


def _hf_config(cfg: TokenizerConfig, tok: Tokenizer, chat_template: str | None) -> _HfTokenizerConfig:
    """``tokenizer_config.json`` readable by transformers 4 and 5.

    ``PreTrainedTokenizerFast`` is the class name both versions know (5 maps it to its
    tokenizers backend). ``clean_up_tokenization_spaces`` is off: it deletes spaces
    before punctuation when decoding, which breaks the exact round trip.
    """
    added = tok.get_added_tokens_decoder()
    config: _HfTokenizerConfig = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": cfg.end_of_text,
        "pad_token": cfg.pad_token,
        "unk_token": None,
        "additional_special_tokens": [t for t in special_tokens(cfg) if t not in (cfg.end_of_text, cfg.pad_token)],
        "added_tokens_decoder": {
            str(i): {"content": t.content, "lstrip": t.lstrip, "rstrip": t.rstrip, "normalized": t.normalized,
                     "single_word": t.single_word, "special": t.special}
            for i, t in sorted(added.items())
        },
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
        "model_max_length": int(1e30),
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    return config


def save_tokenizer(tok: Tokenizer, out_dir: Path, cfg: TokenizerConfig, chat_template: str | None = None, *,
                   texts: Sequence[str] | None = None, copy_from: Path | None = None) -> TokenizerStats:
    """Write ``tokenizer.json``, the transformers files and ``tokenizer_stats.json``; return the stats.

    ``texts``: the training texts, for tokens per document / bytes per token (omitted
    from the stats when not given). ``copy_from``: write that file's exact bytes as
    ``tokenizer.json`` instead of re-serialising ``tok`` (reuse keeps the SHA-256).
    The chat template goes both into ``tokenizer_config.json`` (transformers 4) and
    ``chat_template.jinja`` (transformers 5 writes it there).
    """
    check_compatible(tok, cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / TOKENIZER_FILE
    if copy_from is not None:
        if Path(copy_from).resolve() != target.resolve():
            shutil.copyfile(copy_from, target)
    else:
        tok.save(str(target), pretty=True)
    config = _hf_config(cfg, tok, chat_template)
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    special_map = {"eos_token": cfg.end_of_text, "pad_token": cfg.pad_token,
                   "additional_special_tokens": config["additional_special_tokens"]}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False) + "\n")
    if chat_template is not None:
        (out_dir / CHAT_TEMPLATE_FILE).write_text(chat_template)
    # check_compatible made sure every special token has an id.
    stats = TokenizerStats.model_validate({
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "num_merges": count_merges(tok),
        "special_tokens": {t: tok.token_to_id(t) for t in special_tokens(cfg)},
        "eos_token": cfg.end_of_text,
        "eos_id": tok.token_to_id(cfg.end_of_text),
        "pad_token": cfg.pad_token,
        "pad_id": tok.token_to_id(cfg.pad_token),
        "has_chat_template": chat_template is not None,
        "tokenizer_sha256": file_sha256(target),
        "training_texts": text_stats(tok, texts) if texts is not None else None,
    })
    stats.write(out_dir)
    return stats


def read_texts(corpus_path: Path) -> list[str]:
    """The ``text`` column of a corpus Parquet file (only that column is read)."""
    texts = pq.read_table(corpus_path, columns=["text"]).column("text").to_pylist()
    if any(t is None for t in texts):
        raise ValueError(f"{corpus_path}: a document has no text (null in column 'text')")
    return texts


def run_tokenizer(corpus_path: Path, out_dir: Path, cfg: TokenizerConfig,
                  chat_template: str | None = None) -> TokenizerStats:
    """Train a tokenizer on the corpus, or reuse ``cfg.reuse``, and save it to ``out_dir``.

    Stats are measured on the corpus texts in both cases, so a reused tokenizer's fit
    to the new corpus (bytes per token) is visible.
    """
    texts = read_texts(Path(corpus_path))
    started = time.perf_counter()
    if cfg.reuse:
        source = tokenizer_file(cfg.reuse)
        tok = Tokenizer.from_file(str(source))
        log.info("reusing tokenizer %s (no training)", source)
    else:
        source = None
        tok = train_tokenizer(texts, cfg)
    seconds = time.perf_counter() - started
    stats = save_tokenizer(tok, Path(out_dir), cfg, chat_template, texts=texts, copy_from=source)
    stats = stats.model_copy(update={"reused": source is not None, "reused_from": str(source) if source else None,
                                     "train_seconds": round(seconds, 3)})
    stats.write(Path(out_dir))
    log.info("tokenizer: vocab %d, %d merges, %.3f bytes/token, %s", stats.vocab_size, stats.num_merges,
             stats.training_texts.bytes_per_token if stats.training_texts else 0.0,
             "reused" if source else f"trained in {seconds:.2f}s")
    return stats
