"""The door choice: one argument ('grpc' or 'native') that picks the client's transport.

When the client takes the door by name (`AsyncClient(..., transport="native")`), it is
passed through as is; otherwise the transport is built here from the client's transport
modules. Synod's native door listens on the client port + 2 unless configured otherwise,
which is what the client assumes and what the clusters this benchmark starts provide."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
from collections.abc import Sequence
from typing import Any

from synod.client import AsyncClient
from synod.client.grpc_transport import GrpcTransport

DOORS = ("grpc", "native")
NATIVE_MODULE = "synod.client.native_transport"


def native_available() -> bool:
    """True once the client ships its native-door transport."""
    try:
        return importlib.util.find_spec(NATIVE_MODULE) is not None
    except ModuleNotFoundError:
        return False


def _client_takes_door_names() -> bool:
    default = inspect.signature(AsyncClient).parameters["transport"].default
    return isinstance(default, str)


def make_client(endpoints: Sequence[str], door: str, *, timeout_s: float = 5.0) -> AsyncClient:
    """An asyncio client to `endpoints` through `door`."""
    assert door in DOORS, door
    if _client_takes_door_names():
        chosen: Any = door
    elif door == "grpc":
        chosen = GrpcTransport(endpoints)
    else:
        module: Any = importlib.import_module(NATIVE_MODULE)
        chosen = module.NativeTransport(endpoints)
    return AsyncClient(endpoints, timeout_s=timeout_s, transport=chosen)


async def _answers(endpoints: Sequence[str], door: str, timeout_s: float) -> bool:
    client = make_client(endpoints, door, timeout_s=timeout_s)
    try:
        await client.status(endpoints[0], timeout_s=timeout_s)
    except Exception:  # any failure means: not this door
        return False
    finally:
        await client.close()
    return True


def door_answers(endpoints: Sequence[str], door: str, timeout_s: float = 2.0) -> bool:
    """True if the first endpoint answers a status call through `door`."""
    assert endpoints
    return asyncio.run(_answers(endpoints, door, timeout_s))
