"""Exact percentiles over every sample, and the small helpers the figures share.

Samples are kept whole (array('q') of nanoseconds shipped from the children)
rather than bucketed, so p99 and max are exact; even the largest scenario
produces a few million samples, which sort in about a second after the run.
"""

from __future__ import annotations

import array
import math
from collections.abc import Iterable

PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


def merge(chunks: Iterable[bytes]) -> list[int]:
    """Concatenate array('q') byte strings and sort the samples."""
    merged = array.array("q")
    for chunk in chunks:
        merged.frombytes(chunk)
    return sorted(merged)


def summary_ms(samples: list[int]) -> dict[str, float | int]:
    """Nearest-rank p50/p90/p99 and the max of sorted nanosecond samples, in milliseconds."""
    out: dict[str, float | int] = {"samples": len(samples)}
    if not samples:
        return out
    for name, fraction in PERCENTILES:
        rank = max(1, math.ceil(fraction * len(samples)))
        out[f"{name}_ms"] = round(samples[rank - 1] / 1e6, 3)
    out["max_ms"] = round(samples[-1] / 1e6, 3)
    return out


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def mib(n_bytes: float) -> float:
    return round(n_bytes / (1 << 20), 1)


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as possible, largest first."""
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]
