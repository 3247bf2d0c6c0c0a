"""Generation-quality metrics: pure functions on strings.

BLEU and ROUGE come from the reference implementations (``sacrebleu`` and Google's
``rouge_score``), called directly rather than through ``evaluate.load``, which fetches
its metric scripts from the Hub and so fails offline. Calling the libraries ourselves
also keeps the numbers identical to what anyone else computes with them.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    """Reject input that would make a corpus metric silently meaningless (ValueError) or is not text (TypeError)."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be lists of strings, not a single string")
    if len(predictions) != len(references):
        raise ValueError(f"predictions and references differ in length: {len(predictions)} vs {len(references)}")
    if not predictions:
        raise ValueError("predictions and references are empty; a metric over no pairs is undefined")
    for name, texts in (("predictions", predictions), ("references", references)):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"{name}[{bad}] is {type(texts[bad]).__name__}, not str")


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100) with sacrebleu's defaults (13a tokenisation, exponential smoothing).

    Corpus-level, not a mean of sentence BLEUs: n-gram counts are pooled over all pairs,
    which is what BLEU is defined as and what every published number means.
    """
    import sacrebleu

    _check_pairs(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (0-1) over the pairs, Porter-stemmed as in the ROUGE paper's setup."""
    from rouge_score import rouge_scorer

    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)  # rouge_score's order is (target, prediction)
        for key in ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    return {key: totals[key] / len(predictions) for key in ROUGE_TYPES}


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, drop punctuation and articles, collapse whitespace.

    So "The answer." and "answer" match: exact match should judge content, not casing
    or a trailing full stop.
    """
    text = text.lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Share (0-1) of predictions equal to their reference after SQuAD normalisation."""
    _check_pairs(predictions, references)
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references, strict=True))
    return hits / len(predictions)


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct-n (Li et al., 2016): distinct n-grams / all n-grams over ``texts`` (whitespace tokens).

    A diversity measure: a model that repeats itself, within or across answers, scores
    low. N-grams are counted per text (none spans two texts). 0.0 when there are none.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = text.split()
        for i in range(len(tokens) - n + 1):
            seen.add(tuple(tokens[i:i + n]))
            total += 1
    return len(seen) / total if total else 0.0
