"""etcd as a peer: Put per update, one gRPC Watch stream per subscriber.

The server is a single-member etcd on a data directory of its own (every Put
is committed through raft and fsynced before it is acknowledged). Each agent
puts its own key under `bench/`; each subscriber is its own Watch stream on
that prefix, opened with one create request, ready once etcd confirms it
(`created`). The Watch streams share the process's few channels, as the
Headway subscribers' Subscribe streams do. Requests are etcd's v3 messages
from the `aetcd` package, serialized here; responses are read as raw bytes
and scanned for the send-time markers in the watched values.
"""

from __future__ import annotations

import re
import time
from multiprocessing.connection import Connection
from pathlib import Path

import grpc
from aetcd import utils as etcd_utils
from aetcd.rpc import rpc_pb2

from bench.children import run_child
from bench.peers.common import Peer, subscriber_main, value, writer_main
from bench.subscribers import StreamCount, SubscriberPlan, Tally
from bench.writers import WriterPlan

PUT = "/etcdserverpb.KV/Put"
RANGE = "/etcdserverpb.KV/Range"
WATCH = "/etcdserverpb.Watch/Watch"
PREFIX = b"bench/"


def _key(writer: int, agent: int) -> bytes:
    return PREFIX + f"w{writer}/a{agent:03d}".encode()


def command(binary: str, workdir: Path, ports: list[int]) -> list[str]:
    client, peer = (f"http://127.0.0.1:{port}" for port in ports)
    return [
        binary,
        "--name",
        "bench",
        "--data-dir",
        str(workdir / "data"),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"bench={peer}",
        "--initial-cluster-state",
        "new",
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
    ]


class EtcdWriter:
    """Puts over one channel (one HTTP/2 connection), as the Headway writers' calls."""

    def __init__(self, plan: WriterPlan) -> None:
        self.channel = grpc.aio.insecure_channel(plan.target)
        self.put = self.channel.unary_unary(PUT)
        self.keys = [_key(plan.index, agent) for agent in range(plan.agents)]

    async def ready(self) -> None:
        request = rpc_pb2.RangeRequest(key=PREFIX, range_end=etcd_utils.prefix_range_end(PREFIX))
        await self.channel.unary_unary(RANGE)(request.SerializeToString(), timeout=30)

    async def send(self, agent: int, seq: int, send_ns: int) -> None:
        request = rpc_pb2.PutRequest(key=self.keys[agent], value=value(seq, send_ns))
        await self.put(request.SerializeToString())

    async def close(self) -> None:
        await self.channel.close(None)


class EtcdSubscribers:
    """Watch streams of one process, spread over `plan.connections` channels."""

    def __init__(self, plan: SubscriberPlan) -> None:
        self.connections = plan.connections
        self.channels = [
            # A local subchannel pool gives every channel its own TCP connection.
            grpc.aio.insecure_channel(plan.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(plan.connections)
        ]
        self.create = rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(
                key=PREFIX, range_end=etcd_utils.prefix_range_end(PREFIX)
            )
        ).SerializeToString()

    async def watch(self, index: int, stream: StreamCount, tally: Tally, streams: int) -> None:
        channel = self.channels[index % len(self.channels)]
        call = channel.stream_stream(WATCH)()
        # The request side stays open: the watch lives as long as the stream.
        await call.write(self.create)
        async for data in call:
            now = time.monotonic_ns()
            if not stream.synced:
                response = rpc_pb2.WatchResponse.FromString(data)
                if response.canceled:
                    stream.error = f"watch canceled: {response.cancel_reason}"
                    return
                if response.created:
                    tally.mark_synced(stream, streams)
            tally.count(stream, data, now)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)


async def _writer(conn: Connection, plan: WriterPlan) -> None:
    await writer_main(conn, plan, EtcdWriter(plan))


async def _subscribers(conn: Connection, plan: SubscriberPlan) -> None:
    await subscriber_main(conn, plan, EtcdSubscribers(plan))


def writer_process(conn: Connection, plan: WriterPlan) -> None:
    run_child(conn, lambda: _writer(conn, plan))


def subscriber_process(conn: Connection, plan: SubscriberPlan) -> None:
    run_child(conn, lambda: _subscribers(conn, plan))


ETCD = Peer(
    name="etcd",
    title="etcd (Put, gRPC Watch)",
    binary="etcd",
    package="etcd-server",
    durable=True,
    ports=2,
    # Logged once the member has a leader and its client listener is up.
    ready=re.compile(r"serving client (traffic|requests)"),
    command=command,
    writer=writer_process,
    subscriber=subscriber_process,
)
