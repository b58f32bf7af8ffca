"""Authentication end to end: a real server, real sockets, real SQLite, real tokens.

Bearer tokens from a token file (and its reloads), JWTs from an identity
provider (keys made here with `cryptography`), read tokens minted by
CreateReadToken on a server whose clock the test moves, and what stays open
without any token: health and reflection.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headway.client.errors import from_rpc_error
from headway.server.app import create_server
from headway.server.auth.factory import AuthenticationSetupError
from headway.server.auth.tokens import append_token, remove_name
from headway.server.config import Settings
from headway.v1 import task_service_pb2, task_service_pb2_grpc
from tests.clock import FakeClock
from tests.harness import QUIET, ServerHarness, StartClocked
from tests.processes import ServerProcess

GRPCURL = Path(sys.executable).parent / "grpcurl"
MakeSettings = Callable[..., Settings]


class Caller:
    """TaskService over a plain channel, with whatever credentials a test presents."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.stub = task_service_pb2_grpc.TaskServiceStub(self.channel)

    async def call(
        self,
        method: str,
        request: Any,
        token: str | None = None,
        *,
        authorization: str | None = None,
        tenant: str | None = None,
    ) -> Any:
        metadata = []
        if token is not None:
            metadata.append(("authorization", f"Bearer {token}"))
        if authorization is not None:
            metadata.append(("authorization", authorization))
        if tenant is not None:
            metadata.append(("x-headway-tenant", tenant))
        return await getattr(self.stub, method)(request, metadata=metadata, timeout=10)

    async def refused(self, method: str, request: Any, token: str | None = None, **kw: Any) -> Any:
        """The error a call is answered with: code, reason and message, as a client sees them."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.call(method, request, token, **kw)
        return from_rpc_error(caught.value)


def create(task_id: str) -> task_service_pb2.CreateTaskRequest:
    return task_service_pb2.CreateTaskRequest(task_id=task_id, kind="build", labels={"team": "web"})


def get(task_id: str) -> task_service_pb2.GetTaskRequest:
    return task_service_pb2.GetTaskRequest(task_id=task_id)


UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def edit(path: Path, change: Callable[[str], str]) -> None:
    """Rewrite a file in place, as an operator's editor would."""
    path.write_text(change(path.read_text() if path.exists() else ""))


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return tmp_path / "tokens"


@pytest.fixture
def tokens(token_file: Path) -> dict[str, str]:
    """Secrets by principal name: an agent and a viewer of acme, an admin of beta."""
    return {
        "bot": append_token(token_file, "bot", "acme", "agent"),
        "watcher": append_token(token_file, "watcher", "acme", "viewer"),
        "boss": append_token(token_file, "boss", "beta", "admin"),
    }


@pytest.fixture
async def caller(
    make_settings: MakeSettings, token_file: Path, tokens: dict[str, str]
) -> AsyncIterator[tuple[ServerHarness, Caller]]:
    harness = ServerHarness(make_settings(auth_token_file=token_file, **QUIET))
    await harness.start()
    caller = Caller(harness.target)
    try:
        yield harness, caller
    finally:
        await caller.channel.close()
        await harness.close()


# -- the token file ------------------------------------------------------------------


async def test_a_token_from_the_file_acts_as_its_principal(
    caller: tuple[ServerHarness, Caller], tokens: dict[str, str]
) -> None:
    _, c = caller
    created = await c.call("CreateTask", create("t1"), tokens["bot"])
    assert created.task.tenant == "acme"
    seen = await c.call("GetTask", get("t1"), tokens["watcher"])
    assert seen.task.tenant == "acme"
    # The admin of beta does not see acme's task at all.
    error = await c.refused("GetTask", get("t1"), tokens["boss"])
    assert error.code == grpc.StatusCode.NOT_FOUND


async def test_missing_malformed_and_unknown_tokens_are_unauthenticated(
    caller: tuple[ServerHarness, Caller], tokens: dict[str, str]
) -> None:
    _, c = caller
    missing = await c.refused("ListTasks", task_service_pb2.ListTasksRequest())
    assert (missing.code, missing.reason) == (UNAUTHENTICATED, "TOKEN_MISSING")
    assert "Bearer" in str(missing)
    for header in ("Basic dXNlcjpwYXNz", "Bearer", f"Token {tokens['bot']}", "Bearer a b"):
        error = await c.refused(
            "ListTasks", task_service_pb2.ListTasksRequest(), authorization=header
        )
        assert (error.code, error.reason) == (UNAUTHENTICATED, "TOKEN_MALFORMED"), header
    guessed = tokens["bot"][:-1] + ("A" if tokens["bot"][-1] != "A" else "B")
    for token in (guessed, "hw_nonsense", "a.b.c"):
        error = await c.refused("ListTasks", task_service_pb2.ListTasksRequest(), token)
        assert (error.code, error.reason) == (UNAUTHENTICATED, "TOKEN_INVALID")
        assert token not in str(error)


async def test_a_token_removed_from_the_file_stops_working_without_a_restart(
    caller: tuple[ServerHarness, Caller], tokens: dict[str, str], token_file: Path
) -> None:
    harness, c = caller
    await c.call("CreateTask", create("t1"), tokens["bot"])
    # Edited by hand: noticed on use, within a second.
    edit(
        token_file,
        lambda text: "".join(line for line in text.splitlines(True) if " bot " not in line),
    )
    await asyncio.sleep(1.1)
    error = await c.refused("GetTask", get("t1"), tokens["bot"])
    assert error.reason == "TOKEN_INVALID"
    # Removed as `token revoke` does, then reloaded at once as on SIGHUP.
    await c.call("GetTask", get("t1"), tokens["watcher"])
    assert remove_name(token_file, "watcher") == 1
    assert harness.running is not None
    harness.running.reload_credentials()
    error = await c.refused("GetTask", get("t1"), tokens["watcher"])
    assert error.reason == "TOKEN_INVALID"
    # A new token works as soon as it is in the file.
    fresh = append_token(token_file, "bot", "acme", "agent")
    harness.running.reload_credentials()
    await c.call("GetTask", get("t1"), fresh)


async def test_a_broken_file_on_reload_keeps_the_tokens_in_force(
    caller: tuple[ServerHarness, Caller],
    tokens: dict[str, str],
    token_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness, c = caller
    edit(token_file, lambda text: text + "sha256:nothex bot acme agent\n")
    assert harness.running is not None
    with caplog.at_level(logging.ERROR):
        harness.running.reload_credentials()
    assert "line 4" in caplog.text
    await c.call("CreateTask", create("t1"), tokens["bot"])


async def test_a_malformed_file_stops_the_server_at_start(
    make_settings: MakeSettings, token_file: Path
) -> None:
    edit(token_file, lambda _: "# ok\nsha256:abc bot acme agent\n")
    with pytest.raises(AuthenticationSetupError, match=r"line 2: the hash after 'sha256:'"):
        await create_server(make_settings(auth_token_file=token_file))
    finished = await asyncio.to_thread(
        subprocess.run,
        [
            *(sys.executable, "-m", "headway.server", "--address", "127.0.0.1:0"),
            *("--database", str(token_file.with_name("x.db"))),
            *("--auth-token-file", str(token_file)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert f"headway-server: token file {token_file}, line 2:" in finished.stderr


async def test_the_startup_log_says_how_callers_are_authenticated(
    make_settings: MakeSettings,
    token_file: Path,
    tokens: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        harness = ServerHarness(make_settings(**QUIET))
        await harness.start()
        await harness.close()
        assert "authentication: off (every caller is admin of tenant 'default')" in caplog.text
        harness = ServerHarness(
            make_settings(database=tmp_path / "other.db", auth_token_file=token_file, **QUIET)
        )
        await harness.start()
        await harness.close()
    assert f"authentication: token file {token_file} (3 tokens), read tokens" in caplog.text
    key = tmp_path / "other.db.signing-key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "headway.db.signing-key").exists()  # not made without authentication


async def test_a_cross_tenant_admin_names_its_tenant(
    make_settings: MakeSettings, token_file: Path, tokens: dict[str, str]
) -> None:
    operator = append_token(token_file, "ops", "*", "admin")
    with pytest.raises(AuthenticationSetupError, match="--auth-allow-cross-tenant-admin"):
        await create_server(make_settings(auth_token_file=token_file))
    harness = ServerHarness(
        make_settings(auth_token_file=token_file, auth_allow_cross_tenant_admin=True, **QUIET)
    )
    await harness.start()
    c = Caller(harness.target)
    try:
        created = await c.call("CreateTask", create("t1"), operator, tenant="gamma")
        assert created.task.tenant == "gamma"
        error = await c.refused("GetTask", get("t1"), operator)
        assert (error.code, error.reason) == (UNAUTHENTICATED, "TENANT_REQUIRED")
        # Anyone else acts in its own tenant only.
        error = await c.refused("GetTask", get("t1"), tokens["boss"], tenant="gamma")
        assert (error.code, error.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "TENANT_NOT_ALLOWED",
        )
        await c.call(
            "ListTasks", task_service_pb2.ListTasksRequest(), tokens["boss"], tenant="beta"
        )
    finally:
        await c.channel.close()
        await harness.close()


# -- health and reflection stay open -------------------------------------------------


async def test_health_and_reflection_answer_without_a_token(
    caller: tuple[ServerHarness, Caller],
) -> None:
    harness, c = caller
    health = health_pb2_grpc.HealthStub(c.channel)
    for service in ("", "headway.v1.TaskService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(GRPCURL), "-plaintext", *args], capture_output=True, text=True, timeout=30
        )

    listed = await asyncio.to_thread(grpcurl, harness.target, "list")
    assert listed.returncode == 0, listed.stderr
    assert "headway.v1.TaskService" in listed.stdout
    described = await asyncio.to_thread(
        grpcurl, harness.target, "describe", "headway.v1.TaskService"
    )
    assert "rpc CreateReadToken" in described.stdout
    # TaskService itself does not answer without one.
    refused = await asyncio.to_thread(grpcurl, harness.target, "headway.v1.TaskService/ListTasks")
    assert refused.returncode != 0
    assert "Unauthenticated" in refused.stderr


# -- JWTs from an identity provider ---------------------------------------------------


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def idp_claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "carol@acme.example",
        "org": "acme",
        "role": "agent",
        "iss": "https://idp.example",
        "aud": "headway",
        "iat": now,
        "exp": now + 300,
        **extra,
    }


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def test_rs256_tokens_of_the_identity_provider(
    make_settings: MakeSettings, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    (tmp_path / "idp.pem").write_bytes(public_pem(rsa_key))
    settings = make_settings(
        auth_jwt_public_key_file=tmp_path / "idp.pem",
        auth_jwt_issuer="https://idp.example",
        auth_jwt_audience="headway",
        auth_jwt_tenant_claim="org",
        auth_jwt_leeway=timedelta(seconds=5),
        **QUIET,
    )
    harness = ServerHarness(settings)
    await harness.start()
    c = Caller(harness.target)

    def sign(**extra: Any) -> str:
        return jwt.encode(idp_claims(**extra), rsa_key, algorithm="RS256")

    async def reason(token: str) -> str:
        error = await c.refused("GetTask", get("t1"), token)
        assert error.code == UNAUTHENTICATED
        assert token not in str(error)
        return str(error.reason)

    try:
        created = await c.call("CreateTask", create("t1"), sign())
        assert created.task.tenant == "acme"
        now = int(time.time())
        assert await reason(sign(exp=now - 10)) == "TOKEN_EXPIRED"
        assert await reason(sign(nbf=now + 60)) == "TOKEN_NOT_YET_VALID"
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert await reason(jwt.encode(idp_claims(), other, algorithm="RS256")) == "TOKEN_INVALID"
        unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(idp_claims())}."
        assert await reason(unsigned) == "TOKEN_INVALID"
        assert await reason(sign(aud="someone-else")) == "TOKEN_INVALID"
        assert await reason(sign(iss="https://evil.example")) == "TOKEN_INVALID"
        assert await reason(sign(role="root")) == "TOKEN_INVALID"
        # HS256 with the server's public key as the HMAC secret (algorithm confusion).
        signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(idp_claims())}"
        mac = hmac.new(public_pem(rsa_key), signing_input.encode(), hashlib.sha256).digest()
        confused = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
        assert await reason(confused) == "TOKEN_INVALID"
    finally:
        await c.channel.close()
        await harness.close()


@pytest.mark.parametrize("algorithm", ["HS256", "ES256"])
async def test_hs256_and_es256_tokens(
    make_settings: MakeSettings, tmp_path: Path, algorithm: str
) -> None:
    if algorithm == "HS256":
        signing_key: Any = b"k" * 40
        (tmp_path / "secret").write_bytes(signing_key)
        settings = make_settings(auth_jwt_secret_file=tmp_path / "secret", **QUIET)
    else:
        signing_key = ec.generate_private_key(ec.SECP256R1())
        (tmp_path / "ec.pem").write_bytes(public_pem(signing_key))
        settings = make_settings(auth_jwt_public_key_file=tmp_path / "ec.pem", **QUIET)
    harness = ServerHarness(settings)
    await harness.start()
    c = Caller(harness.target)
    try:
        claims = {"sub": "dave", "tenant": "acme", "role": "admin", "exp": int(time.time()) + 60}
        token = jwt.encode(claims, signing_key, algorithm=algorithm)
        created = await c.call("CreateTask", create("t1"), token)
        assert created.task.tenant == "acme"
        expired = jwt.encode(
            {**claims, "exp": int(time.time()) - 60}, signing_key, algorithm=algorithm
        )
        error = await c.refused("GetTask", get("t1"), expired)
        assert error.reason == "TOKEN_EXPIRED"
    finally:
        await c.channel.close()
        await harness.close()


# -- read tokens ------------------------------------------------------------------------


@pytest.fixture
async def clocked(
    make_clocked: StartClocked,
    make_settings: MakeSettings,
    token_file: Path,
    tokens: dict[str, str],
) -> AsyncIterator[Caller]:
    harness = await make_clocked(
        make_settings(
            auth_token_file=token_file, auth_read_token_max_ttl=timedelta(hours=1), **QUIET
        )
    )
    c = Caller(harness.target)
    try:
        yield c
    finally:
        await c.channel.close()


def read_token_request(task_id: str = "", seconds: int = 0, **labels: str) -> Any:
    return task_service_pb2.CreateReadTokenRequest(
        task_id=task_id, labels=labels, ttl=Duration(seconds=seconds)
    )


async def test_a_read_token_reads_its_task_only_until_it_expires(
    clocked: Caller, tokens: dict[str, str], clock: FakeClock
) -> None:
    c = clocked
    await c.call("CreateTask", create("t1"), tokens["bot"])
    minted = await c.call("CreateReadToken", read_token_request("t1", 60), tokens["watcher"])
    assert minted.expire_time.ToNanoseconds() == -(-(clock() + 60 * 10**9) // 10**9) * 10**9
    assert minted.token.count(".") == 2

    seen = await c.call("GetTask", get("t1"), minted.token)
    assert seen.task.id == "t1"
    update = task_service_pb2.UpdateTaskRequest(task_id="t1", message="x")
    error = await c.refused("UpdateTask", update, minted.token)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    error = await c.refused("CreateReadToken", read_token_request("t1"), minted.token)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPED_TOKEN")

    clock.advance(60)
    await c.call("GetTask", get("t1"), minted.token)
    clock.advance(1)
    error = await c.refused("GetTask", get("t1"), minted.token)
    assert (error.code, error.reason) == (UNAUTHENTICATED, "TOKEN_EXPIRED")


async def test_read_token_requests_are_checked_and_their_ttl_bounded(
    clocked: Caller, tokens: dict[str, str], clock: FakeClock
) -> None:
    c = clocked
    await c.call("CreateTask", create("t1"), tokens["bot"])
    for request in (read_token_request(), read_token_request("t1", team="web")):
        error = await c.refused("CreateReadToken", request, tokens["watcher"])
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    error = await c.refused("CreateReadToken", read_token_request("absent"), tokens["watcher"])
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND")
    # Another tenant's task is as absent as one that does not exist.
    error = await c.refused("CreateReadToken", read_token_request("t1"), tokens["boss"])
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND")

    def expires_in(response: Any) -> float:
        return float(response.expire_time.ToNanoseconds() - clock()) / 1e9

    default = await c.call("CreateReadToken", read_token_request("t1"), tokens["watcher"])
    assert 15 * 60 <= expires_in(default) < 15 * 60 + 1
    long = await c.call("CreateReadToken", read_token_request("t1", 48 * 3600), tokens["watcher"])
    assert 3600 <= expires_in(long) < 3601
    labelled = await c.call("CreateReadToken", read_token_request(team="web"), tokens["watcher"])
    assert (await c.call("GetTask", get("t1"), labelled.token)).task.id == "t1"


async def test_without_authentication_there_is_nothing_to_mint(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    harness = ServerHarness(make_settings(database=tmp_path / "open.db", **QUIET))
    await harness.start()
    c = Caller(harness.target)
    try:
        await c.call("CreateTask", create("t1"))
        error = await c.refused("CreateReadToken", read_token_request("t1"))
        assert (error.code, error.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "AUTHENTICATION_OFF",
        )
    finally:
        await c.channel.close()
        await harness.close()


# -- `headway-server token create|revoke` -------------------------------------------------


def token_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headway.server", "token", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def status_of(call: Callable[[], object]) -> grpc.StatusCode | None:
    """None if the call succeeds, else its status code."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined,no-any-return]
    return None


def test_the_token_command_makes_tokens_a_running_server_accepts(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    made = token_command(
        *("create", "--token-file", str(token_file)),
        *("--name", "ci", "--tenant", "acme", "--role", "agent"),
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("hw_")
    assert made.stdout == secret + "\n"  # only the token on stdout; the hint on stderr
    assert "shown once" in made.stderr
    assert secret not in token_file.read_text()
    assert token_file.stat().st_mode & 0o777 == 0o600

    server = ServerProcess(tmp_path / "headway.db", "--auth-token-file", str(token_file)).start()
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = task_service_pb2_grpc.TaskServiceStub(channel)
            bearer = (("authorization", f"Bearer {secret}"),)
            created = stub.CreateTask(create("t1"), metadata=bearer, timeout=10)
            assert created.task.tenant == "acme"

            revoked = token_command("revoke", "--token-file", str(token_file), "--name", "ci")
            assert revoked.returncode == 0, revoked.stderr
            assert server.process is not None
            server.process.send_signal(signal.SIGHUP)  # at once, not within the second
            deadline = time.monotonic() + 5
            while (code := status_of(lambda: stub.GetTask(get("t1"), metadata=bearer))) is None:
                assert time.monotonic() < deadline, "the revoked token still works"
                time.sleep(0.05)
            assert code == UNAUTHENTICATED
    finally:
        assert server.stop() == 0, server.log.read_text()
    assert "authentication: token file" in server.log.read_text()
    assert "reloaded token file" in server.log.read_text()

    again = token_command("revoke", "--token-file", str(token_file), "--name", "ci")
    assert again.returncode == 1
    bad = token_command(
        *("create", "--token-file", str(token_file)),
        *("--name", "bad/name", "--tenant", "acme", "--role", "agent"),
    )
    assert bad.returncode == 2
    assert "name 'bad/name' must be" in bad.stderr


async def test_a_minted_read_token_sees_its_task_and_nothing_else(
    caller: tuple[ServerHarness, Caller], tokens: dict[str, str]
) -> None:
    """The embedding case end to end: minted by a viewer, used as a browser would."""
    _, c = caller
    for task_id in ("shown", "hidden"):
        await c.call("CreateTask", create(task_id), tokens["bot"])
    minted = await c.call("CreateReadToken", read_token_request("shown", 300), tokens["watcher"])
    token = minted.token

    assert (await c.call("GetTask", get("shown"), token)).task.id == "shown"
    for method, request in (
        ("GetTask", get("hidden")),
        ("ListLogs", task_service_pb2.ListLogsRequest(task_id="hidden")),
    ):
        error = await c.refused(method, request, token)
        assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND")
    listing = await c.call("ListTasks", task_service_pb2.ListTasksRequest(), token)
    assert [t.id for t in listing.tasks] == ["shown"]

    stream = c.stub.Subscribe(
        task_service_pb2.SubscribeRequest(), metadata=[("authorization", f"Bearer {token}")]
    )
    seen: list[str] = []
    async for response in stream:
        for event in response.events:
            which = event.WhichOneof("kind")
            if which in ("snapshot", "updated"):
                seen.append(f"{which}:{getattr(event, which).id}")
        if "updated:shown" in seen:
            break
        if seen == ["snapshot:shown"]:
            # Changes to both tasks; only the one in scope may arrive.
            for task_id in ("hidden", "shown"):
                await c.call(
                    "UpdateTask",
                    task_service_pb2.UpdateTaskRequest(task_id=task_id, message="moved"),
                    tokens["bot"],
                )
    stream.cancel()
    assert seen == ["snapshot:shown", "updated:shown"]
    for method, request in (
        ("CancelTask", task_service_pb2.CancelTaskRequest(task_id="shown")),
        ("DeleteTask", task_service_pb2.DeleteTaskRequest(task_id="shown")),
        ("CreateTask", create("new")),
    ):
        error = await c.refused(method, request, token)
        assert error.code == grpc.StatusCode.PERMISSION_DENIED
