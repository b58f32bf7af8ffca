"""A logging handler that sends the records logged inside a task to that task's log.

    import logging
    from headway.contrib.logging import HeadwayHandler

    logging.getLogger().addHandler(HeadwayHandler())

Records logged while a task is current — inside a Tracker block, or a bar of
`headway.contrib.tqdm` — become lines of that task's log (of its step, inside
one): their level, the logger's name as `source`, the message, and for an
exception its text and traceback. Records logged outside every task are not
Headway's business and are left to the other handlers.

`emit` only queues the line (see _session.py): lines are sent in batches from the
reporter's loop, never from the calling thread, so logging neither waits for the
server nor fails with it. The queue of each task is bounded (`Reporter.max_logs`);
lines beyond it are counted (`HeadwayHandler.dropped`) and the task's log says
"N log records dropped" once the server takes lines again.
"""

from __future__ import annotations

import logging
import traceback

from google.protobuf.timestamp_pb2 import Timestamp

from headway.contrib._reporter import Reporter, current
from headway.contrib._session import LogLine, in_worker
from headway.v1 import log_pb2

_MAX_MESSAGE = 8192
_MAX_FIELD = 4096
_OWN_LOGGERS = ("headway.client", "headway.contrib", "grpc", "asyncio")
"""What reporting itself logs: sending it would report on the reporting, in a loop."""


def level_of(levelno: int) -> log_pb2.LogLevel.ValueType:
    """A logging level as the nearest Headway level (CRITICAL is ERROR)."""
    if levelno >= logging.ERROR:
        return log_pb2.LOG_LEVEL_ERROR
    if levelno >= logging.WARNING:
        return log_pb2.LOG_LEVEL_WARNING
    if levelno >= logging.INFO:
        return log_pb2.LOG_LEVEL_INFO
    return log_pb2.LOG_LEVEL_DEBUG


def entry_of(record: logging.LogRecord) -> log_pb2.LogEntry:
    """The log line of a record: level, message, source, time, and any exception."""
    fields = {"source": record.name[:_MAX_FIELD]}
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        fields["exception"] = f"{type(error).__qualname__}: {error}"[:_MAX_FIELD]
        # The end of a traceback says the most: keep that when it is too long.
        fields["traceback"] = "".join(traceback.format_exception(error))[-_MAX_FIELD:]
    elif record.exc_text:
        fields["traceback"] = record.exc_text[-_MAX_FIELD:]
    if record.stack_info:
        fields["stack"] = record.stack_info[-_MAX_FIELD:]
    time = Timestamp()
    time.FromNanoseconds(int(record.created * 1e9))
    message = record.getMessage()
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    return log_pb2.LogEntry(
        level=level_of(record.levelno), message=message or "-", fields=fields, time=time
    )


class HeadwayHandler(logging.Handler):
    """Sends the records logged inside a task (or step) to its log; never blocks or raises.

    Args:
        level: The least severe level sent.
        reporter: Where the tasks are reported; the default reporter when None.

    Attributes:
        dropped: Records this handler could not queue because a task's queue was full.
    """

    def __init__(self, level: int = logging.NOTSET, *, reporter: Reporter | None = None) -> None:
        super().__init__(level)
        self.reporter = reporter
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if in_worker.get() or record.name.startswith(_OWN_LOGGERS):
                return
            where = current(self.reporter)
            if where is None:
                return
            line = LogLine(entry_of(record), step=where.step, step_key=where.step_key)
            if not where.session.log(line):
                self.dropped += 1
        except Exception:
            self.handleError(record)


__all__ = ["HeadwayHandler", "entry_of", "level_of"]
