"""Settings come from flags, then HEADWAY_* environment variables, then defaults."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from headway.server.config import Limits, Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_run_on_the_customary_port_on_loopback_with_sqlite() -> None:
    settings = Settings()
    assert settings.address == "127.0.0.1:50051"  # beyond loopback: see protected mode
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


DURATION_FORMS = [
    ("30", timedelta(seconds=30)),
    ("1.5", timedelta(seconds=1.5)),
    ("PT30S", timedelta(seconds=30)),
    ("PT0.5S", timedelta(milliseconds=500)),
    ("30s", timedelta(seconds=30)),
    ("500ms", timedelta(milliseconds=500)),
    ("20us", timedelta(microseconds=20)),
    ("5m", timedelta(minutes=5)),
    ("15 min", timedelta(minutes=15)),
    ("2h", timedelta(hours=2)),
    ("7d", timedelta(days=7)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("0", timedelta(0)),
]
DURATION_FIELDS = [
    name for name, field in Settings.model_fields.items() if field.annotation is timedelta
]


@pytest.mark.parametrize(("text", "expected"), DURATION_FORMS)
def test_a_duration_flag_takes_every_form(text: str, expected: timedelta) -> None:
    settings = Settings(_cli_parse_args=["--lease-default", text])
    assert settings.lease_default == expected


@pytest.mark.parametrize(("text", "expected"), DURATION_FORMS)
def test_a_duration_variable_takes_every_form(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: timedelta
) -> None:
    monkeypatch.setenv("HEADWAY_LEASE_DEFAULT", text)
    assert Settings().lease_default == expected


def test_every_duration_setting_takes_seconds_and_units(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(DURATION_FIELDS) >= 19
    for name in DURATION_FIELDS:
        monkeypatch.setenv(f"HEADWAY_{name.upper()}", "2h")
    flags = [arg for name in DURATION_FIELDS for arg in (f"--{name.replace('_', '-')}", "90")]
    from_environment = Settings()
    from_flags = Settings(_cli_parse_args=flags)
    for name in DURATION_FIELDS:
        assert getattr(from_environment, name) == timedelta(hours=2), name
        assert getattr(from_flags, name) == timedelta(seconds=90), name


@pytest.mark.parametrize("text", ["nonsense", "1e3", "5 parsecs", "", "s", "1h30", "PTxS"])
def test_a_garbled_duration_is_refused(text: str) -> None:
    with pytest.raises(ValidationError, match="lease_default"):
        Settings(_cli_parse_args=["--lease-default", text])


@pytest.mark.parametrize("text", ["-5", "-PT5S"])
def test_a_negative_duration_is_refused(text: str) -> None:
    with pytest.raises(ValidationError, match="may not be negative"):
        Settings(lease_default=text)


def run_server(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """The server's command line as an operator runs it; it must refuse before it binds."""
    return subprocess.run(
        [sys.executable, "-m", "headway.server", "--address", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **environment},
    )


def test_the_server_refuses_a_garbled_flag_with_exit_2() -> None:
    finished = run_server("--lease-default", "nonsense")
    assert finished.returncode == 2
    assert "--lease-default (HEADWAY_LEASE_DEFAULT): invalid duration 'nonsense'" in (
        finished.stderr
    )
    assert "PT30S" in finished.stderr  # the message says what would be accepted


def test_the_server_refuses_a_garbled_variable_with_exit_2() -> None:
    finished = run_server(HEADWAY_SHUTDOWN_GRACE="soon")
    assert finished.returncode == 2
    assert "HEADWAY_SHUTDOWN_GRACE): invalid duration 'soon'" in finished.stderr


def readme_configuration_table() -> dict[str, str]:
    """Flag (as `--lease-default`) to the default the README's table shows for it."""
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(--[a-z.-]+)` \| `[A-Z_]+` \| `([^`]*)` \|", section, re.MULTILINE)
    return dict(rows)


def test_the_readme_table_shows_every_setting_with_its_real_default() -> None:
    table = readme_configuration_table()
    defaults = Settings()
    for name in DURATION_FIELDS:
        flag = f"--{name.replace('_', '-')}"
        assert flag in table, f"{flag} is missing from the README"
        shown = Settings(_cli_parse_args=[flag, table[flag]])
        assert getattr(shown, name) == getattr(defaults, name), flag
    for name in Settings.model_fields:
        if name != "limits":
            assert f"--{name.replace('_', '-')}" in table, name
    for name in Limits.model_fields:
        assert f"--limits.{name.replace('_', '-')}" in table, name


def test_the_readme_configuration_examples_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    commands = [
        line
        for line in re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1).splitlines()  # type: ignore[union-attr]
        if line.strip()
    ]
    assert commands
    for command in commands:
        words = shlex.split(command)
        server = words.index("headway.server")
        with monkeypatch.context() as scoped:
            for assignment in words[: words.index("python")]:
                name, _, value = assignment.partition("=")
                scoped.setenv(name, value)
            Settings(_cli_parse_args=words[server + 1 :])
