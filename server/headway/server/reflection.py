"""Server reflection that also resolves method names.

`grpcurl describe headway.v1.TaskService.Subscribe` asks reflection for the
file containing a *method* symbol; the C++-backed (upb) descriptor pool only
knows messages, enums, services and fields by that lookup, so the stock
reflection service answers NOT_FOUND. This pool adapter adds the method case
and delegates everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pool
from grpc_reflection.v1alpha import reflection


class MethodAwarePool:
    """A descriptor pool whose symbol lookup also finds `package.Service.Method`."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, symbol: str) -> descriptor.FileDescriptor:  # noqa: N802
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method_name = symbol.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                raise KeyError(symbol) from None
            if method_name not in service.methods_by_name:
                raise
            return service.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def enable(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection for `service_names` (plus reflection itself) on `server`."""
    reflection.enable_server_reflection(
        (*service_names, reflection.SERVICE_NAME),
        server,
        pool=MethodAwarePool(descriptor_pool.Default()),  # type: ignore[arg-type]
    )
