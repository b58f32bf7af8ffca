"""Durations a client asks for, within the bounds the server allows."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf import duration_pb2


def clamp_duration(
    requested: duration_pb2.Duration, *, default: timedelta, low: timedelta, high: timedelta
) -> timedelta:
    """The client's duration, or `default` when it is unset or zero, within [low, high].

    Clients may ask for any lease, cancel deadline or heartbeat interval, but the
    server bounds them so that one client cannot make it wait forever or work too
    hard. `requested` must have passed `validation.check_times` (non-negative and
    at most ten years), so converting it cannot overflow.
    """
    unset = requested.seconds == 0 and requested.nanos == 0
    chosen = default if unset else requested.ToTimedelta()
    return min(max(chosen, low), high)
