"""Behavioural test cases: what a deployed model's answers must (not) look like, written down first.

Metrics say how good a model is on average; a behavioural case says what it must
never do, whatever its average: answer with nothing, echo a chat-template token,
emit an e-mail address, ramble past a length, or fail to end its turn (a serving
endpoint that always runs to ``max_new_tokens`` is slow and appends junk). The cases
live in a YAML file (``include/eval/behaviour.yaml``) validated here, so a typo in a
key fails loudly instead of silently skipping a check.

Each prompt is sent the way the served model receives it: through the tokenizer's chat
template with the generation prompt, decoded greedily (reproducible), and only the new
tokens are judged, with special tokens skipped and anything after the first stop token
cut off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmops.errors import PermanentError
from llmops.evaluation.generation import stop_token_ids
from llmops.evaluation.leakage import greedy_continuations

DEFAULT_CASES_FILE = Path(__file__).resolve().parents[2] / "include" / "eval" / "behaviour.yaml"


class BehaviourCaseError(PermanentError, ValueError):
    """The behaviour case file is missing or malformed; the message names the case and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


class Expect(_Strict):
    non_empty: bool = True
    """The answer must hold a non-whitespace character."""
    must_contain: list[str] = []
    """Substrings that must all appear in the answer (case-sensitive)."""
    must_not_contain: list[str] = []
    """Substrings that must not appear in the answer (case-sensitive), e.g. template tokens as text."""
    must_not_match: list[str] = []
    """Regular expressions (Python ``re.search``) that must not match, e.g. anything shaped like an e-mail."""
    max_chars: int | None = Field(None, ge=1)
    """Longest acceptable answer in characters; None for no limit."""
    stops: bool = False
    """Generation must end with an end-of-text/end-of-turn token before ``max_new_tokens``."""

    @field_validator("must_not_match")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
        return patterns


class Case(_Strict):
    name: str = Field(min_length=1)
    """Unique name, used in reports and failure messages."""
    prompt: str = Field(min_length=1)
    """The user's message, sent through the chat template."""
    expect: Expect = Expect()
    """What the answer must satisfy; every unset check is off except ``non_empty``."""


class CaseResult(TypedDict):
    """One case's answer and the expectations it failed."""

    name: str
    passed: bool
    failures: list[str]
    completion: str
    stopped: bool
    new_tokens: int


class BehaviourResult(TypedDict):
    """What :func:`run_cases` found: the report's behaviour section."""

    behaviour_pass_rate: float
    passed: int
    total: int
    cases: list[CaseResult]


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<case>"
        got = f" (got {err['input']!r})" if err["type"] != "extra_forbidden" else ""
        parts.append(f"{key}: {err['msg']}{got}")
    return "; ".join(parts)


def parse_cases(raw: Any, source: str = "<cases>") -> list[Case]:
    """Validate a list of case mappings; errors name the case (by name, else by position)."""
    if not isinstance(raw, list) or not raw:
        raise BehaviourCaseError(f"{source}: expected a non-empty list of cases, got {type(raw).__name__}")
    cases: list[Case] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        label = f"case #{i + 1}" + (f" {item['name']!r}" if isinstance(item, dict) and item.get("name") else "")
        if not isinstance(item, dict):
            raise BehaviourCaseError(f"{source}: {label}: expected a mapping, got {type(item).__name__}")
        try:
            case = Case.model_validate(item)
        except ValidationError as exc:
            raise BehaviourCaseError(f"{source}: {label}: {_describe(exc)}") from None
        if case.name in seen:
            raise BehaviourCaseError(f"{source}: {label}: duplicate case name")
        seen.add(case.name)
        cases.append(case)
    return cases


def load_cases(path: str | Path = DEFAULT_CASES_FILE) -> list[Case]:
    """The validated cases of a YAML file (default: the shipped ``include/eval/behaviour.yaml``)."""
    path = Path(path)
    if not path.exists():
        raise BehaviourCaseError(f"behaviour case file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BehaviourCaseError(f"{path}: not valid YAML: {exc}") from None
    return parse_cases(raw, str(path))


def check_completion(case: Case, completion: str, stopped: bool) -> list[str]:
    """The failed expectations of ``case`` for one answer, as readable strings ([] = passed)."""
    expect = case.expect
    failures: list[str] = []
    if expect.non_empty and not completion.strip():
        failures.append("non_empty: the answer is empty")
    failures += [f"must_contain {s!r} missing" for s in expect.must_contain if s not in completion]
    failures += [f"must_not_contain {s!r} found" for s in expect.must_not_contain if s in completion]
    failures += [f"must_not_match {p!r} matched" for p in expect.must_not_match if re.search(p, completion)]
    if expect.max_chars is not None and len(completion) > expect.max_chars:
        failures.append(f"max_chars {expect.max_chars} exceeded ({len(completion)} chars)")
    if expect.stops and not stopped:
        failures.append("stops: no end-of-text/end-of-turn token before max_new_tokens")
    return failures


def run_cases(model: Any, tokenizer: Any, cases: Sequence[Case], *, max_new_tokens: int = 48,
              batch_size: int = 8, stop_ids: Sequence[int] | None = None) -> BehaviourResult:
    """Generate an answer per case and check it; ``behaviour_pass_rate`` is the share of cases passed.

    ``stop_ids`` default to the model's generation config ``eos_token_id`` (an exported
    model's ``generation_config.json`` lists end of text and end of turn). A case
    ``stopped`` when one of them was generated within ``max_new_tokens``.
    """
    if not cases:
        raise ValueError("no behaviour cases to run")
    if stop_ids is None:
        stop_ids = stop_token_ids(model)
    stop = set(stop_ids)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": c.prompt}], add_generation_prompt=True,
                                             tokenize=False) for c in cases]
    continuations = greedy_continuations(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                         batch_size=batch_size, stop_ids=stop_ids)
    results: list[CaseResult] = []
    for case, ids in zip(cases, continuations, strict=True):
        stopped = bool(ids) and ids[-1] in stop
        completion = tokenizer.decode(ids, skip_special_tokens=True)
        failures = check_completion(case, completion, stopped)
        results.append({"name": case.name, "passed": not failures, "failures": failures,
                        "completion": completion, "stopped": stopped, "new_tokens": len(ids)})
    passed = sum(r["passed"] for r in results)
    return {"behaviour_pass_rate": passed / len(results), "passed": passed, "total": len(results),
            "cases": results}
