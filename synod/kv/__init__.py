"""The key-value state machine: etcd v3's MVCC store, leases and watches, pure and
deterministic, driven by committed `Command`s in log order.

Modules: `messages` (request/response values shaped like etcd's protos), `codec` (the
msgpack log payload), `store` (the MVCC store and lessor), `watch` (watchers of a stream),
`errors` (etcd's errors), `keyspace`, `txn`, `lease` (internals).
"""

from synod.kv.codec import decode_command, encode_command
from synod.kv.errors import GrpcCode, KVError, MalformedCommand
from synod.kv.store import Applied, KVStore
from synod.kv.watch import WatchHub

__all__ = [
    "Applied",
    "GrpcCode",
    "KVError",
    "KVStore",
    "MalformedCommand",
    "WatchHub",
    "decode_command",
    "encode_command",
]
