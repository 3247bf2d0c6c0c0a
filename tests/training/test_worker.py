from __future__ import annotations

import pytest

from llmops.training.worker import lr_factor


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    f = [lr_factor(s, steps=100, warmup=10, min_ratio=0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(f[:10], f[1:10], strict=False))
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert lr_factor(100, steps=100, warmup=10, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(0, steps=5, warmup=0, min_ratio=0.0) == pytest.approx(1.0)
