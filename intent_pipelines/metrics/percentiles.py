"""Nearest-rank percentiles: an actual observed value, exact on integers, the same in Python and SQL.

For n values sorted ascending, the P-th percentile (0 < P <= 100) is the value at 1-based rank
``ceil(P * n / 100)``, computed in integers as ``(P * n + 99) // 100`` (no float rounding), and at
least 1. So p50 of [10, 20, 30, 40] is 20, p95 of 1..20 is 19, and p95 of fewer than 20 values is
the largest. No interpolation: a p95 is always a duration some request really took. An empty
sample has no percentile (None).
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def nearest_rank(p: int, n: int) -> int:
    """The 1-based rank of the P-th percentile among n values (n >= 1)."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    return max(1, (p * n + 99) // 100)


def percentile(values: Sequence[int] | npt.NDArray[np.int64], p: int) -> int | None:
    """The P-th nearest-rank percentile of ``values`` (any order), or None when empty."""
    array = np.asarray(values, dtype=np.int64)
    if array.size == 0:
        return None
    k = nearest_rank(p, int(array.size)) - 1
    return int(np.partition(array, k)[k])


def grouped_percentiles(codes: npt.NDArray[np.int64], values: npt.NDArray[np.int64], groups: int,
                        ps: Sequence[int]) -> dict[int, list[int | None]]:
    """For each P in ``ps``, the nearest-rank percentile of ``values`` per group code in [0, groups)."""
    if groups == 1:
        sorted_values = np.sort(values)
    else:
        # Sort by value, then stably by group: small integer codes sort by radix, much faster than lexsort.
        by_value = np.argsort(values, kind="stable")
        small = codes[by_value].astype(np.int16 if groups < 2**15 else np.int64)
        sorted_values = values[by_value[np.argsort(small, kind="stable")]]
    counts = np.bincount(codes, minlength=groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out: dict[int, list[int | None]] = {}
    for p in ps:
        ranks = np.maximum(1, (p * counts + 99) // 100)
        out[p] = [int(sorted_values[start + rank - 1]) if count else None
                  for start, rank, count in zip(starts.tolist(), ranks.tolist(), counts.tolist(), strict=True)]
    return out
