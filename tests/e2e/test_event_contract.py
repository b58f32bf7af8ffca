"""What event.proto promises about `commit_time` is what a subscriber receives."""

from __future__ import annotations

import re
from pathlib import Path

from headway.client import HeadwayClient
from tests.streams import Collector, kind

EVENT_PROTO = Path(__file__).resolve().parents[2] / "protos" / "headway" / "v1" / "event.proto"


def commit_time_comment() -> str:
    """The comment lines right above the `commit_time` field, joined."""
    found = re.search(
        r"((?:^ *//.*\n)+) *google\.protobuf\.Timestamp commit_time = ",
        EVENT_PROTO.read_text(),
        re.MULTILINE,
    )
    assert found, "commit_time not found in event.proto"
    return " ".join(line.strip().removeprefix("//").strip() for line in found.group(1).splitlines())


async def test_commit_time_is_set_exactly_where_the_contract_says(client: HeadwayClient) -> None:
    await client.create_task("old", steps=["work"])
    watcher = Collector().start(client)
    await watcher.wait_for(lambda events: any(kind(e) == "synced" for e in events))
    created = await client.create_task("new", steps=["work"])
    updated = await client.update_task("new", message="moved on")
    events = await watcher.wait_revision(updated.revision)
    await watcher.stop()

    by_kind = {kind(e): e for e in events}
    assert not by_kind["snapshot"].HasField("commit_time")
    assert not by_kind["synced"].HasField("commit_time")
    assert by_kind["created"].HasField("commit_time")
    assert by_kind["updated"].HasField("commit_time")
    assert by_kind["created"].created.id == created.id

    comment = commit_time_comment()
    assert "Unset for `snapshot` events" in comment, comment
    assert "control events" in comment, comment
