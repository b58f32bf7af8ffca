"""Server settings, from flags, `HEADWAY_*` environment variables or a .env file.

Every limit the server enforces lives here, so an operator can read in one
place what a client may send and how much the server will hold.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    address: str = Field("0.0.0.0:50051", description="host:port to listen on (port 0: any).")
    database: Path = Field(Path("headway.db"), description="SQLite database file.")
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="FULL: durable on power loss. NORMAL: durable on process crash."
    )
    history_retention_events: int = Field(
        1_000_000, ge=1, description="Change events kept for resuming; older ones are compacted."
    )
    history_retention: timedelta = Field(
        timedelta(days=7), description="How long change events are kept for resuming."
    )
    task_retention: timedelta = Field(
        timedelta(days=7), description="How long a task at rest is kept before it is deleted."
    )
    janitor_batch: int = Field(
        1000, ge=1, description="Tasks deleted or events compacted per housekeeping step."
    )
    lease_default: timedelta = Field(
        timedelta(seconds=60), description="An agent's lease when the task does not set one."
    )
    lease_min: timedelta = Field(timedelta(seconds=1), description="Shortest lease allowed.")
    lease_max: timedelta = Field(timedelta(hours=24), description="Longest lease allowed.")
    agent_lost_after: timedelta = Field(
        timedelta(minutes=15),
        description="How long a task may stay stalled before it is failed as AGENT_LOST.",
    )
    cancel_deadline_default: timedelta = Field(
        timedelta(seconds=60),
        description="How long an agent has to confirm a cancel request, by default.",
    )
    cancel_deadline_max: timedelta = Field(
        timedelta(hours=1), description="Longest cancel deadline a viewer may ask for."
    )
    liveness_interval: timedelta = Field(
        timedelta(seconds=1), description="How often leases and cancel deadlines are checked."
    )
    eta_smoothing: timedelta = Field(
        timedelta(seconds=120),
        description="Time constant of the progress-rate average behind rate-based ETAs.",
    )
    compaction_interval: timedelta = Field(
        timedelta(seconds=30), description="How often history is checked for compaction."
    )
    idempotency_window: timedelta = Field(
        timedelta(hours=1), description="How long a request_id is remembered."
    )
    idempotency_max_records: int = Field(
        100_000, ge=1, description="Most request_ids remembered; the oldest are forgotten first."
    )
    subscriber_queue_events: int = Field(
        4096, ge=1, description="Events queued for one subscriber before it is ended as too slow."
    )
    max_subscribers: int = Field(10_000, ge=1, description="Concurrent Subscribe streams.")
    fanout_linger_per_subscriber: timedelta = Field(
        timedelta(microseconds=20),
        description="How long a change waits, per live subscriber, to share a write with others.",
    )
    fanout_linger_max: timedelta = Field(
        timedelta(milliseconds=10), description="The longest a change waits to share a write."
    )
    heartbeat_default: timedelta = Field(
        timedelta(seconds=30), description="Heartbeat interval when a subscriber asks for none."
    )
    heartbeat_min: timedelta = Field(
        timedelta(seconds=1), description="Shortest heartbeat interval a subscriber may ask for."
    )
    heartbeat_max: timedelta = Field(
        timedelta(minutes=5), description="Longest heartbeat interval a subscriber may ask for."
    )
    max_batch_mutations: int = Field(
        1024, ge=1, description="Mutations committed together in one transaction at most."
    )
    shutdown_grace: timedelta = Field(
        timedelta(seconds=5), description="How long in-flight calls may finish at shutdown."
    )
    shutdown_drain: timedelta = Field(
        timedelta(milliseconds=100),
        description="How long new mutations are answered UNAVAILABLE before the port closes.",
    )
    log_level: str = Field("INFO", description="Python logging level.")
    limits: Limits = Limits()
