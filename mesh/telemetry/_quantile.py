"""Quantiles estimated from histogram buckets, the way Prometheus' histogram_quantile does it.

Works on cumulative ``(upper_bound, count)`` pairs so that the CLI can use it on
buckets scraped from a proxy (or on the difference of two scrapes) as well as on
a live ``HistogramChild``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Estimate the ``q``-quantile (0 ≤ q ≤ 1) from cumulative buckets.

    ``buckets`` are ``(upper_bound, cumulative_count)`` pairs, normally ending with
    ``(inf, total)``. The value is interpolated linearly inside the bucket that holds
    the rank, with 0 as the lower edge of the first bucket. A rank that falls into
    the ``+Inf`` bucket yields the highest finite bound (we cannot know better).
    Returns None when there are no observations.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be between 0 and 1, got {q}")
    ordered = sorted(buckets)
    if not ordered:
        return None
    bounds = [bound for bound, _ in ordered]
    cumulative: list[float] = []
    running = 0.0
    for _, count in ordered:
        # Scrapes can be skewed between bucket reads; never let the curve go down.
        running = max(running, count)
        cumulative.append(running)
    total = cumulative[-1]
    if total <= 0:
        return None

    rank = q * total
    index = next(i for i, count in enumerate(cumulative) if count >= rank and count > 0)
    upper = bounds[index]
    if math.isinf(upper):
        if index == 0:
            return None  # only a +Inf bucket: nothing to interpolate from
        return bounds[index - 1]
    if index == 0:
        if upper <= 0:
            return upper
        lower, below = 0.0, 0.0
    else:
        lower, below = bounds[index - 1], cumulative[index - 1]
    # count > 0: bucket `index` is the first one that reaches the rank with observations.
    in_bucket = cumulative[index] - below
    return lower + (upper - lower) * ((rank - below) / in_bucket)
