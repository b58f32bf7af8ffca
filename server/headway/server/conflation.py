"""The CONFLATE slow-consumer policy: a backlog that collapses to each task's latest change.

A subscriber that asked to conflate is not ended when its queue fills. From
then on until its sender takes the backlog, the subscriber holds only the
latest change of each task (and counts what it folds), so its memory is at
most one pending change per task however far behind it falls. The sender
then receives one batch, in revision order, each event marked with the range
it covers (`headway.v1.Conflation`; event.proto states the rules).

Nothing here depends on a transport: the hub calls `absorb` instead of ending
the subscriber and `settle` when the sender takes the queue, so gRPC and the
HTTP event stream conflate alike.
"""

from __future__ import annotations

import dataclasses

from headway.server.records import encode_varint
from headway.server.store.base import EventRecord
from headway.v1 import event_pb2

# The tag of `Event.conflation` (a length-delimited field): appended to an
# encoded event, the marker becomes part of it without re-encoding the task.
_MARKER_TAG = encode_varint(event_pb2.Event.DESCRIPTOR.fields_by_name["conflation"].number << 3 | 2)


class Conflation:
    """One subscriber's conflation state: where its delivered stream stands, and what is folded.

    `after` is the revision of the last change handed to the sender (at first
    the revision the feed started from); while folding, `_latest` holds each
    task's latest change, in the order of those changes' revisions.
    """

    __slots__ = ("_after", "_collapsed", "_latest", "_logs", "_through")

    def __init__(self, after: int) -> None:
        self._after = after
        self._latest: dict[str, EventRecord] = {}
        self._collapsed = 0
        self._logs = 0
        self._through = 0

    @property
    def folding(self) -> bool:
        """Whether a conflated batch is pending (the queue overflowed since the last take)."""
        return self._collapsed > 0

    @property
    def pending(self) -> int:
        """How many events the pending batch holds: one per task at most."""
        return len(self._latest)

    def absorb(self, queue: list[EventRecord], event: EventRecord, capacity: int) -> bool:
        """Fold `event` (and, at the overflow, the whole queue) instead of queueing it.

        False while the queue has room and nothing is folded: the event is queued
        as usual. The queue is emptied in place when it is folded.
        """
        if not self.folding and len(queue) < capacity:
            return False
        for queued in queue:
            self._fold(queued)
        queue.clear()
        self._fold(event)
        return True

    def _fold(self, event: EventRecord) -> None:
        self._collapsed += 1
        self._through = event.revision
        if event.is_log:
            self._logs += 1
            return
        # Re-inserting keeps the dict ordered by each task's latest revision.
        self._latest.pop(event.facts.task_id, None)
        self._latest[event.facts.task_id] = event

    def settle(self, taken: list[EventRecord]) -> list[EventRecord]:
        """What the sender gets for the queue it took: the queue, or the conflated batch."""
        if not self.folding:
            if taken:
                self._after = taken[-1].revision
            return taken
        marker = event_pb2.Conflation(
            after_revision=self._after,
            through_revision=self._through,
            collapsed_events=self._collapsed,
            logs_dropped=self._logs,
        ).SerializeToString()
        suffix = _MARKER_TAG + encode_varint(len(marker)) + marker
        batch = [dataclasses.replace(e, data=e.data + suffix) for e in self._latest.values()]
        self._after = self._through
        self._latest = {}
        self._collapsed = self._logs = self._through = 0
        return batch

    def discard_through(self, revision: int) -> None:
        """Forget what was folded: a fresh snapshot at `revision` covers it and restarts the stream.

        The feed takes that snapshot at the hub's head, which every folded change
        is at or below (the hub moves its head before it offers a change).
        """
        if self._through > revision:
            raise ValueError(f"folded changes up to {self._through} are newer than {revision}")
        self._after = max(self._after, revision)
        self._latest = {}
        self._collapsed = self._logs = self._through = 0
