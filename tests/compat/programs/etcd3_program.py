"""A program using the PyPI `etcd3` client (gRPC), as a user would: run in its own process
because etcd3 bundles its own etcdserverpb stubs. Prints OK on success; any failed check
raises. Usage: etcd3_program.py HOST PORT"""

import sys
import threading

import etcd3

host, port = sys.argv[1], int(sys.argv[2])
client = etcd3.client(host=host, port=port, timeout=10)

client.put("/compat/a", "1")
value, meta = client.get("/compat/a")
assert value == b"1", value
assert meta.version == 1

client.put("/compat/b", "2")
pairs = sorted((m.key, v) for v, m in client.get_prefix("/compat/"))
assert pairs == [(b"/compat/a", b"1"), (b"/compat/b", b"2")], pairs

succeeded, _ = client.transaction(
    compare=[client.transactions.value("/compat/a") == "1"],
    success=[client.transactions.put("/compat/a", "one")],
    failure=[],
)
assert succeeded
succeeded, _ = client.transaction(
    compare=[client.transactions.version("/compat/a") == 99],
    success=[],
    failure=[client.transactions.put("/compat/failed", "yes")],
)
assert not succeeded
assert client.get("/compat/failed")[0] == b"yes"

lease = client.lease(10)
client.put("/compat/leased", "x", lease=lease)
assert lease.remaining_ttl > 0
assert list(lease.keys) == [b"/compat/leased"]
lease.refresh()
lease.revoke()
assert client.get("/compat/leased")[0] is None

events = []
received = threading.Event()


def on_event(response):
    events.extend(response.events)
    received.set()


watch_id = client.add_watch_callback("/compat/watched", on_event)
client.put("/compat/watched", "w")
assert received.wait(10), "no watch event"
assert events[0].value == b"w"
client.cancel_watch(watch_id)

assert client.delete("/compat/b")
assert client.get("/compat/b")[0] is None

members = list(client.members)
assert len(members) == 3, members
status = client.status()
assert status.leader is not None
print("OK")
