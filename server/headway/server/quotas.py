"""Per-tenant quotas: how much one tenant may hold and how fast it may change it.

A tenant at a limit is refused with RESOURCE_EXHAUSTED and a reason, and the
refusal changes nothing; other tenants are not affected. A limit of 0 means
unlimited.

- Tasks (stored, and active: not at rest) are counted by the engine and
  checked inside CreateTask's mutation, so the check and the commit are one
  step (`TaskQuota`).
- Mutations per second: one token bucket per tenant, taken before a mutation
  is queued (`RateLimiter`). Reads are not limited.
- Concurrent Subscribe streams: counted where a stream starts and released
  when it ends, however it ends (`StreamQuota`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from headway.server.errors import HeadwayError, Kind


@dataclass(frozen=True, slots=True)
class TaskQuota:
    """The most tasks a tenant may store, and the most of them not at rest; 0: unlimited."""

    stored: int = 0
    active: int = 0

    def check_create(self, stored: int, active: int) -> None:
        """Refuse one more task when the tenant already holds `stored` (`active`) of them."""
        if self.active and active >= self.active:
            raise HeadwayError(
                Kind.RESOURCE_EXHAUSTED,
                "TOO_MANY_ACTIVE_TASKS",
                f"the tenant has {active} tasks not at rest, its limit; finish some first",
                {"limit": str(self.active)},
            )
        if self.stored and stored >= self.stored:
            raise HeadwayError(
                Kind.RESOURCE_EXHAUSTED,
                "TOO_MANY_TASKS",
                f"the tenant stores {stored} tasks, its limit; delete tasks at rest first",
                {"limit": str(self.stored)},
            )


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at_ns: int


class RateLimiter:
    """A token bucket per tenant: `rate` tokens a second, holding at most `burst`.

    Time comes from `clock` (nanoseconds), the engine's, so tests move it by
    hand. A clock that goes back refills nothing. A rate of 0 limits nothing.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], int]) -> None:
        self._rate = rate
        self._burst = float(max(burst, 1))
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, tenant: str) -> None:
        """Spend one token of `tenant`'s bucket, or RESOURCE_EXHAUSTED `RATE_LIMITED`."""
        if not self._rate:
            return
        now_ns = self._clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(self._burst, now_ns)
        elapsed = max(now_ns - bucket.at_ns, 0) / 1e9
        bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
        bucket.at_ns = max(now_ns, bucket.at_ns)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait_ms = max(1, math.ceil((1.0 - bucket.tokens) / self._rate * 1000))
        raise HeadwayError(
            Kind.RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
            f"the tenant sends more than {self._rate:g} mutations a second "
            f"(bursts of {self._burst:g}); retry in {wait_ms} ms",
            {
                "limit": f"{self._rate:g}",
                "burst": f"{self._burst:g}",
                "retry_after_ms": str(wait_ms),
            },
        )


class StreamQuota:
    """The most concurrent Subscribe streams per tenant; 0: unlimited."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: dict[str, int] = {}

    def count(self, tenant: str) -> int:
        return self._open.get(tenant, 0)

    @contextmanager
    def hold(self, tenant: str) -> Iterator[None]:
        """One stream of `tenant` for the duration of the block, or `TOO_MANY_SUBSCRIPTIONS`."""
        held = self.count(tenant)
        if self._limit and held >= self._limit:
            raise HeadwayError(
                Kind.RESOURCE_EXHAUSTED,
                "TOO_MANY_SUBSCRIPTIONS",
                f"the tenant has {held} Subscribe streams open, its limit; close one first",
                {"limit": str(self._limit)},
            )
        self._open[tenant] = held + 1
        try:
            yield
        finally:
            remaining = self._open[tenant] - 1
            if remaining:
                self._open[tenant] = remaining
            else:
                del self._open[tenant]
