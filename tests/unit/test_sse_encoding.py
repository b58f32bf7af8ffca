"""Server-Sent Events blocks: the right fields, and each change encoded once for all streams."""

from __future__ import annotations

import json

from headway.server.feed import Notice
from headway.server.http import events
from headway.v1 import event_pb2, task_pb2


def test_a_change_is_encoded_once_however_many_streams_carry_it() -> None:
    data = event_pb2.Event(revision=7, updated=task_pb2.Task(id="t1")).SerializeToString()
    change = Notice(7, data)
    before = events._event_block.cache_info()
    blocks = [events.encode([change]) for _ in range(100)]
    after = events._event_block.cache_info()
    assert after.misses - before.misses == 1
    assert len(set(blocks)) == 1
    lines = blocks[0].decode().split("\n")
    assert lines[:2] == ["id: 7", "event: updated"]
    payload = json.loads(lines[2].removeprefix("data: "))
    assert payload == {"revision": "7", "updated": {"id": "t1"}}
    assert blocks[0].endswith(b"\n\n\n"), "each block and the batch end with a blank line"


def test_snapshot_entries_are_not_resume_points() -> None:
    data = event_pb2.Event(revision=3, snapshot=task_pb2.Task(id="t1")).SerializeToString()
    block = events.encode([Notice(3, data)]).decode()
    assert "id:" not in block
    assert block.startswith("event: snapshot\n")
