"""Redis pub/sub as a peer: PUBLISH per update, one SUBSCRIBE connection per subscriber.

The server is a private `redis-server` on a free port with persistence off
(no RDB snapshots, no append-only file): a PUBLISH is acknowledged once the
message is in every subscriber connection's output buffer, and nothing is
stored, so its writes are not durable. A Redis subscription belongs to a
connection, so each subscriber is a connection of its own; it is ready once
Redis confirms the SUBSCRIBE. The `redis` package (asyncio, with the hiredis
parser) reads each pushed message; its payload is scanned for the send-time
marker.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.children import run_child
from bench.peers.common import Peer, subscriber_main, value, writer_main
from bench.subscribers import StreamCount, SubscriberPlan, Tally
from bench.writers import WriterPlan

CHANNEL = "bench"
# Subscribers connecting at once, per process: below the server's listen backlog.
CONNECTING = 64


def _address(target: str) -> tuple[str, int]:
    host, port = target.rsplit(":", 1)
    return host, int(port)


def command(binary: str, workdir: Path, ports: list[int]) -> list[str]:
    return [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(ports[0]),
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ]


class RedisWriter:
    """PUBLISH through one client; its pool opens a connection per call in flight."""

    def __init__(self, plan: WriterPlan) -> None:
        host, port = _address(plan.target)
        self.client = aioredis.Redis(host=host, port=port)

    async def ready(self) -> None:
        await self.client.ping()

    async def send(self, agent: int, seq: int, send_ns: int) -> None:
        await self.client.publish(CHANNEL, value(seq, send_ns))

    async def close(self) -> None:
        await self.client.aclose()


async def _pushed(connection: aioredis.Connection) -> Any:
    """The next pushed message (RESP3, redis-py's default), waiting as long as it takes."""
    return await connection.read_response(
        timeout=math.inf, push_request=True, disconnect_on_error=False
    )


class RedisSubscribers:
    """One connection in SUBSCRIBE per subscriber."""

    def __init__(self, plan: SubscriberPlan) -> None:
        self.host, self.port = _address(plan.target)
        self.connections = plan.streams
        self.open: list[aioredis.Connection] = []
        self.connecting = asyncio.Semaphore(CONNECTING)

    async def watch(self, index: int, stream: StreamCount, tally: Tally, streams: int) -> None:
        connection = aioredis.Connection(host=self.host, port=self.port)
        self.open.append(connection)
        async with self.connecting:
            await connection.connect()  # type: ignore[no-untyped-call]
            await connection.send_command("SUBSCRIBE", CHANNEL)
            confirmed = await _pushed(connection)
        if not (isinstance(confirmed, list) and confirmed[0] == b"subscribe"):
            raise RuntimeError(f"SUBSCRIBE answered {confirmed!r}")
        tally.mark_synced(stream, streams)
        while True:
            message = await _pushed(connection)
            now = time.monotonic_ns()
            # [b"message", channel, payload]
            tally.count(stream, message[2], now)

    async def close(self) -> None:
        for connection in self.open:
            await connection.disconnect()


async def _writer(conn: Connection, plan: WriterPlan) -> None:
    await writer_main(conn, plan, RedisWriter(plan))


async def _subscribers(conn: Connection, plan: SubscriberPlan) -> None:
    await subscriber_main(conn, plan, RedisSubscribers(plan))


def writer_process(conn: Connection, plan: WriterPlan) -> None:
    run_child(conn, lambda: _writer(conn, plan))


def subscriber_process(conn: Connection, plan: SubscriberPlan) -> None:
    run_child(conn, lambda: _subscribers(conn, plan))


REDIS = Peer(
    name="redis",
    title="Redis pub/sub (PUBLISH, SUBSCRIBE)",
    binary="redis-server",
    package="redis-server",
    durable=False,
    ports=1,
    ready=re.compile(r"Ready to accept connections"),
    command=command,
    writer=writer_process,
    subscriber=subscriber_process,
)
