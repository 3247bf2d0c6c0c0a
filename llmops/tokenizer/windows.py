"""Fixed-length windows over a token sequence, for evaluation and training samples.

Windows start at 0, S, 2S, ... and stop at the first one that reaches the end of the
sequence; that last window is clipped, so it may be shorter than ``window``. Every
token is covered, and no window lies wholly inside another one at the end (the
classic off-by-one: a trailing window that adds no new token).

``stride > window`` is rejected: it would leave gaps of tokens no window covers,
which for perplexity silently drops text from the measurement. To use fewer windows,
pick a longer window, or sample from the list.
"""

from __future__ import annotations


def sliding_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` half-open token ranges covering ``range(n_tokens)``.

    >>> sliding_windows(28, 10, 5)
    [(0, 10), (5, 15), (10, 20), (15, 25), (20, 28)]
    """
    for name, value in (("n_tokens", n_tokens), ("window", window), ("stride", stride)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, window={window}] (a larger stride leaves tokens uncovered), "
                         f"got {stride}")
    windows: list[tuple[int, int]] = []
    start = 0
    while start < n_tokens:
        end = min(start + window, n_tokens)
        windows.append((start, end))
        if end == n_tokens:
            break
        start += stride
    return windows


def new_token_offsets(windows: list[tuple[int, int]]) -> list[int]:
    """For each window, the first position not covered by the previous window.

    Strided perplexity scores only these tokens (the rest are context), so each token
    is scored exactly once: ``[(0,10),(5,15)] -> [0, 10]``.
    """
    out: list[int] = []
    prev_end = 0
    for start, end in windows:
        out.append(max(start, prev_end))
        prev_end = end
    return out
