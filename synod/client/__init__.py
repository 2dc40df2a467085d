"""Synod's Python client: synchronous (`Client`) and asyncio (`AsyncClient`) over a
pluggable transport (Synod's native door, or etcd's gRPC API: `transport="auto"` picks
the native door where the members serve it), with endpoint failover, deadlines, retries
only where safe, background lease keep-alive and typed errors. See docs/client.md and
docs/native.md.

The client shares only the message definitions and the native door's frame layout
(synod.api.proto) with the server.
"""

from synod.api.proto.etcdserverpb import rpc_pb2
from synod.api.proto.mvccpb import kv_pb2
from synod.client import txn
from synod.client.aio import DEFAULT_ENDPOINTS, AsyncClient, AsyncLease, AsyncWatcher
from synod.client.errors import (
    Cancelled,
    ClientClosed,
    ClientError,
    Compacted,
    FutureRevision,
    InvalidArgument,
    LeaseExpired,
    LeaseNotFound,
    NoLeader,
    NotFound,
    OutcomeUnknown,
    Timeout,
    Unavailable,
)
from synod.client.sync import Client, Lease, Watcher
from synod.client.transport import Stream, Transport

Event = kv_pb2.Event
KeyValue = kv_pb2.KeyValue

__all__ = [
    "DEFAULT_ENDPOINTS",
    "AsyncClient",
    "AsyncLease",
    "AsyncWatcher",
    "Cancelled",
    "Client",
    "ClientClosed",
    "ClientError",
    "Compacted",
    "Event",
    "FutureRevision",
    "InvalidArgument",
    "KeyValue",
    "Lease",
    "LeaseExpired",
    "LeaseNotFound",
    "NoLeader",
    "NotFound",
    "OutcomeUnknown",
    "Stream",
    "Timeout",
    "Transport",
    "Unavailable",
    "Watcher",
    "kv_pb2",
    "rpc_pb2",
    "txn",
]
