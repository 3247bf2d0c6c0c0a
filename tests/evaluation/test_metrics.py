"""The metrics equal their reference implementations, and hand-checkable cases hold."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from llmops.evaluation import metrics

PREDICTIONS = [
    "The cat sat on the mat.",
    "A for statement iterates over the items of any sequence.",
    "Functions are defined with the def keyword",
    "completely unrelated words here",
]
REFERENCES = [
    "The cat is sitting on the mat.",
    "The for statement is used to iterate over the elements of a sequence.",
    "A function definition defines a user-defined function object.",
    "The with statement wraps the execution of a block.",
]


def test_bleu_equals_sacrebleu_corpus_bleu():
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score
    assert metrics.bleu(PREDICTIONS, REFERENCES) == pytest.approx(expected)
    assert 0 < metrics.bleu(PREDICTIONS, REFERENCES) < 100


def test_rouge_equals_rouge_scorer_mean_fmeasure():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred) for pred, ref in zip(PREDICTIONS, REFERENCES, strict=True)]
    got = metrics.rouge(PREDICTIONS, REFERENCES)
    assert set(got) == {"rouge1", "rouge2", "rougeL"}
    for key in got:
        assert got[key] == pytest.approx(sum(s[key].fmeasure for s in scores) / len(scores))
        assert 0 <= got[key] <= 1


def test_identical_strings_score_perfectly():
    assert metrics.bleu(REFERENCES, REFERENCES) == pytest.approx(100.0)
    assert metrics.rouge(REFERENCES, REFERENCES) == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    assert metrics.exact_match(REFERENCES, REFERENCES) == 1.0


def test_exact_match_normalises_like_squad():
    assert metrics.normalize_answer("  The  Answer, is: 42! ") == "answer is 42"
    assert metrics.exact_match(["The answer.", "an Apple", "Paris"], ["answer", "apple!", "London"]) == \
        pytest.approx(2 / 3)
    assert metrics.exact_match(["theory"], ["ory"]) == 0.0  # articles go only as whole words


def test_distinct_n_hand_cases():
    assert metrics.distinct_n(["a a a"], 1) == pytest.approx(1 / 3)
    assert metrics.distinct_n(["a a a"], 2) == pytest.approx(1 / 2)
    assert metrics.distinct_n(["a b", "a c"], 1) == pytest.approx(3 / 4)
    assert metrics.distinct_n(["a b", "b c"], 2) == 1.0  # n-grams never span two texts
    assert metrics.distinct_n(["one", ""], 2) == 0.0
    assert metrics.distinct_n([], 1) == 0.0


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: metrics.bleu(["a"], ["a", "b"]), ValueError, "differ in length: 1 vs 2"),
    (lambda: metrics.rouge([], []), ValueError, "empty"),
    (lambda: metrics.exact_match("abc", "abc"), TypeError, "not a single string"),
    (lambda: metrics.bleu(["a", None], ["a", "b"]), TypeError, r"predictions\[1\] is NoneType"),
    (lambda: metrics.distinct_n(["a b"], 0), ValueError, "positive integer"),
    (lambda: metrics.distinct_n("a b", 1), TypeError, "not a single string"),
])
def test_bad_input_raises_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
