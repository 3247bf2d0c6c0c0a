"""Decontamination check: how much of the evaluation data is already in the training data.

The splits keep evaluation items out of training by construction (validation
documents are not in the training shards; held-out Q&A pages give no fine-tuning
pair). This check measures what construction cannot see: the same text reached
through another page. An evaluation item counts as contaminated when at least
``threshold`` of its word n-grams occur in the training text (PaLM's rule: 8-grams,
70%); shorter items are compared as one n-gram of their own length.

Answers may restate facts from pretraining pages: that is the knowledge a docs
assistant is trained on, so only held-out *questions* and validation *documents*
are checked.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from llmops.records.data import ContaminationRow

_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _grams(words: list[str], n: int) -> set[bytes]:
    # 8-byte digests keep memory flat however long the training text is.
    return {hashlib.blake2b(" ".join(words[i : i + n]).encode(), digest_size=8).digest()
            for i in range(len(words) - n + 1)}


class NgramIndex:
    """Hashed word n-grams of the training text, built lazily for each n an item needs."""

    def __init__(self, texts: Iterable[str], n: int = 8) -> None:
        self.n = n
        self._docs = [_words(t) for t in texts]
        self._by_n: dict[int, set[bytes]] = {}

    def grams(self, n: int) -> set[bytes]:
        if n not in self._by_n:
            grams: set[bytes] = set()
            for words in self._docs:
                grams |= _grams(words, n)
            self._by_n[n] = grams
        return self._by_n[n]

    def overlap(self, text: str) -> float:
        """Share of the item's n-grams found in the training text (0 for an empty item)."""
        words = _words(text)
        if not words:
            return 0.0
        n = min(self.n, len(words))
        item = _grams(words, n)
        return len(item & self.grams(n)) / len(item)


def contamination_report(training_texts: Iterable[str], eval_sets: dict[str, list[str]], n: int = 8,
                         threshold: float = 0.7) -> dict[str, ContaminationRow]:
    """Per evaluation set: items, contaminated items, rate, and mean n-gram overlap."""
    index = NgramIndex(training_texts, n)
    report: dict[str, ContaminationRow] = {}
    for name, items in eval_sets.items():
        overlaps = [index.overlap(text) for text in items]
        contaminated = sum(o >= threshold for o in overlaps)
        report[name] = ContaminationRow(
            items=len(items),
            contaminated=contaminated,
            rate=round(contaminated / len(items), 4) if items else 0.0,
            mean_ngram_overlap=round(sum(overlaps) / len(items), 4) if items else 0.0,
        )
    return report
