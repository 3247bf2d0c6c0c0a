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
