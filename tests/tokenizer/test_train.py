import json
from pathlib import Path
from pydoc_data.topics import topics

import pytest

from llmops.artifacts import file_sha256
from llmops.config import TokenizerConfig
from llmops.records.data import TokenizerStats
from llmops.tokenizer import train as train_mod
from llmops.tokenizer.train import (
    load_tokenizer,
    run_tokenizer,
    save_tokenizer,
    special_tokens,
    train_tokenizer,
)
from tests.tokenizer.conftest import CHAT_TEMPLATE

SPECIALS = ["<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|end|>"]


def test_training_is_deterministic_and_order_independent():
    cfg = TokenizerConfig(vocab_size=600)
    texts = list(topics.values())
    assert train_tokenizer(texts, cfg).to_str() == train_tokenizer(list(reversed(texts)), cfg).to_str()


def test_special_tokens_get_the_first_ids_and_are_special(tokenizer_dir: Path):
    tok = load_tokenizer(tokenizer_dir)
    assert [tok.token_to_id(t) for t in SPECIALS] == [0, 1, 2, 3, 4]
    added = {t.content: t.special for t in tok.get_added_tokens_decoder().values()}
    assert added == {t: True for t in SPECIALS}
    assert special_tokens(TokenizerConfig(pad_token="<|endoftext|>")) == ["<|endoftext|>", *SPECIALS[2:]]


def test_stats_file(tokenizer_dir: Path):
    stats = TokenizerStats.read(tokenizer_dir / "tokenizer_stats.json")
    assert stats.vocab_size == 1000
    assert stats.num_merges == 1000 - 256 - len(SPECIALS)  # bytes + specials + merges fill the vocab
    assert stats.special_tokens == {t: i for i, t in enumerate(SPECIALS)}
    assert (stats.eos_id, stats.pad_id) == (0, 1)
    assert stats.reused is False and stats.train_seconds >= 0
    assert stats.tokenizer_sha256 == file_sha256(tokenizer_dir / "tokenizer.json")
    text = stats.training_texts
    assert text.n_docs == len(topics) + 4
    assert text.n_bytes > 400_000 and 2.0 < text.bytes_per_token < 6.0
    assert text.tokens_per_doc == pytest.approx(text.n_tokens / text.n_docs, abs=1e-3)
    assert 1.0 < text.fertility < 5.0  # tokens per whitespace word
    assert text.unk_rate == 0.0  # byte-level BPE has no unknown token


def test_any_text_round_trips_through_the_tokenizer(tokenizer_dir: Path):
    tok = load_tokenizer(tokenizer_dir)
    tok.encode_special_tokens = True
    for text in ["", " leading space", "naïve 日本 🐍\x00\x07\r\n\t  ", "<|user|><|endoftext|>", "e\u0301\u200b"]:
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_load_tokenizer_file_or_directory(tokenizer_dir: Path, tmp_path: Path):
    assert load_tokenizer(tokenizer_dir).to_str() == load_tokenizer(tokenizer_dir / "tokenizer.json").to_str()
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_tokenizer(tmp_path)


def test_reuse_copies_the_given_tokenizer_without_training(corpus: Path, tokenizer_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    def no_training(*args, **kwargs):
        raise AssertionError("reuse must not train")

    monkeypatch.setattr(train_mod, "train_tokenizer", no_training)
    # A deployed model directory holding the tokenizer among other files.
    model_dir = tmp_path / "deployed-model"
    model_dir.mkdir()
    (model_dir / "tokenizer.json").write_bytes((tokenizer_dir / "tokenizer.json").read_bytes())
    cfg = TokenizerConfig(vocab_size=4096, reuse=str(model_dir))  # vocab_size is ignored on reuse
    stats = run_tokenizer(corpus, tmp_path / "out", cfg, chat_template=CHAT_TEMPLATE)
    assert stats.reused is True and stats.reused_from == str(model_dir / "tokenizer.json")
    assert stats.vocab_size == 1000
    assert stats.tokenizer_sha256 == file_sha256(tokenizer_dir / "tokenizer.json")
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (tokenizer_dir / "tokenizer.json").read_bytes()


def test_reuse_refuses_a_tokenizer_without_the_special_tokens(corpus: Path, tmp_path: Path):
    other = train_tokenizer(["some text for a tokenizer"] * 3, TokenizerConfig(vocab_size=300, end_of_text="</s>"))
    other.save(str(tmp_path / "other.json"))
    cfg = TokenizerConfig(reuse=str(tmp_path / "other.json"))
    with pytest.raises(ValueError, match="lacks special tokens.*<\\|endoftext\\|>"):
        run_tokenizer(corpus, tmp_path / "out", cfg)


def test_transformers_loads_the_saved_directory(tokenizer_dir: Path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    for cls in (PreTrainedTokenizerFast, AutoTokenizer):
        hf = cls.from_pretrained(tokenizer_dir)
        assert (hf.eos_token, hf.eos_token_id, hf.pad_token, hf.pad_token_id) == ("<|endoftext|>", 0, "<|pad|>", 1)
        assert set(SPECIALS) <= set(hf.all_special_tokens)
    messages = [{"role": "user", "content": "What does assert do?"},
                {"role": "assistant", "content": "It checks a condition."}]
    text = hf.apply_chat_template(messages, tokenize=False)
    assert text == "<|user|>\nWhat does assert do?<|end|>\n<|assistant|>\nIt checks a condition.<|end|>\n"
    prompt = hf.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|end|>\n<|assistant|>\n")
    # In chat-formatted text the template tokens are single special ids (unlike in the
    # pretraining shards, where literal strings are text).
    ids = hf(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == 2 and ids.count(4) == 2 and 3 in ids
    assert hf.decode(ids) == text
    sample = "def f(x):\n    return x  # naïve 🐍\n"
    assert hf.decode(hf(sample)["input_ids"]) == sample  # no clean-up of spaces, no prefix space


def test_save_without_chat_template_and_with_a_foreign_tokenizer(tmp_path: Path):
    cfg = TokenizerConfig(vocab_size=300)
    tok = train_tokenizer(["a tiny corpus, a tiny corpus"], cfg)
    stats = save_tokenizer(tok, tmp_path / "t", cfg)
    assert not (tmp_path / "t" / "chat_template.jinja").exists() and "training_texts" not in stats
    assert "chat_template" not in json.loads((tmp_path / "t" / "tokenizer_config.json").read_text())
    with pytest.raises(ValueError, match="lacks special tokens"):
        save_tokenizer(tok, tmp_path / "u", TokenizerConfig(template_tokens=["<|system|>"]))
