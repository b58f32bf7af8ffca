"""How a committed change is encoded: event bytes, stored rows, stamped log lines.

A task is serialized once per change. The same bytes become the task's row and,
framed as one field of an `Event`, the change event that history keeps and
subscribers receive: protobuf's wire format lets a message field be written
as its tag, its length and the already-encoded message, so the event never
serializes the task a second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from google.protobuf.timestamp_pb2 import Timestamp

from headway.server.store.base import LogRecord
from headway.v1 import event_pb2, log_pb2

_LENGTH_DELIMITED = 2
_EVENT_FIELDS = event_pb2.Event.DESCRIPTOR.fields_by_name


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field_number: int) -> bytes:
    return encode_varint(field_number << 3 | _LENGTH_DELIMITED)


_TASK_TAGS = {
    name: _tag(_EVENT_FIELDS[name].number) for name in ("snapshot", "created", "updated", "deleted")
}


def task_event(
    revision: int, kind: str, task_bytes: bytes, commit_time: Timestamp | None = None
) -> bytes:
    """An encoded `Event` whose `kind` (snapshot, created, updated, deleted) is the given task."""
    head = event_pb2.Event(revision=revision)
    if commit_time is not None:
        head.commit_time.CopyFrom(commit_time)
    return head.SerializeToString() + _TASK_TAGS[kind] + encode_varint(len(task_bytes)) + task_bytes


def logs_event(
    revision: int, commit_time: Timestamp, task_id: str, entries: Sequence[log_pb2.LogEntry]
) -> bytes:
    event = event_pb2.Event(revision=revision, commit_time=commit_time)
    event.logs_appended.task_id = task_id
    event.logs_appended.entries.extend(entries)
    return event.SerializeToString()


def stamp_logs(
    entries: Sequence[log_pb2.LogEntry], task_id: str, revision: int, now: Timestamp
) -> list[log_pb2.LogEntry]:
    """Log lines as stored: with their revision, index and task, a time and a level."""
    stamped = []
    for index, entry in enumerate(entries):
        stored = log_pb2.LogEntry()
        stored.CopyFrom(entry)
        stored.revision = revision
        stored.index = index
        stored.task_id = task_id
        if not stored.HasField("time"):
            stored.time.CopyFrom(now)
        if stored.level == log_pb2.LOG_LEVEL_UNSPECIFIED:
            stored.level = log_pb2.LOG_LEVEL_INFO
        stamped.append(stored)
    return stamped


def log_records(tenant: str, entries: Sequence[log_pb2.LogEntry]) -> list[LogRecord]:
    return [
        LogRecord(
            tenant=tenant,
            task_id=entry.task_id,
            revision=entry.revision,
            index=entry.index,
            level=entry.level,
            step_key=entry.step_key,
            time_ns=entry.time.ToNanoseconds(),
            message=entry.message,
            data=entry.SerializeToString(),
        )
        for entry in entries
    ]


@lru_cache(maxsize=8192)
def frame_prefix(length: int) -> bytes:
    """The bytes before an encoded event inside `SubscribeResponse.events` (field 1).

    Concatenated (prefix, event) pairs form a valid SubscribeResponse, so a
    subscriber's whole queue goes out as one message without decoding or
    re-encoding anything. Event sizes repeat, so the prefixes are cached.
    """
    return b"\x0a" + encode_varint(length)


def frame(event_data: bytes) -> bytes:
    """One element of `SubscribeResponse.events`, ready to concatenate with others."""
    return frame_prefix(len(event_data)) + event_data
