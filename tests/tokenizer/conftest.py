"""A small real corpus (the Python reference topics every interpreter ships) plus a few
adversarial documents, a tokenizer trained on it and the encoded shards: built once per
session, since training and encoding are deterministic."""

from __future__ import annotations

from pathlib import Path
from pydoc_data.topics import topics

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmops.config import TokenizerConfig

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' }}\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Text the tokenizer must survive: literal special-token strings, scripts the topics
# lack, control characters, odd whitespace, an empty document.
EXTRA_DOCS = {
    "literal-specials": "A page quoting the template: <|user|> hi <|end|>\n<|endoftext|> is not the end.<|pad|>",
    "unicode": "naïve café – 日本語のテキスト, emoji 🐍🎉, combining e\u0301, RTL שלום, zero\u200bwidth",
    "controls": "bell\x07 nul\x00 tab\t cr\r\n crlf \r\n trailing spaces   \n\n\n",
    "empty": "",
}


def corpus_rows() -> list[dict[str, str]]:
    rows = [{"id": f"topic-{name}", "url": f"https://docs.python.org/3/reference/{name}.html", "text": text}
            for name, text in sorted(topics.items())]
    rows += [{"id": f"extra-{name}", "url": f"https://example.test/{name}", "text": text}
             for name, text in EXTRA_DOCS.items()]
    return rows


def write_corpus(path: Path, rows: list[dict[str, str]]) -> Path:
    table = pa.table({col: [r[col] for r in rows] for col in ("id", "url", "text")})
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="session")
def tok_cfg() -> TokenizerConfig:
    return TokenizerConfig(vocab_size=1000, validation_fraction=0.1, num_workers=2)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.parquet", corpus_rows())


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, corpus: Path, tok_cfg: TokenizerConfig) -> Path:
    from llmops.tokenizer.train import run_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    run_tokenizer(corpus, out, tok_cfg, chat_template=CHAT_TEMPLATE)
    return out


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory, corpus: Path, tokenizer_dir: Path,
           tok_cfg: TokenizerConfig) -> Path:
    from llmops.tokenizer.encode import encode_corpus

    out = tmp_path_factory.mktemp("shards")
    encode_corpus(corpus, tokenizer_dir, out, tok_cfg)
    return out
