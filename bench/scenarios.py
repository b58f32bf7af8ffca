"""What each profile runs: the scenarios, their sizes and durations.

`full` is `make bench` (under 10 minutes, including the one-time history
build); `quick` is `make bench-quick`, the same kinds of figures at smoke size
(N up to 100, a few seconds each, a small history) in under 2 minutes.

How the load generator is laid out per scenario (processes x connections) was
chosen by trying the alternatives against the baseline on the 2-core machine
(1-4 processes, 1-16 connections each, N=1000 at 20 updates/s): one HTTP/2
connection per process is cheapest for both sides (the server's writes to
many streams of one connection leave in fewer TCP writes), and two processes
let the subscribers use both cores when the server waits; more processes or
connections only added overhead, within the noise of the shared machine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paced:
    """A fixed total update rate watched by N subscribers, against both servers."""

    key: str
    subscribers: int
    rate: float
    subscriber_procs: int
    connections_per_proc: int

    @property
    def title(self) -> str:
        return f"N={self.subscribers}, {self.rate:g} updates/s"


@dataclass(frozen=True)
class Profile:
    name: str
    paced: tuple[Paced, ...]
    paced_agents: int  # enough that one call in flight per agent never caps the rate
    warmup: float
    duration: float
    drain_timeout: float
    max_agents: tuple[int, ...]  # max durable writes/s with this many agents, N=1
    max_warmup: float
    max_duration: float
    idle_subscribers: int
    idle_procs: int
    idle_connections_per_proc: int
    history_tasks: int
    history_events: int
    sse: tuple[Paced, ...]  # N browser-like SSE clients, next to the same N over gRPC
    quiet_wait_budget: float  # seconds, over the whole run, to wait for other jobs to calm down
    retry_budget: float  # seconds, over the whole run, to repeat runs other jobs disturbed


FULL = Profile(
    name="full",
    paced=(
        Paced("n1_200", 1, 200, 1, 1),
        Paced("n100_200", 100, 200, 2, 1),
        Paced("n1000_20", 1000, 20, 2, 1),
        Paced("n1000_200", 1000, 200, 2, 1),
    ),
    paced_agents=64,
    warmup=2.0,
    duration=10.0,
    drain_timeout=20.0,
    max_agents=(8, 64),
    max_warmup=1.0,
    max_duration=8.0,
    idle_subscribers=1000,
    idle_procs=2,
    idle_connections_per_proc=1,
    history_tasks=100_000,
    history_events=1_000_000,
    sse=(Paced("n100_200", 100, 200, 2, 1), Paced("n1000_200", 1000, 200, 2, 1)),
    quiet_wait_budget=45.0,
    retry_budget=75.0,
)

QUICK = Profile(
    name="quick",
    paced=(
        Paced("n1_200", 1, 200, 1, 1),
        Paced("n100_200", 100, 200, 2, 1),
        Paced("n100_20", 100, 20, 2, 1),
    ),
    paced_agents=64,
    warmup=0.5,
    duration=2.0,
    drain_timeout=10.0,
    max_agents=(8, 64),
    max_warmup=0.5,
    max_duration=2.0,
    idle_subscribers=100,
    idle_procs=1,
    idle_connections_per_proc=1,
    history_tasks=2_000,
    history_events=20_000,
    sse=(Paced("n100_200", 100, 200, 2, 1),),
    quiet_wait_budget=0.0,
    retry_budget=0.0,
)

PROFILES = {profile.name: profile for profile in (FULL, QUICK)}
