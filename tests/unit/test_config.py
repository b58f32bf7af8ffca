"""Settings come from flags, then HEADWAY_* environment variables, then defaults."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from headway.server.config import Settings


def test_defaults_run_on_the_customary_port_with_sqlite() -> None:
    settings = Settings()
    assert settings.address == "0.0.0.0:50051"
    assert settings.database == Path("headway.db")
    assert settings.sqlite_synchronous == "FULL"


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWAY_ADDRESS", "127.0.0.1:6000")
    monkeypatch.setenv("HEADWAY_HEARTBEAT_MIN", "PT0.5S")
    monkeypatch.setenv("HEADWAY_LIMITS__MAX_STEPS", "7")
    settings = Settings()
    assert settings.address == "127.0.0.1:6000"
    assert settings.heartbeat_min == timedelta(milliseconds=500)
    assert settings.limits.max_steps == 7


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWAY_ADDRESS", "127.0.0.1:6000")
    settings = Settings(_cli_parse_args=["--address", "127.0.0.1:7000", "--limits.max-labels", "3"])
    assert settings.address == "127.0.0.1:7000"
    assert settings.limits.max_labels == 3


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWAY_SUBSCRIBER_QUEUE_EVENTS", "0")
    with pytest.raises(ValidationError, match="subscriber_queue_events"):
        Settings()
