"""Behavioural cases: the YAML's validation, the checks on strings, and one real run."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.evaluation.behaviour import (
    BehaviourCaseError,
    Case,
    check_completion,
    load_cases,
    parse_cases,
)
from tests.training.fixtures import paths

EMAIL = r"[\w.+-]+@[\w-]+\.[A-Za-z]{2,}"


def case(**expect) -> Case:
    return Case(name="c", prompt="q?", expect=expect)


def test_shipped_cases_load() -> None:
    cases = load_cases()
    assert len(cases) >= 3 and len({c.name for c in cases}) == len(cases)
    assert sum(c.expect.stops for c in cases) >= 1
    # The demo data quotes "<PERSON>" in titles: the shipped cases must not forbid it.
    assert all("<PERSON>" not in c.expect.must_not_contain for c in cases)


@pytest.mark.parametrize("raw, message", [
    ([{"name": "a", "prompt": "p", "expect": {"non_empty": True, "must_contian": ["x"]}}],
     r"case #1 'a': expect.must_contian: Extra inputs are not permitted"),
    ([{"name": "a", "prompt": "p"}, {"name": "b", "prompt": "p", "expect": {"max_chars": 0}}],
     r"case #2 'b': expect.max_chars: Input should be greater than or equal to 1"),
    ([{"name": "a", "prompt": ""}], r"case #1 'a': prompt"),
    ([{"prompt": "p"}], r"case #1: name: Field required"),
    ([{"name": "a", "prompt": "p"}, {"name": "a", "prompt": "q"}], r"case #2 'a': duplicate case name"),
    ([{"name": "a", "prompt": "p", "expect": {"must_not_match": ["(["]}}], r"invalid regular expression"),
    ({"name": "a"}, r"expected a non-empty list"),
    (["a"], r"case #1: expected a mapping"),
])
def test_invalid_cases_name_the_case(raw, message: str) -> None:
    with pytest.raises(BehaviourCaseError, match=message):
        parse_cases(raw, "cases.yaml")


def test_load_cases_errors(tmp_path: Path) -> None:
    with pytest.raises(BehaviourCaseError, match="not found"):
        load_cases(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: a\n  prompt: [unclosed\n")
    with pytest.raises(BehaviourCaseError, match="not valid YAML"):
        load_cases(bad)


def test_check_completion() -> None:
    assert check_completion(case(), "An answer.", stopped=False) == []
    assert check_completion(case(), "  \n", stopped=True) == ["non_empty: the answer is empty"]
    assert check_completion(case(non_empty=False), "", stopped=True) == []
    assert check_completion(case(must_contain=["loop", "Loop"]), "a loop", True) == ["must_contain 'Loop' missing"]
    assert check_completion(case(must_not_contain=["<|user|>"]), "x <|user|> y", True) == \
        ["must_not_contain '<|user|>' found"]
    assert check_completion(case(must_not_match=[EMAIL]), "write to jane.roe@example.com", True) == \
        [f"must_not_match {EMAIL!r} matched"]
    assert check_completion(case(must_not_match=[EMAIL]), "use @decorator syntax", True) == []
    assert check_completion(case(max_chars=5), "123456", True) == ["max_chars 5 exceeded (6 chars)"]
    assert check_completion(case(stops=True), "ok", stopped=False) == \
        ["stops: no end-of-text/end-of-turn token before max_new_tokens"]
    assert len(check_completion(case(stops=True, max_chars=1, must_contain=["z"]), "ab", False)) == 3


def test_run_cases_on_a_tiny_random_model(data_home: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llmops.evaluation.behaviour import run_cases

    tokenizer = AutoTokenizer.from_pretrained(paths(data_home)["tokenizer"])
    torch.manual_seed(0)
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=128, eos_token_id=[tokenizer.eos_token_id, end], pad_token_id=tokenizer.pad_token_id))
    cases = parse_cases([
        {"name": "anything", "prompt": "What is the for statement?", "expect": {"non_empty": False}},
        {"name": "must-stop", "prompt": "What does pass do?", "expect": {"stops": True, "max_chars": 1}},
    ])
    result = run_cases(model, tokenizer, cases, max_new_tokens=8)
    assert [c["name"] for c in result["cases"]] == ["anything", "must-stop"]
    first, second = result["cases"]
    assert first["passed"] and first["failures"] == [] and first["new_tokens"] <= 8
    assert isinstance(first["completion"], str) and "<|assistant|>" not in first["completion"]
    # A random model rambles: eight random tokens are more than one character, and it
    # almost surely never picks one of the two stop ids out of ~1,000.
    assert not second["passed"] and "max_chars 1 exceeded" in " ".join(second["failures"])
    assert second["stopped"] or "stops: no end-of-text/end-of-turn token before max_new_tokens" in second["failures"]
    assert result["behaviour_pass_rate"] == 0.5 and result["total"] == 2
