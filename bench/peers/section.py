"""The peers section of a bench run: the paced scenarios and max writes against each peer.

The full profile runs each peer once per scenario with a shorter window than
Headway's (see `PLANS`), so that `make bench` stays under 10 minutes; the
quick profile skips the section and says why. A peer whose server is not
installed is recorded as such (with the package to install); one that fails
to start or to finish a run is recorded with the error and its log's tail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import LoadSpec
from bench.peers.common import Peer, run_peer_load
from bench.peers.etcd import ETCD
from bench.peers.redis import REDIS
from bench.scenarios import FULL, Paced, Profile

PEERS: tuple[Peer, ...] = (ETCD, REDIS)


@dataclass(frozen=True)
class PeerPlan:
    paced: tuple[Paced, ...]
    warmup: float
    duration: float
    drain_timeout: float
    max_agents: int  # max writes/s with this many agents, N=1
    max_warmup: float
    max_duration: float


# One run of 5 s per scenario and peer: about 2 minutes for both peers.
PLANS: dict[str, PeerPlan] = {
    "full": PeerPlan(
        paced=FULL.paced,
        warmup=1.0,
        duration=5.0,
        drain_timeout=20.0,
        max_agents=8,
        max_warmup=1.0,
        max_duration=5.0,
    ),
}
SKIPPED = {
    "quick": "not run in the quick profile (about 2 minutes of servers it does not test); "
    "`make bench` or `make bench-peers` runs it",
}

Measure = Callable[[str, Callable[[Path], dict[str, Any]]], dict[str, Any]]


def run(profile: Profile, measure: Measure, results: dict[str, Any]) -> None:
    """Fill results["peers"] (or results["peers_skipped"]); `measure(label, run)` runs one."""
    plan = PLANS.get(profile.name)
    if plan is None:
        reason = SKIPPED.get(profile.name, f"no peers plan for the {profile.name} profile")
        print(f"  skipped: {reason}", flush=True)
        results["peers_skipped"] = reason
        return
    section: dict[str, Any] = {
        "window_seconds": plan.duration,
        "warmup_seconds": plan.warmup,
        "max_window_seconds": plan.max_duration,
        "servers": {},
        "paced": {},
        "max_writes": {},
    }
    results["peers"] = section
    present = []
    for peer in PEERS:
        if peer.path() is None:
            print(f"  {peer.name}: {peer.not_installed()}", flush=True)
            section["servers"][peer.name] = {
                "title": peer.title,
                "installed": False,
                "note": peer.not_installed(),
            }
            continue
        section["servers"][peer.name] = {
            "title": peer.title,
            "installed": True,
            "version": peer.version(),
            "durable": peer.durable,
        }
        present.append(peer)
    for scenario in plan.paced:
        load = LoadSpec(
            subscribers=scenario.subscribers,
            agents=profile.paced_agents,
            rate=scenario.rate,
            warmup=plan.warmup,
            duration=plan.duration,
            drain_timeout=plan.drain_timeout,
            subscriber_procs=scenario.subscriber_procs,
            connections_per_proc=scenario.connections_per_proc,
        )
        entry: dict[str, Any] = {
            "title": scenario.title,
            "subscribers": scenario.subscribers,
            "rate": scenario.rate,
        }
        for peer in present:
            entry[peer.name] = measure(
                f"{scenario.key}-{peer.name}",
                lambda workdir, peer=peer, load=load: run_peer_load(peer, load, workdir),  # type: ignore[misc]
            )
        section["paced"][scenario.key] = entry
    load = LoadSpec(
        subscribers=1,
        agents=plan.max_agents,
        rate=None,
        warmup=plan.max_warmup,
        duration=plan.max_duration,
        drain_timeout=plan.drain_timeout,
    )
    section["max_writes"][str(plan.max_agents)] = {
        peer.name: measure(
            f"max{plan.max_agents}-{peer.name}",
            lambda workdir, peer=peer: run_peer_load(peer, load, workdir),  # type: ignore[misc]
        )
        for peer in present
    }
