"""A real server on a real socket over a real SQLite file, started and stopped as an operator would.

Kept out of conftest.py so that test modules import it like any other helper.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from headway.client import HeadwayClient
from headway.server.app import RunningServer, create_server
from headway.server.auth.credentials import Authenticator
from headway.server.config import Settings

QUIET = {
    # The background checks run once at start only; a test runs them when it means to.
    "liveness_interval": timedelta(hours=1),
    "compaction_interval": timedelta(hours=1),
}


class ServerHarness:
    """Starts, stops and restarts a server on one database, as an operator would."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], int] | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.authenticator = authenticator
        self.running: RunningServer | None = None
        self._clients: list[HeadwayClient] = []

    @property
    def target(self) -> str:
        assert self.running is not None, "server is not running"
        return f"127.0.0.1:{self.running.port}"

    async def start(self) -> RunningServer:
        if self.running is not None:
            # Restart on the same port, so clients that resume reach it again.
            update = {"address": f"127.0.0.1:{self.running.port}"}
            if self.running.http_port:
                update["http_address"] = f"127.0.0.1:{self.running.http_port}"
            self.settings = self.settings.model_copy(update=update)
        self.running = await create_server(
            self.settings, clock=self.clock, authenticator=self.authenticator
        )
        return self.running

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.stop()

    async def restart(self) -> RunningServer:
        await self.stop()
        return await self.start()

    @property
    def http_url(self) -> str:
        """The base URL of the server's HTTP face, such as http://127.0.0.1:41234."""
        assert self.running is not None, "server is not running"
        assert self.running.http_port, "HTTP is off"
        return f"http://127.0.0.1:{self.running.http_port}"

    def client(self, token: str | None = None) -> HeadwayClient:
        """A client of the server; with `token`, it sends it as `authorization: Bearer <token>`."""
        # A private subchannel pool makes each client behave like a separate process:
        # it does not inherit the connection backoff of clients that saw a restart.
        metadata = [("authorization", f"Bearer {token}")] if token is not None else []
        client = HeadwayClient(
            self.target, options=[("grpc.use_local_subchannel_pool", 1)], metadata=metadata
        )
        self._clients.append(client)
        return client

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        await self.stop()


StartClocked = Callable[[Settings], Awaitable[ServerHarness]]
"""The `make_clocked` fixture: starts a server with these settings on the test's clock."""
