"""The HTTP face of TaskService: JSON for every unary RPC, Server-Sent Events, long polls.

It runs on the event loop of the gRPC server and calls the same `TaskService`
methods through the same admission (`service.admit`): the same principals,
permissions, validation, errors and revisions, over plain HTTP for browsers and
for agents that have nothing but `curl`.

- `routes`: the route table of the unary RPCs and how a request message is built.
- `codec`: JSON bodies and query parameters to request messages and back.
- `errors`: `HeadwayError` to an HTTP status with a JSON `google.rpc.Status`.
- `sessions`: bearer tokens, the session cookie and its CSRF token.
- `events`: `GET /v1/events`, a change feed as Server-Sent Events.
- `changes`: `GET /v1/changes`, the same feed as a long poll.
- `site`: the aiohttp application, health, static files, start and stop.
"""

from headway.server.http.site import HttpServer

__all__ = ["HttpServer"]
