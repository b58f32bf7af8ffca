"""Nested tasks on the command line: a parent's children summary, its children, its panel."""

from __future__ import annotations

import re
import uuid

from headway.client import HeadwayClient
from headway.v1 import task_pb2
from tests.cli.conftest import Terminal, headway
from tests.harness import ServerHarness


async def family(client: HeadwayClient) -> tuple[str, list[str]]:
    """A parent whose three children are: succeeded, running at 20%, failed at 0."""
    parent = f"release-{uuid.uuid4().hex[:8]}"
    await client.create_task(parent, display_name="Release", start=True)
    children = [f"{parent}-{name}" for name in ("build", "test", "docs")]
    for child in children:
        await client.create_task(child, parent_id=parent, start=True)
    await client.succeed_task(children[0])
    await client.update_task(children[1], progress=task_pb2.Progress(fraction=0.2))
    await client.fail_task(children[2], code="LINT", message="bad link")
    return parent, children


async def test_task_shows_a_parents_children_summary_and_lists_them(
    harness: ServerHarness,
) -> None:
    parent, children = await family(harness.client())

    shown = await headway("task", parent, "--server", harness.target)

    assert shown.code == 0, shown.stderr
    assert "40%" in shown.stdout  # (1 + 0.2 + 0) / 3
    assert "children 2/3 done (1 failed)" in shown.stdout
    assert re.search(
        r"children\s+3: 1 running, 1 succeeded, 1 failed; progress follows them", shown.stdout
    )
    assert "children (3)" in shown.stdout
    for child in children:
        assert child in shown.stdout


async def test_watch_panels_say_how_many_children_are_done(
    harness: ServerHarness, terminal: Terminal
) -> None:
    client = harness.client()
    parent, children = await family(client)

    await terminal.start("watch", parent, "--server", harness.target)
    await terminal.wait_for(lambda text: "children 2/3 done (1 failed)" in text)
    await client.succeed_task(children[1])
    screen = await terminal.wait_for(lambda text: "children 3/3 done (1 failed)" in text)

    assert "67%" in screen  # (1 + 1 + 0) / 3
    assert await terminal.interrupt() == 130
