"""The principal of the call being served, for code that has no request context at hand.

Each RPC runs in its own asyncio task and so in its own copy of the context:
binding the principal in the guard makes it visible to that call only.
"""

from __future__ import annotations

from contextvars import ContextVar

from headway.server.auth.principal import Principal

_current: ContextVar[Principal] = ContextVar("headway_principal")


def bind(principal: Principal) -> None:
    _current.set(principal)


def current_principal() -> Principal:
    """The caller of the RPC being served; LookupError outside one (a bug)."""
    return _current.get()
