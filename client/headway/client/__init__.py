"""The Headway client: report and watch task progress over gRPC.

For agents: `Tracker` (asyncio) and `SyncTracker` (threads) report a task and its
steps, retry safely, coalesce progress, keep the task alive with heartbeats while
the agent is silent, and raise `TaskCancelled` when a viewer cancels. For viewers:
`subscribe()` streams typed events and resumes by itself; `LiveView` keeps the
current tasks. `HeadwayClient` is the thin layer under both.
"""

from headway.client.client import (
    DEFAULT_TARGET,
    SERVER_ENV,
    HeadwayClient,
    default_target,
    task_filter,
)
from headway.client.context import CurrentTask, current_task
from headway.client.errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    HeadwayError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    TaskCancelled,
    UnauthenticatedError,
    UnavailableError,
)
from headway.client.events import (
    Conflation,
    Created,
    Deleted,
    Event,
    Heartbeat,
    LogsAppended,
    Reconnecting,
    Resync,
    ResyncReason,
    Snapshot,
    Synced,
    TaskEvent,
    Updated,
)
from headway.client.live import LiveView
from headway.client.models import (
    Artifact,
    CancelRequest,
    ChildCounts,
    Criterion,
    Estimate,
    EstimateBasis,
    LeaseRenewal,
    LogEntry,
    LogLevel,
    Progress,
    Step,
    StepState,
    Task,
    TaskError,
    TaskState,
)
from headway.client.retry import RetryPolicy
from headway.client.sync import SyncStepReporter, SyncTaskReporter, SyncTracker
from headway.client.tracker import StepReporter, TaskReporter, Tracker
from headway.client.watch import Subscription, subscribe

__all__ = [
    "DEFAULT_TARGET",
    "SERVER_ENV",
    "AbortedError",
    "AlreadyExistsError",
    "Artifact",
    "CancelRequest",
    "CancelledError",
    "ChildCounts",
    "Conflation",
    "Created",
    "Criterion",
    "CurrentTask",
    "DeadlineExceededError",
    "Deleted",
    "Estimate",
    "EstimateBasis",
    "Event",
    "FailedPreconditionError",
    "HeadwayClient",
    "HeadwayError",
    "Heartbeat",
    "InternalError",
    "InvalidArgumentError",
    "LeaseRenewal",
    "LiveView",
    "LogEntry",
    "LogLevel",
    "LogsAppended",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "Progress",
    "Reconnecting",
    "ResourceExhaustedError",
    "Resync",
    "ResyncReason",
    "RetryPolicy",
    "Snapshot",
    "Step",
    "StepReporter",
    "StepState",
    "Subscription",
    "SyncStepReporter",
    "SyncTaskReporter",
    "SyncTracker",
    "Synced",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskEvent",
    "TaskReporter",
    "TaskState",
    "Tracker",
    "UnauthenticatedError",
    "UnavailableError",
    "Updated",
    "current_task",
    "default_target",
    "subscribe",
    "task_filter",
]
