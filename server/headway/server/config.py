"""Server settings, from flags, `HEADWAY_*` environment variables or a .env file.

Every limit the server enforces lives here, so an operator can read in one
place what a client may send and how much the server will hold.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    FilePath,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

_UNIT_SECONDS = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_SECONDS = re.compile(rf"[+-]?{_NUMBER}")
_TERM = re.compile(rf"({_NUMBER})\s*(us|µs|ms|min|s|m|h|d)")
_TERMS = re.compile(rf"(?:{_TERM.pattern}\s*)+")
DURATION_FORMS = "seconds (30, 1.5), units (500ms, 30s, 5m, 2h, 7d, 1h30m) or ISO 8601 (PT30S)"


def parse_duration(value: object) -> object:
    """Turn the duration forms an operator types into a timedelta.

    pydantic alone takes only ISO 8601 from a string, yet flags and environment
    variables are strings, and `--lease-default 30` is what people write. Plain
    numbers are seconds; a number with a unit, or several (`1h30m`), adds up;
    an ISO 8601 string, a timedelta or a number is left for pydantic. Anything
    else is refused with the forms that are accepted.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.upper().startswith(("P", "-P", "+P")):
        return text
    if _SECONDS.fullmatch(text):
        return timedelta(seconds=float(text))
    if _TERMS.fullmatch(text):
        return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in _TERM.findall(text)))
    raise ValueError(f"invalid duration {value!r}: use {DURATION_FORMS}")


def _not_negative(value: timedelta) -> timedelta:
    """No setting means anything with a negative duration; refuse it rather than guess."""
    if value < timedelta(0):
        raise ValueError(f"a duration may not be negative, got {value.total_seconds():g} s")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_not_negative)]
"""A setting's duration: seconds, numbers with units or ISO 8601 (see `parse_duration`)."""


class Limits(BaseModel):
    """Sizes and counts a request may not exceed (INVALID_ARGUMENT or RESOURCE_EXHAUSTED)."""

    max_steps: int = Field(1000, ge=1, description="Steps per task.")
    max_labels: int = Field(32, ge=0, description="Labels per task.")
    max_metrics: int = Field(64, ge=0, description="Metrics per task.")
    max_artifacts: int = Field(256, ge=0, description="Artifacts per task.")
    max_log_entries: int = Field(1000, ge=1, description="Log lines per AppendLogs call.")
    max_filter_values: int = Field(1000, ge=1, description="Values in one filter criterion.")
    max_page_size: int = Field(1000, ge=1, description="Cap on page_size.")
    default_page_size: int = Field(100, ge=1, description="page_size when 0.")
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="gRPC message size.")
    max_task_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="A task's encoded size (and one change's); larger: TASK_TOO_LARGE.",
    )
    max_response_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        description="Bytes of tasks in one ListTasks page or one Subscribe message, about.",
    )

    @model_validator(mode="after")
    def _sizes_fit(self) -> Limits:
        # Every task must fit in a response, and every response in a message.
        if not self.max_task_bytes <= self.max_response_bytes <= self.max_message_bytes // 2:
            raise ValueError("need max_task_bytes <= max_response_bytes <= max_message_bytes / 2")
        return self


class Settings(BaseSettings):
    """Everything an operator can set. Flags win over environment, environment over defaults."""

    model_config = SettingsConfigDict(
        env_prefix="HEADWAY_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        cli_prog_name="headway-server",
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )

    address: str = Field(
        "127.0.0.1:50051",
        description="host:port to listen on (port 0: any); beyond loopback, see --insecure.",
    )
    http_address: str = Field(
        "127.0.0.1:8080",
        description="host:port of HTTP/JSON and Server-Sent Events (port 0: any; empty: off).",
    )
    http_session_ttl: Duration = Field(
        timedelta(hours=12), description="How long an HTTP sign-in (session cookie) lasts."
    )
    database: Path = Field(Path("headway.db"), description="SQLite database file.")
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="FULL: durable on power loss. NORMAL: durable on process crash."
    )
    history_retention_events: int = Field(
        1_000_000,
        ge=1,
        description="Change events kept per tenant for resuming; older ones are compacted.",
    )
    history_retention: Duration = Field(
        timedelta(days=7), description="How long change events are kept for resuming."
    )
    task_retention: Duration = Field(
        timedelta(days=7), description="How long a task at rest is kept before it is deleted."
    )
    janitor_batch: int = Field(
        1000, ge=1, description="Tasks deleted or events compacted per housekeeping step."
    )
    lease_default: Duration = Field(
        timedelta(seconds=60), description="An agent's lease when the task does not set one."
    )
    lease_min: Duration = Field(timedelta(seconds=1), description="Shortest lease allowed.")
    lease_max: Duration = Field(timedelta(hours=24), description="Longest lease allowed.")
    agent_lost_after: Duration = Field(
        timedelta(minutes=15),
        description="How long a task may stay stalled before it is failed as AGENT_LOST.",
    )
    cancel_deadline_default: Duration = Field(
        timedelta(seconds=60),
        description="How long an agent has to confirm a cancel request, by default.",
    )
    cancel_deadline_max: Duration = Field(
        timedelta(hours=1), description="Longest cancel deadline a viewer may ask for."
    )
    liveness_interval: Duration = Field(
        timedelta(seconds=1), description="How often leases and cancel deadlines are checked."
    )
    eta_smoothing: Duration = Field(
        timedelta(seconds=120),
        description="Time constant of the progress-rate average behind rate-based ETAs.",
    )
    compaction_interval: Duration = Field(
        timedelta(seconds=30), description="How often history is checked for compaction."
    )
    idempotency_window: Duration = Field(
        timedelta(hours=1), description="How long a request_id is remembered."
    )
    idempotency_max_records: int = Field(
        100_000, ge=1, description="Most request_ids remembered; the oldest are forgotten first."
    )
    subscriber_queue_events: int = Field(
        4096, ge=1, description="Events queued for one subscriber before it is ended as too slow."
    )
    max_subscribers: int = Field(10_000, ge=1, description="Concurrent Subscribe streams.")
    fanout_tick_max: Duration = Field(
        timedelta(milliseconds=250),
        description="The longest the fan-out tick waits between two rounds of writes to "
        "subscribers (its period follows the event loop's lag, zero when idle).",
    )
    fanout_tick_gain: float = Field(
        1.0,
        gt=0,
        allow_inf_nan=False,
        description="The fan-out tick's period as a multiple of its last round's length: "
        "a larger gain leaves more of the event loop to the writers, at the cost of latency.",
    )
    heartbeat_default: Duration = Field(
        timedelta(seconds=30), description="Heartbeat interval when a subscriber asks for none."
    )
    heartbeat_min: Duration = Field(
        timedelta(seconds=1), description="Shortest heartbeat interval a subscriber may ask for."
    )
    heartbeat_max: Duration = Field(
        timedelta(minutes=5), description="Longest heartbeat interval a subscriber may ask for."
    )
    max_batch_mutations: int = Field(
        1024, ge=1, description="Mutations committed together in one transaction at most."
    )
    # Authentication (see auth/): off unless a token file or a JWT key is set.
    auth_token_file: Path | None = Field(
        None, description="Token file: bearer-token hashes and certificate names, with roles."
    )
    auth_jwt_secret_file: Path | None = Field(
        None, description="HS256 shared secret (at least 32 bytes) that verifies JWTs."
    )
    auth_jwt_public_key_file: Path | None = Field(
        None, description="PEM public key (RSA, EC or Ed25519) that verifies JWTs."
    )
    auth_jwt_jwks_file: Path | None = Field(
        None, description="JSON Web Key Set file that verifies JWTs (by their 'kid')."
    )
    auth_jwt_issuer: str | None = Field(None, description="Required JWT 'iss', if set.")
    auth_jwt_audience: str | None = Field(None, description="Required JWT 'aud', if set.")
    auth_jwt_tenant_claim: str = Field("tenant", description="JWT claim naming the tenant.")
    auth_jwt_role_claim: str = Field("role", description="JWT claim naming the role.")
    auth_jwt_leeway: Duration = Field(
        timedelta(seconds=30), description="Clock skew allowed on JWT 'exp' and 'nbf'."
    )
    auth_signing_key_file: Path | None = Field(
        None, description="Read-token signing key; default <database>.signing-key (made once)."
    )
    auth_read_token_max_ttl: Duration = Field(
        timedelta(hours=24), description="Longest validity of a CreateReadToken token."
    )
    auth_allow_cross_tenant_admin: bool = Field(
        False, description="Accept tenant '*' admin entries, which act in any tenant."
    )
    shutdown_grace: Duration = Field(
        timedelta(seconds=5), description="How long in-flight calls may finish at shutdown."
    )
    shutdown_drain: Duration = Field(
        timedelta(milliseconds=100),
        description="How long new mutations are answered UNAVAILABLE before the port closes.",
    )
    quota_active_tasks: int = Field(
        10_000, ge=0, description="Tasks not at rest per tenant (0: unlimited)."
    )
    quota_stored_tasks: int = Field(
        100_000, ge=0, description="Tasks stored per tenant, at rest or not (0: unlimited)."
    )
    quota_subscriptions: int = Field(
        1000, ge=0, description="Concurrent Subscribe streams per tenant (0: unlimited)."
    )
    quota_mutation_rate: float = Field(
        1000.0,
        ge=0,
        allow_inf_nan=False,
        description="Mutations per second per tenant, sustained (0: unlimited).",
    )
    quota_mutation_burst: int = Field(
        2000, ge=1, description="Mutations a tenant may send at once above its rate."
    )
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or one JSON object per line (with request_id)."
    )
    metrics_address: str = Field(
        "127.0.0.1:9464",
        description="host:port of GET /metrics (Prometheus); internal only; empty: off.",
    )
    limits: Limits = Limits()

    # -- transport security and exposure (tls.py, protected.py) ----------------------
    tls_cert: FilePath | None = Field(
        None, description="PEM certificate chain of the server; with --tls-key, serve TLS."
    )
    tls_key: FilePath | None = Field(None, description="PEM private key of --tls-cert.")
    tls_client_ca: FilePath | None = Field(
        None,
        description="PEM CA certificates: clients must present a certificate they signed (mTLS).",
    )
    insecure: bool = Field(
        False,
        description="Serve beyond loopback with no authentication configured (not recommended).",
    )

    @model_validator(mode="after")
    def _one_jwt_key(self) -> Settings:
        keys = (self.auth_jwt_secret_file, self.auth_jwt_public_key_file, self.auth_jwt_jwks_file)
        if sum(key is not None for key in keys) > 1:
            raise ValueError(
                "set at most one of auth_jwt_secret_file, auth_jwt_public_key_file "
                "and auth_jwt_jwks_file"
            )
        if self.auth_read_token_max_ttl < timedelta(seconds=1):
            raise ValueError("auth_read_token_max_ttl must be at least 1 s")
        return self

    @model_validator(mode="after")
    def _tls_pairs(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together: set both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs TLS: set --tls-cert and --tls-key too")
        return self
