"""Browser sessions: bounded per tenant, so one tenant's sign-ins never sign out another's."""

from __future__ import annotations

from headway.server.http.sessions import SessionStore


def test_signing_in_again_and_again_evicts_only_the_same_tenants_sessions() -> None:
    store = SessionStore(ttl=3600, capacity=100, per_tenant=3)
    victim = store.create("operator-token", "acme")
    for _ in range(50):  # an attacker of another tenant signing in in a loop
        store.create("attacker-token", "evil")
    assert store.get(victim.id) is victim
    acme = [store.create("t", "acme") for _ in range(3)]
    assert store.get(victim.id) is None, "the tenant's own oldest session made room"
    assert all(store.get(s.id) is s for s in acme)


def test_the_global_cap_still_holds() -> None:
    store = SessionStore(ttl=3600, capacity=4, per_tenant=10)
    made = [store.create("t", f"tenant-{i}") for i in range(6)]
    assert [store.get(s.id) is not None for s in made] == [False, False, True, True, True, True]


def test_an_expired_or_deleted_session_is_gone() -> None:
    now = [0.0]
    store = SessionStore(ttl=10, clock=lambda: now[0])
    first, second = store.create("t", "acme"), store.create("t", "acme")
    store.delete(first.id)
    assert store.get(first.id) is None
    now[0] = 10
    assert store.get(second.id) is None
