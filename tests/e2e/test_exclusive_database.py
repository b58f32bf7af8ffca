"""One database, one server: a second server on the same file refuses to start.

Two servers on one SQLite file each count revisions in memory and then
collide on writes. The store holds an advisory lock next to the database for
as long as it is open; the kernel drops it when the holder dies, so even a
SIGKILLed server never blocks its restart.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from headway.client import HeadwayClient
from headway.server.app import create_server
from headway.server.config import Settings
from headway.server.store.lock import DatabaseInUseError, lock_path
from tests.processes import ServerProcess


async def test_a_second_server_on_the_same_database_refuses_to_start(tmp_path: Path) -> None:
    database = tmp_path / "headway.db"
    first = ServerProcess(database, log=tmp_path / "first.log").start()
    second = ServerProcess(database, log=tmp_path / "second.log")
    client = HeadwayClient(first.target)
    try:
        await client.create_task("before", steps=["work"])
        with pytest.raises(RuntimeError, match="server exited early"):
            second.start()
        assert second.process is not None
        assert second.process.wait(10) == 1
        assert first.process is not None
        log = second.log.read_text()
        assert f"database {database} is in use by process {first.process.pid}" in log, log
        assert "(started " in log

        # The first server was not disturbed: it still writes, and reads what it wrote.
        await client.create_task("after", steps=["work"])
        assert (await client.get_task("before")).id == "before"
        assert (await client.get_task("after")).id == "after"
    finally:
        await client.close()
        assert first.stop() == 0, first.log.read_text()


async def test_create_server_raises_a_clear_error_while_another_holds_the_database(
    tmp_path: Path,
) -> None:
    database = tmp_path / "headway.db"
    holder = ServerProcess(database).start()
    try:
        assert holder.process is not None
        settings = Settings(address="127.0.0.1:0", database=database)
        with pytest.raises(DatabaseInUseError, match=f"process {holder.process.pid} ") as raised:
            await create_server(settings)
        assert raised.value.database == database
    finally:
        assert holder.stop() == 0, holder.log.read_text()

    # Once the holder has stopped, the database is free again.
    running = await create_server(Settings(address="127.0.0.1:0", database=database))
    await running.stop()


async def test_a_killed_server_does_not_block_its_restart(tmp_path: Path) -> None:
    database = tmp_path / "headway.db"
    first = ServerProcess(database, log=tmp_path / "killed.log").start()
    client = HeadwayClient(first.target)
    await client.create_task("survivor", steps=["work"])
    await client.close()
    assert first.process is not None
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    assert lock_path(database).exists()  # left behind, as after any crash

    restarted = ServerProcess(database).start()
    client = HeadwayClient(restarted.target)
    try:
        assert (await client.get_task("survivor")).id == "survivor"
        assert restarted.process is not None
        assert f"process {restarted.process.pid} " in lock_path(database).read_text()
    finally:
        await client.close()
        assert restarted.stop() == 0, restarted.log.read_text()


async def test_two_stores_in_one_process_exclude_each_other_too(tmp_path: Path) -> None:
    settings = Settings(address="127.0.0.1:0", database=tmp_path / "headway.db")
    running = await create_server(settings)
    try:
        with pytest.raises(DatabaseInUseError):
            await create_server(settings)
    finally:
        await running.stop()
    again = await create_server(settings)
    await again.stop()
