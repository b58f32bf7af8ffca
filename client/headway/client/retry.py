"""Retrying calls that failed for a passing reason, without ever applying a change twice.

A mutation is retried with the very same request message, so with the same
`request_id`: the server applies it once and answers every retry with the first
outcome. That makes it safe to retry even when the first attempt may have been
committed before its answer was lost (DEADLINE_EXCEEDED, or a connection that
broke). Only the codes that mean "try again" are retried; every other error is the
server's answer and is raised at once.

Waits grow exponentially with jitter, so agents that lost the same server do not
all come back in the same instant, and the whole call stays within one overall
deadline, so a caller is never stuck retrying forever.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from headway.client.errors import HeadwayError

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

NEVER_RETRIED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
"""The server refused the caller: the same credentials get the same answer, so no
policy retries these, whatever its `codes` say."""


@dataclass(frozen=True)
class RetryPolicy:
    """How to retry: which codes, how long to wait between attempts, and for how long in all.

    Attributes:
        initial_backoff: The first wait, in seconds.
        max_backoff: The longest single wait, in seconds.
        multiplier: How much the wait grows after each failed attempt.
        deadline: The most seconds spent on one call, attempts and waits included;
            None retries without limit.
        codes: The status codes worth retrying.
        quiet: Log each retry at DEBUG instead of WARNING, for a caller that says
            itself, once, that the server cannot be reached (see headway.contrib).
    """

    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    deadline: float | None = 60.0
    codes: frozenset[grpc.StatusCode] = field(default=TRANSIENT_CODES)
    quiet: bool = False

    def backoff(self) -> Backoff:
        """A fresh sequence of waits for one call or one reconnecting stream."""
        return Backoff(self)

    def should_retry(self, error: HeadwayError) -> bool:
        """True for the codes that mean "try again"; every other error is an answer."""
        return error.code in self.codes and error.code not in NEVER_RETRIED


class Backoff:
    """Jittered exponential waits: each is drawn from the upper half of the current ceiling.

    Keeping half of the ceiling guarantees the waits still grow (plain "full jitter"
    may draw near-zero waits in a row and hammer a server that is starting up).
    """

    def __init__(self, policy: RetryPolicy, rng: random.Random | None = None) -> None:
        self._policy = policy
        self._ceiling = policy.initial_backoff
        self._rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self._ceiling, self._policy.max_backoff)
        self._ceiling = ceiling * self._policy.multiplier
        self.attempts += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """Start over from the initial wait, after a call made progress."""
        self._ceiling = self._policy.initial_backoff
        self.attempts = 0


async def call_with_retry(
    attempt: Callable[[float | None], Awaitable[T]],
    policy: RetryPolicy,
    *,
    timeout: float | None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    target: str | None = None,
) -> T:
    """Run `attempt(per_attempt_timeout)` until it succeeds, fails for good, or time runs out.

    Args:
        attempt: Makes one call with the given timeout; it must send the same request
            every time (same `request_id`), which is what makes retrying safe.
        policy: Which errors to retry and how long to wait.
        timeout: The timeout of one attempt; each attempt also ends at the overall deadline.
        sleep: Waits between attempts (replaced in tests).
        clock: Measures the overall deadline (replaced in tests).
        target: The server called, named in the warning logged before each retry.

    Raises:
        HeadwayError: The last error, when it is not transient or the deadline has passed.
    """
    deadline = None if policy.deadline is None else clock() + policy.deadline
    backoff = policy.backoff()
    while True:
        per_attempt = timeout
        if deadline is not None:
            remaining = max(deadline - clock(), 0.001)
            per_attempt = remaining if timeout is None else min(timeout, remaining)
        try:
            return await attempt(per_attempt)
        except HeadwayError as error:
            if not policy.should_retry(error):
                raise
            delay = backoff.next_delay()
            if deadline is not None and clock() + delay >= deadline:
                raise
            # A warning on every retry, the first included: an agent whose server is gone
            # would otherwise wait out the whole deadline in silence.
            (logger.debug if policy.quiet else logger.warning)(
                "cannot reach %s (%s); retrying for up to %s",
                target or "the server",
                error.code.name,
                "as long as it takes" if deadline is None else _seconds(deadline - clock()),
            )
            logger.debug("retrying in %.2fs after %s (attempt %d)", delay, error, backoff.attempts)
            await sleep(delay)


def _seconds(seconds: float) -> str:
    """`57 s`, or `0.4 s` below ten seconds."""
    return f"{seconds:.0f} s" if seconds >= 10 else f"{max(seconds, 0):.1f} s"


__all__ = ["NEVER_RETRIED", "TRANSIENT_CODES", "Backoff", "RetryPolicy", "call_with_retry"]
