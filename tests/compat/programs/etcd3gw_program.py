"""A program using the PyPI `etcd3gw` client (the JSON gateway), as a user would. Prints OK
on success; any failed check raises. Usage: etcd3gw_program.py HOST PORT"""

import sys

from etcd3gw.client import Etcd3Client

host, port = sys.argv[1], int(sys.argv[2])
client = Etcd3Client(host=host, port=port, api_path="/v3/")

assert client.put("/gw/a", "1")
assert client.get("/gw/a") == [b"1"]
client.put("/gw/b", "2")
prefix = sorted(v for v, _ in client.get_prefix("/gw/"))
assert prefix == [b"1", b"2"], prefix

lease = client.lease(ttl=10)
assert client.put("/gw/leased", "x", lease=lease)
assert lease.ttl() > 0
assert lease.refresh() > 0
assert list(lease.keys()) == [b"/gw/leased"]
assert lease.revoke()
assert client.get("/gw/leased") == []

txn_ok = client.transaction(
    {
        "compare": [{"key": "L2d3L2E=", "result": "EQUAL", "target": "VALUE", "value": "MQ=="}],
        "success": [{"request_put": {"key": "L2d3L2E=", "value": "b25l"}}],
        "failure": [],
    }
)
assert txn_ok.get("succeeded") is True, txn_ok
assert client.get("/gw/a") == [b"one"]

assert client.delete("/gw/b")
assert client.get("/gw/b") == []
assert len(client.members()) == 3
assert client.status()["header"]["cluster_id"]
print("OK")
