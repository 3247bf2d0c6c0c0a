"""Shared fixtures: every test gets its own LLMOPS_HOME so nothing leaks between tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def llmops_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "llmops_home"
    home.mkdir()
    monkeypatch.setenv("LLMOPS_HOME", str(home))
    return home


# The training fixtures (token shards, a tokenizer with its chat template, one tiny
# pretrained model) are session-scoped and shared by tests/training, tests/evaluation
# and tests/plugins: declared once here so that each is built once per session.
from tests.training.fixtures import data_home, pretrained  # noqa: E402,F401
