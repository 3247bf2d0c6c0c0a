import pytest

from llmops.tokenizer.windows import new_token_offsets, sliding_windows


def test_example_from_the_spec():
    assert sliding_windows(28, 10, 5) == [(0, 10), (5, 15), (10, 20), (15, 25), (20, 28)]


@pytest.mark.parametrize("n, window, stride, expected", [
    (0, 10, 5, []),
    (1, 10, 5, [(0, 1)]),
    (10, 10, 5, [(0, 10)]),              # exactly one window: no redundant trailing one
    (11, 10, 10, [(0, 10), (10, 11)]),   # stride == window: a partition
    (25, 10, 5, [(0, 10), (5, 15), (10, 20), (15, 25)]),
    (5, 2, 1, [(0, 2), (1, 3), (2, 4), (3, 5)]),
    (3, 1, 1, [(0, 1), (1, 2), (2, 3)]),
])
def test_edges(n, window, stride, expected):
    windows = sliding_windows(n, window, stride)
    assert windows == expected
    covered = set()
    for start, end in windows:
        assert 0 <= start < end <= n and end - start <= window
        covered.update(range(start, end))
    assert covered == set(range(n))


@pytest.mark.parametrize("args, error", [
    ((10, 0, 1), ValueError), ((10, 5, 0), ValueError), ((10, 5, 6), ValueError), ((-1, 5, 5), ValueError),
    ((10.0, 5, 5), TypeError), ((10, True, 1), TypeError),
])
def test_invalid_arguments(args, error):
    with pytest.raises(error):
        sliding_windows(*args)


def test_new_token_offsets_score_each_token_once():
    windows = sliding_windows(28, 10, 5)
    offsets = new_token_offsets(windows)
    assert offsets == [0, 10, 15, 20, 25]
    scored = [t for (start, end), first in zip(windows, offsets, strict=True) for t in range(first, end)]
    assert scored == list(range(28))
