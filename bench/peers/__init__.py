"""Peers: the same paced loads against etcd and Redis pub/sub, for side-by-side figures.

Each peer is a real server process (`etcd`, `redis-server`) that the bench
starts on a temporary data directory and free loopback ports, loads with
writer and subscriber processes that follow the schedule and the counting of
the Headway load generator (`bench.writers`, `bench.subscribers`), and
measures from the outside with psutil, exactly as `bench.load` does:

- etcd: a write is a Put of the agent's own key (acknowledged once committed
  and fsynced), a subscriber is one gRPC Watch stream on the key prefix. The
  messages are etcd's v3 API as published in the `aetcd` package; requests
  and responses go over grpc.aio as raw bytes, like the Headway generator's.
- Redis: a write is a PUBLISH (acknowledged once handed to every subscriber's
  connection; nothing is stored), a subscriber is one connection in SUBSCRIBE.
  The `redis` package (asyncio, hiredis parser) speaks the protocol.

Every write's value carries its send time as the same `@T` marker
(`bench.wire.MARKER`), so latency is write-to-receipt as for Headway.
"""
