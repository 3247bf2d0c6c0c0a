"""Q&A set: question/answer pairs from the redacted corpus, split by page.

Questions come from page titles through a few templates ("What does the assert
statement do?"); answers are prose sentences of that page. No model writes them, so
the set is reproducible and every answer is a sentence a reader of the page saw.
Pairs are split into fine-tuning and held-out evaluation sets *by page* with a
fixed seed, so no held-out page contributes a fine-tuning pair.

The prompt format lives in one place, :func:`chat_template`, saved with the
tokenizer as its chat template: training, evaluation and the served model all
call ``tokenizer.apply_chat_template`` and so format prompts the same way.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from llmops.config import TokenizerConfig
from llmops.data import store
from llmops.data.clean import symbol_ratio
from llmops.data.store import RedactedDoc
from llmops.records.crawl import read_lines
from llmops.records.data import QA_PAIR, QaPair, QaSummary

FINETUNE_FILE = "finetune.jsonl"
HELDOUT_FILE = "heldout.jsonl"

_STATEMENT = re.compile(r'^The "(\w+)" statement$')
_REDACTED = re.compile(r"<[A-Z_]+>")


def chat_template(cfg: TokenizerConfig) -> str:
    """Jinja chat template over the tokenizer's template tokens: user, assistant, end."""
    user, assistant, end = cfg.template_tokens[:3]
    return (
        "{% for message in messages %}"
        f"{{% if message['role'] == 'user' %}}{user}{{{{ message['content'] }}}}{end}"
        f"{{% elif message['role'] == 'assistant' %}}{assistant}{{{{ message['content'] }}}}{end}"
        "{% endif %}{% endfor %}"
        f"{{% if add_generation_prompt %}}{assistant}{{% endif %}}"
    )


_PROPER = {"Python", "I", "Unicode", "ASCII"}


def _lower_word(word: str) -> str:
    """Title-case words read as ordinary words in a question; names and acronyms stay."""
    if word in _PROPER or not word[:1].isupper() or not word[1:].islower():
        return word
    return word.lower()


def questions_for(title: str) -> list[str]:
    """Questions a reader would ask about a page with this title."""
    title = " ".join(title.split()).strip()
    if match := _STATEMENT.match(title):
        return [f"What does the {match.group(1)} statement do?", f"When is the {match.group(1)} statement used?"]
    subject = " ".join(_lower_word(w) for w in title.split())
    if subject.endswith("s") and not subject.endswith("ss"):
        return [f"What are {subject}?", f"Tell me about {subject}."]
    return [f"What is {subject}?", f"Tell me about {subject}."]


def is_answer_sentence(sentence: str) -> bool:
    """A prose sentence worth answering with: a full sentence, no code, no redacted PII."""
    words = sentence.split()
    return (
        8 <= len(words) <= 60
        and sentence.endswith(".")
        and not sentence.startswith("By ")
        and "::=" not in sentence
        and not _REDACTED.search(sentence)
        and symbol_ratio(sentence) < 0.12
    )


def _held_out(page_id: str, seed: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{page_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def make_pairs(doc: RedactedDoc) -> list[QaPair]:
    """Up to one pair per question template, each answered by the next good sentence."""
    title = doc["title"]
    if not title:
        return []
    answers = [s for s in doc["sentences"] if is_answer_sentence(s)]
    return [QaPair(id=f"{doc['id']}-{i}", question=question, answer=answer, page_id=doc["id"], url=doc["url"],
                   title=title)
            for i, (question, answer) in enumerate(zip(questions_for(title), answers, strict=False))]


def write_pairs(pairs: list[QaPair], path: Path) -> None:
    store.write_lines(pairs, path)


def read_pairs(path: Path) -> list[QaPair]:
    """``finetune.jsonl`` or ``heldout.jsonl``, every line validated."""
    return read_lines(path, QA_PAIR)


def split_pairs(docs: list[RedactedDoc], seed: int, heldout_fraction: float
                ) -> tuple[list[QaPair], list[QaPair], int]:
    """``(fine-tuning pairs, held-out pairs, pages without a pair)`` of ``docs``, split by page:
    a page's side depends only on its id and the seed, so it stays on its side in every set
    it enters (a full run's or a retraining's)."""
    finetune: list[QaPair] = []
    heldout: list[QaPair] = []
    skipped = 0
    for doc in sorted(docs, key=lambda d: d["id"]):
        pairs = make_pairs(doc)
        skipped += not pairs
        (heldout if _held_out(doc["id"], seed, heldout_fraction) else finetune).extend(pairs)
    return finetune, heldout, skipped


def write_qa(finetune: list[QaPair], heldout: list[QaPair], out_dir: Path, *, skipped: int,
             heldout_fraction: float, seed: int) -> QaSummary:
    """Write ``finetune.jsonl``, ``heldout.jsonl`` and the summary into ``out_dir``."""
    write_pairs(finetune, out_dir / FINETUNE_FILE)
    write_pairs(heldout, out_dir / HELDOUT_FILE)
    summary = QaSummary(
        finetune_pairs=len(finetune),
        heldout_pairs=len(heldout),
        finetune_pages=len({p.page_id for p in finetune}),
        heldout_pages=len({p.page_id for p in heldout}),
        pages_without_pairs=skipped,
        heldout_fraction=heldout_fraction,
        seed=seed,
    )
    summary.write(out_dir)
    return summary


def run_qa(corpus_path: Path, out_dir: Path, heldout_fraction: float = 0.2, seed: int = 1234) -> QaSummary:
    """Write ``finetune.jsonl`` and ``heldout.jsonl`` from a (redacted) corpus."""
    finetune, heldout, skipped = split_pairs(store.read_docs(corpus_path, RedactedDoc), seed, heldout_fraction)
    return write_qa(finetune, heldout, out_dir, skipped=skipped, heldout_fraction=heldout_fraction, seed=seed)
