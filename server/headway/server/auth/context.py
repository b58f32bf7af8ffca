"""The principal of the call being served, for code that has no request context at hand.

Each RPC runs in its own asyncio task and so in its own copy of the context:
binding the principal in the guard makes it visible to that call only.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from headway.server.auth.principal import Principal

_current: ContextVar[Principal] = ContextVar("headway_principal")
_recheck: ContextVar[Callable[[], Principal]] = ContextVar("headway_recheck")


def bind(principal: Principal, recheck: Callable[[], Principal] | None = None) -> None:
    """Bind the call's principal and, for calls that last, how to authenticate it again."""
    _current.set(principal)
    _recheck.set(recheck or (lambda: principal))


def current_principal() -> Principal:
    """The caller of the RPC being served; LookupError outside one (a bug)."""
    return _current.get()


def current_recheck() -> Callable[[], Principal]:
    """Authenticates the call's credentials again (raises UNAUTHENTICATED once revoked)."""
    return _recheck.get()
