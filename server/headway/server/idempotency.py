"""Request ids already applied, so that a retry gets the first answer (AIP-155).

A request id names one request: the same id with the same request is a retry
and is answered from the change it made; the same id with a different request
is a client bug and is refused, never applied. The book keeps the newest
records in memory, in the order they were made, so expiry is a walk from the
oldest end.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable

from google.protobuf.message import Message

from headway.server.errors import FieldViolation, HeadwayError, Kind
from headway.server.store.base import RequestRecord

RequestKey = tuple[str, str]  # (tenant, request id)


def fingerprint(method: str, request: Message) -> bytes:
    """A digest of a request without its request_id, to tell a retry from a reuse."""
    copy = type(request)()
    copy.CopyFrom(request)
    if "request_id" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("request_id")
    digest = hashlib.blake2b(method.encode(), digest_size=16)
    digest.update(copy.SerializeToString(deterministic=True))
    return digest.digest()


def check_same_request(record: RequestRecord, method: str, print_: bytes) -> None:
    """Refuse a request id reused for another request: applying it would be a guess."""
    if record.method != method or record.fingerprint != print_:
        raise HeadwayError(
            Kind.INVALID_ARGUMENT,
            "REQUEST_ID_REUSED",
            f"request_id {record.request_id!r} was already used for a different request "
            f"({record.method})",
            {"request_id": record.request_id},
            violations=(FieldViolation("request_id", "was already used for a different request"),),
        )


class RequestBook:
    """The remembered request ids, oldest first, at most `capacity` of them."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._records: OrderedDict[RequestKey, RequestRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def find(self, tenant: str, request_id: str) -> RequestRecord | None:
        return self._records.get((tenant, request_id))

    def remember(self, records: Iterable[RequestRecord]) -> None:
        """Add committed records; the oldest are forgotten beyond the capacity."""
        for record in records:
            self._records[(record.tenant, record.request_id)] = record
        while len(self._records) > self._capacity:
            self._records.popitem(last=False)

    def forget_before(self, cutoff_ns: int) -> int:
        """Drop records made before the cutoff; the time of the oldest one kept."""
        while self._records:
            oldest = next(iter(self._records.values()))
            if oldest.create_ns >= cutoff_ns:
                return oldest.create_ns
            self._records.popitem(last=False)
        return cutoff_ns

    def snapshot(self) -> dict[RequestKey, RequestRecord]:
        """A copy of every record, for comparing the book before and after."""
        return dict(self._records)
