"""The Headway client: report and watch task progress over gRPC."""

from headway.client.client import DEFAULT_TARGET, HeadwayClient, task_filter
from headway.client.errors import (
    AbortedError,
    AlreadyExistsError,
    FailedPreconditionError,
    HeadwayError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    ResourceExhaustedError,
    UnavailableError,
)

__all__ = [
    "DEFAULT_TARGET",
    "AbortedError",
    "AlreadyExistsError",
    "FailedPreconditionError",
    "HeadwayClient",
    "HeadwayError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "ResourceExhaustedError",
    "UnavailableError",
    "task_filter",
]
