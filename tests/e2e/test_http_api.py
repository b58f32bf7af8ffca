"""Every unary RPC over HTTP/JSON, its errors, and who may call it (bearer or session cookie)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from headway.server.auth.credentials import Credentials, unauthenticated
from headway.server.auth.principal import Principal
from headway.server.auth.tokens import append_token
from headway.server.config import Settings
from tests.auth_helpers import TokenNamesPrincipal
from tests.harness import ServerHarness
from tests.http_helpers import reason, violations


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if data is not None:
        kwargs["data"] = data
    elif body is not None:
        kwargs["json"] = body
    async with http.request(method, url, **kwargs) as response:
        return response.status, await response.json()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_every_route_happy_path(harness: ServerHarness, http: aiohttp.ClientSession) -> None:
    base = harness.http_url + "/v1"
    status, created = await call(
        http,
        "POST",
        f"{base}/tasks",
        {"taskId": "job-1", "kind": "build", "labels": {"team": "a"}, "steps": [{"key": "fetch"}]},
    )
    assert status == 200, created
    assert created["task"]["state"] == "TASK_STATE_PENDING"
    assert created["task"]["revision"] == "1"

    async def ok(method: str, path: str, body: Any = None) -> dict[str, Any]:
        status, answer = await call(http, method, base + path, body)
        assert status == 200, (method, path, answer)
        return answer

    await ok("POST", "/tasks/job-1:start")
    await ok("POST", "/tasks/job-1/steps", {"steps": [{"key": "upload"}]})
    step = await ok("PATCH", "/tasks/job-1/steps/fetch", {"progress": {"fraction": 0.5}})
    assert step["task"]["steps"][0]["state"] == "STEP_STATE_RUNNING"
    await ok("PATCH", "/tasks/job-1", {"message": "halfway", "metrics": {"loss": 0.25}})
    logs = await ok("POST", "/tasks/job-1/logs", {"entries": [{"message": "fetched page 3"}]})
    assert int(logs["revision"]) > 0
    await ok("POST", "/tasks/job-1/artifacts", {"artifacts": [{"name": "r", "uri": "s3://b/r"}]})
    beat = await ok("POST", "/tasks/job-1:heartbeat")
    assert "leaseExpireTime" in beat
    listed = await ok("GET", "/tasks/job-1/logs?minLevel=INFO&text=PAGE")
    assert [e["message"] for e in listed["entries"]] == ["fetched page 3"]
    got = await ok("GET", "/tasks/job-1")
    assert got["task"]["message"] == "halfway"
    assert len(got["task"]["artifacts"]) == 1
    assert (await ok("GET", "/tasks?state=RUNNING&label=team:a&kind=build"))["tasks"][0]["id"] == (
        "job-1"
    )
    assert "tasks" not in await ok("GET", "/tasks?state=SUCCEEDED")
    page = await ok("GET", "/tasks?taskId=job-1&pageSize=1")
    assert [t["id"] for t in page["tasks"]] == ["job-1"]
    done = await ok("POST", "/tasks/job-1:succeed", {"message": "all done"})
    assert done["task"]["state"] == "TASK_STATE_SUCCEEDED"

    await ok("POST", "/tasks", {"task_id": "job-2", "start": True})  # proto field names work too
    cancelled = await ok("POST", "/tasks/job-2:cancel", {"reason": "stop"})
    assert cancelled["task"]["cancelRequest"]["reason"] == "stop"
    confirmed = await ok("POST", "/tasks/job-2:confirmCancel", {"reason": "stopped"})
    assert confirmed["task"]["state"] == "TASK_STATE_CANCELLED"

    await ok("POST", "/tasks", {"taskId": "job-3", "start": True})
    failed = await ok("POST", "/tasks/job-3:fail", {"error": {"message": "boom"}})
    assert failed["task"]["state"] == "TASK_STATE_FAILED"
    revision = failed["task"]["revision"]
    deleted = await ok("DELETE", f"/tasks/job-3?expectedRevision={revision}&requestId=d-1")
    assert int(deleted["revision"]) > int(revision)
    status, missing = await call(http, "GET", f"{base}/tasks/job-3")
    assert status == 404
    assert reason(missing) == "TASK_NOT_FOUND"

    # Without authentication there is nothing to mint a read token for (412, as over gRPC).
    status, refused = await call(http, "POST", f"{base}/readTokens", {"taskId": "job-1"})
    assert status == 412
    assert reason(refused) == "AUTHENTICATION_OFF"


async def test_errors_are_statuses_and_change_nothing(
    harness: ServerHarness, http: aiohttp.ClientSession
) -> None:
    base = harness.http_url + "/v1"
    status, body = await call(http, "POST", f"{base}/tasks", {"taskId": "bad id!", "steps": [{}]})
    assert status == 400
    assert body["code"] == 3
    assert reason(body) == "FIELD_VIOLATION"
    assert set(violations(body)) >= {"task_id", "steps[0].key"}
    status, body = await call(http, "GET", f"{base}/tasks")
    assert "tasks" not in body

    status, body = await call(http, "POST", f"{base}/tasks", data=b'{"taskId": ')
    assert (status, reason(body)) == (400, "MALFORMED_REQUEST")
    status, body = await call(http, "POST", f"{base}/tasks", {"taskId": "x", "nope": 1})
    assert (status, reason(body)) == (400, "MALFORMED_REQUEST")
    assert "nope" in body["message"]
    status, body = await call(http, "POST", f"{base}/tasks", data=b"[1, 2]")
    assert (status, reason(body)) == (400, "MALFORMED_REQUEST")

    await call(http, "POST", f"{base}/tasks", {"taskId": "t", "start": True})
    status, body = await call(http, "POST", f"{base}/tasks", {"taskId": "t"})
    assert (status, reason(body)) == (409, "TASK_ALREADY_EXISTS") or status == 409
    status, body = await call(
        http, "PATCH", f"{base}/tasks/t", {"message": "m", "expectedRevision": 99}
    )
    assert (status, reason(body)) == (409, "REVISION_MISMATCH")
    await call(http, "POST", f"{base}/tasks/t:succeed")
    status, body = await call(http, "PATCH", f"{base}/tasks/t", {"message": "late"})
    assert (status, reason(body)) == (412, "TASK_AT_REST")
    status, body = await call(http, "POST", f"{base}/tasks/other:start", {"taskId": "t"})
    assert (status, violations(body)) == (400, ["task_id"])
    status, body = await call(http, "GET", f"{base}/tasks?pageSize=-1")
    assert (status, violations(body)) == (400, ["page_size"])
    status, body = await call(http, "GET", f"{base}/tasks?colour=red")
    assert (status, violations(body)) == (400, ["colour"])
    status, body = await call(http, "GET", f"{base}/tasks?label=nocolon")
    assert (status, violations(body)) == (400, ["label"])
    status, body = await call(http, "GET", f"{base}/tasks/t?token=secret")
    assert (status, reason(body)) == (400, "TOKEN_IN_URL")

    status, body = await call(http, "GET", f"{base}/nothing/here")
    assert (status, reason(body)) == (404, "ROUTE_NOT_FOUND")
    async with http.put(f"{base}/tasks/t") as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(", ")) == {"GET", "PATCH", "DELETE"}
        assert reason(await response.json()) == "METHOD_NOT_ALLOWED"

    status, body = await call(http, "GET", f"{base}/tasks/t")
    assert body["task"]["state"] == "TASK_STATE_SUCCEEDED"
    assert "message" not in body["task"] or body["task"]["message"] != "late"


async def test_a_body_beyond_the_message_limit_is_413(
    make_settings: Any, http: aiohttp.ClientSession
) -> None:
    harness = ServerHarness(
        make_settings(
            limits={
                "max_message_bytes": 64 * 1024,
                "max_response_bytes": 32 * 1024,
                "max_task_bytes": 16 * 1024,
            }
        )
    )
    await harness.start()
    try:
        big = b'{"taskId": "big", "message": "' + b"x" * 70_000 + b'"}'
        status, body = await call(http, "POST", f"{harness.http_url}/v1/tasks", data=big)
        assert (status, reason(body)) == (413, "MESSAGE_TOO_LARGE")
    finally:
        await harness.close()


class Revocable(TokenNamesPrincipal):
    """Tokens name their principal (see auth_helpers), and any of them can be revoked."""

    def __init__(self) -> None:
        super().__init__()
        self.revoked: set[str] = set()

    def authenticate(self, credentials: Credentials) -> Principal:
        if credentials.authorization in {f"Bearer {t}" for t in self.revoked}:
            raise unauthenticated("INVALID_TOKEN", "unknown token")
        return super().authenticate(credentials)


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[tuple[ServerHarness, Revocable]]:
    authenticator = Revocable()
    harness = ServerHarness(settings, authenticator=authenticator)
    await harness.start()
    try:
        yield harness, authenticator
    finally:
        await harness.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_bearer_tokens_and_roles(
    guarded: tuple[ServerHarness, Revocable], http: aiohttp.ClientSession
) -> None:
    harness, _ = guarded
    base = harness.http_url + "/v1"
    status, body = await call(http, "GET", f"{base}/tasks")
    assert (status, reason(body)) == (401, "MISSING_CREDENTIALS")
    status, body = await call(
        http, "POST", f"{base}/tasks", {"taskId": "j"}, headers=bearer("nobody")
    )
    assert (status, reason(body)) == (401, "INVALID_TOKEN")
    status, _ = await call(
        http,
        "POST",
        f"{base}/tasks",
        {"taskId": "j", "start": True},
        headers=bearer("agent-a@acme"),
    )
    assert status == 200
    status, body = await call(
        http, "POST", f"{base}/tasks/j:cancel", headers=bearer("viewer-v@acme")
    )
    assert (status, reason(body)) == (403, "PERMISSION_DENIED")
    status, body = await call(http, "GET", f"{base}/tasks/j", headers=bearer("viewer-v@acme"))
    assert status == 200
    assert "cancelRequest" not in body["task"]
    status, body = await call(http, "GET", f"{base}/tasks/j", headers=bearer("viewer-v@other"))
    assert (status, reason(body)) == (404, "TASK_NOT_FOUND")
    status, body = await call(http, "GET", f"{base}/session", headers=bearer("viewer-v@acme"))
    assert body["principal"] == {
        "name": "viewer-v",
        "tenant": "acme",
        "role": "viewer",
        "permissions": ["read"],
        "scoped": False,
    }
    status, body = await call(
        http, "POST", f"{base}/readTokens", {"taskId": "j"}, headers=bearer("viewer-v@acme")
    )
    # Admitted (a viewer may mint), refused by the service as over gRPC: no token file here.
    assert (status, reason(body)) == (412, "AUTHENTICATION_OFF")


async def test_session_cookie_with_csrf_and_revocation(
    guarded: tuple[ServerHarness, Revocable],
) -> None:
    harness, authenticator = guarded
    base = harness.http_url + "/v1"
    # unsafe=True: keep cookies of an IP address (127.0.0.1), as browsers do.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        status, body = await call(browser, "POST", f"{base}/session", {"token": "nobody"})
        assert (status, reason(body)) == (401, "INVALID_TOKEN")
        async with browser.post(f"{base}/session", json={"token": "operator-o@acme"}) as response:
            assert response.status == 200
            signed_in = await response.json()
            cookie = response.cookies["headway_session"]
            assert cookie["httponly"]
            assert cookie["samesite"] == "Strict"
            assert cookie["path"] == "/"
            assert int(cookie["max-age"]) == 12 * 3600
        assert signed_in["principal"]["role"] == "operator"
        csrf = signed_in["csrfToken"]
        status, me = await call(browser, "GET", f"{base}/session")
        assert (status, me["principal"]["name"], me["csrfToken"]) == (200, "operator-o", csrf)

        await call(http_admin := browser, "GET", f"{base}/tasks")  # reads need no CSRF token
        del http_admin
        _, created = await call(
            browser, "POST", f"{base}/tasks", {"taskId": "j"}, headers=bearer("agent-a@acme")
        )
        assert created["task"]["id"] == "j"
        status, body = await call(browser, "POST", f"{base}/tasks/j:cancel", {"reason": "r"})
        assert (status, reason(body)) == (403, "CSRF_TOKEN_INVALID")
        status, body = await call(
            browser, "POST", f"{base}/tasks/j:cancel", {}, headers={"X-CSRF-Token": "wrong"}
        )
        assert (status, reason(body)) == (403, "CSRF_TOKEN_INVALID")
        _, still = await call(browser, "GET", f"{base}/tasks/j")
        assert "cancelRequest" not in still["task"]
        status, body = await call(
            browser,
            "POST",
            f"{base}/tasks/j:cancel",
            {"reason": "r"},
            headers={"X-CSRF-Token": csrf},
        )
        assert status == 200, body
        assert body["task"]["cancelRequest"]["reason"] == "r"

        authenticator.revoked.add("operator-o@acme")
        status, body = await call(browser, "GET", f"{base}/tasks/j")
        assert (status, reason(body)) == (401, "INVALID_TOKEN")
        authenticator.revoked.clear()

        status, _ = await call(browser, "DELETE", f"{base}/session", headers={"X-CSRF-Token": csrf})
        assert status == 200
        status, body = await call(browser, "GET", f"{base}/session")
        assert (status, reason(body)) == (401, "MISSING_CREDENTIALS")


async def test_session_without_authentication_is_the_anonymous_admin(
    harness: ServerHarness, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, "GET", f"{harness.http_url}/v1/session")
    assert status == 200
    assert body["principal"]["name"] == "anonymous"
    assert body["principal"]["role"] == "admin"


async def test_health_and_static_files(harness: ServerHarness, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{harness.http_url}/healthz") as response:
        assert (response.status, await response.json()) == (200, {"status": "SERVING"})
    async with http.get(f"{harness.http_url}/") as response:
        assert response.status == 200
        assert "Headway" in await response.text()
    async with http.get(f"{harness.http_url}/index.html") as response:
        assert response.status == 200
    async with http.get(f"{harness.http_url}/../../etc/passwd") as response:
        assert response.status == 404
    assert harness.running is not None
    harness.running.http.begin_shutdown()  # type: ignore[union-attr]
    async with http.get(f"{harness.http_url}/healthz") as response:
        assert response.status == 503


async def test_hostile_bytes_in_credentials_bodies_and_paths_are_clean_refusals(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """Answers a probe found 500s for: each must be a JSON Status with a reason."""
    token_file = tmp_path / "tokens"
    append_token(token_file, "alice", "acme", "admin")
    harness = ServerHarness(make_settings(auth_token_file=token_file))
    await harness.start()
    try:
        assert harness.running is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", harness.running.http_port)
        writer.write(
            b"GET /v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer hw_\xe9\xe9\r\n"
            b"Connection: close\r\n\r\n"
        )
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
        assert b"TOKEN_INVALID" in answer
        async with aiohttp.ClientSession() as session:
            base = harness.http_url
            json_type = {"Content-Type": "application/json"}
            async with session.post(
                f"{base}/v1/session", data='{"token": "\\ud800"}', headers=json_type
            ) as response:
                assert response.status == 401
            async with session.post(
                f"{base}/v1/session",
                data='{"token": "anything"}',
                headers={"Content-Type": "text/plain"},
            ) as response:
                assert response.status == 400, "a cross-site form cannot sign anybody in"
            async with session.post(f"{base}/v1/tasks", data="[" * 100_000) as response:
                assert response.status == 401, "authentication comes before the body"
            async with session.get(f"{base}/app.js%00") as response:
                assert response.status == 404
                assert (await response.json())["details"][0]["reason"] == "ROUTE_NOT_FOUND"
    finally:
        await harness.close()


async def test_every_answer_carries_the_security_headers(
    make_settings: Callable[..., Settings],
) -> None:
    harness = ServerHarness(make_settings())
    await harness.start()
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/", "/v1/tasks", "/nope"):
                async with session.get(f"{harness.http_url}{path}") as response:
                    headers = response.headers
                    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
                    assert headers["X-Frame-Options"] == "DENY"
                    assert headers["X-Content-Type-Options"] == "nosniff"
                    assert headers["Referrer-Policy"] == "no-referrer"
    finally:
        await harness.close()
