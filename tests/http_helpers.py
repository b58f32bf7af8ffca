"""A plain HTTP client of the server's HTTP face, and a Server-Sent Events reader, for tests."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp


def reason(body: dict[str, Any]) -> str:
    """The ErrorInfo reason of a JSON google.rpc.Status."""
    infos = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert len(infos) == 1, body
    return str(infos[0]["reason"])


def violations(body: dict[str, Any]) -> list[str]:
    """The fields a JSON google.rpc.Status's BadRequest names."""
    return [
        v["field"]
        for d in body["details"]
        if d["@type"].endswith("google.rpc.BadRequest")
        for v in d["fieldViolations"]
    ]


@dataclass
class Sse:
    event: str
    data: dict[str, Any]
    id: str | None


class SseReader:
    """Reads one `text/event-stream` response event by event."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.retry: int | None = None

    async def next(self, timeout: float = 10) -> Sse | None:
        """The next event, or None at the end of the stream."""
        fields: dict[str, str] = {}
        while True:
            line = await asyncio.wait_for(self.response.content.readline(), timeout)
            if not line:
                return None
            text = line.decode().rstrip("\n")
            if not text:
                if "event" in fields or "data" in fields:
                    return Sse(
                        fields.get("event", "message"), json.loads(fields["data"]), fields.get("id")
                    )
                continue
            name, _, value = text.partition(": ")
            if name == "retry":
                self.retry = int(value)
            else:
                fields[name] = value

    async def until(self, event: str, timeout: float = 10) -> list[Sse]:
        """Every event up to and including the first `event`."""
        seen: list[Sse] = []
        while True:
            item = await self.next(timeout)
            assert item is not None, f"stream ended before {event}: {seen}"
            seen.append(item)
            if item.event == event:
                return seen
