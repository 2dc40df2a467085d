"""The snapshot's encodings: format 2 (column chunks, issue 8) round-trips every shape of
history, loads a format-1 snapshot written by an earlier Synod into the same store, and
refuses bytes that break its rules. Method: build a store that has every kind of record
(overwrites, deletes, a multi-key transaction written out of key order, leased keys, a
compaction), then compare restored stores by their canonical bytes, HashKV and answers."""

from __future__ import annotations

from pathlib import Path

from synod.kv.messages import CompactionRequest, PutRequest, TxnRequest
from synod.kv.store import KVStore
from tests.unit.kv.helpers import Store

FORMAT_1_FIXTURE = Path(__file__).parent / "data" / "snapshot-format-1.msgpack"


def history_store() -> Store:
    """Every kind of record a snapshot holds; deterministic, so a fixture can pin it."""
    store = Store()
    lease = store.grant(60, 7)
    for index in range(40):
        store.put(b"k%03d" % index, b"v%d" % index, lease=lease if index % 9 == 0 else 0)
    for index in range(0, 40, 3):
        store.put(b"k%03d" % index, b"again%d" % index)
    store.delete(b"k010", b"k015")
    store.do(CompactionRequest(store.kv.revision - 5))
    store.txn(
        TxnRequest(
            success=(PutRequest(b"k039", b"txn"), PutRequest(b"k001", b"txn")),
        )
    )
    store.delete(b"k020")
    store.put(b"k020", b"back")
    store.grant(30, 8)
    return store
