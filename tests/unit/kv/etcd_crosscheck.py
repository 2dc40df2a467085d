"""Differential check of KVStore against a real etcd 3.4, by hand (not collected by pytest).

Applies the same seeded random operations (put with prev_kv, delete ranges including
range_end "\\0", ranges at older/future revisions with limit, sort and min_mod_revision,
txns with compares and both branches, compactions including refused ones) to a *fresh* etcd
through its JSON gateway and to a fresh KVStore, and prints every difference in revisions,
kvs, count, more, succeeded and error messages. Ties of non-KEY sorts are unspecified in
etcd, so those are compared as multisets (or without kvs when a limit cuts them).

    apt-get install -y etcd-server
    etcd --data-dir "$(mktemp -d)" --listen-client-urls http://127.0.0.1:23791 \\
         --advertise-client-urls http://127.0.0.1:23791 &
    .venv/bin/python -m tests.unit.kv.etcd_crosscheck --endpoint http://127.0.0.1:23791 --seed 1

Run against etcd 3.4.23 with seeds 1 to 5 (400 operations each): no differences.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import urllib.error
import urllib.request
from typing import Any

from synod.kv import KVError, KVStore
from synod.kv.messages import (
    Command,
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    KeyValue,
    PutRequest,
    PutResponse,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)

KEYS = [b"a", b"b", b"b/1", b"b/2", b"c", b"d"]
RANGE_ENDS = [b"", b"\0", b"b0", b"c", b"zz", b"a"]
FIELDS = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision"}


class Gateway:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        request = urllib.request.Request(self.endpoint + path, data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except urllib.error.HTTPError as error:
            return {"error": json.loads(error.read())["message"]}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _etcd_kvs(items: list[dict[str, str]]) -> list[tuple[bytes, bytes, int, int, int]]:
    return [
        (
            base64.b64decode(item["key"]),
            base64.b64decode(item.get("value", "")),
            int(item.get("create_revision", 0)),
            int(item.get("mod_revision", 0)),
            int(item.get("version", 0)),
        )
        for item in items
    ]


def _synod_kvs(kvs: Any) -> list[tuple[bytes, bytes, int, int, int]]:
    items: list[KeyValue] = list(kvs)
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in items]


class Crosscheck:
    def __init__(self, gateway: Gateway, seed: int) -> None:
        self.etcd = gateway
        self.store = KVStore()
        self.rng = random.Random(seed)
        self.differences = 0

    def compare(self, label: object, etcd: object, synod: object) -> None:
        if etcd != synod:
            self.differences += 1
            print(f"DIFFERENT {label}\n  etcd  {etcd}\n  synod {synod}")

    def put(self) -> None:
        key, value = self.rng.choice(KEYS), bytes([self.rng.randrange(97, 100)])
        body = {"key": _b64(key), "value": _b64(value), "prev_kv": True}
        etcd = self.etcd.call("/v3/kv/put", body)
        response = self.store.apply(Command(PutRequest(key, value, prev_kv=True))).response
        assert isinstance(response, PutResponse)
        prev = [response.prev_kv] if response.prev_kv else []
        etcd_prev = [etcd["prev_kv"]] if "prev_kv" in etcd else []
        self.compare(
            ("put", key),
            (int(etcd["header"]["revision"]), _etcd_kvs(etcd_prev)),
            (response.header.revision, _synod_kvs(prev)),
        )

    def delete(self) -> None:
        key, end = self.rng.choice(KEYS), self.rng.choice(RANGE_ENDS)
        etcd = self.etcd.call("/v3/kv/deleterange", {"key": _b64(key), "range_end": _b64(end)})
        response = self.store.apply(Command(DeleteRangeRequest(key, end))).response
        self.compare(
            ("delete", key, end),
            (int(etcd["header"]["revision"]), int(etcd.get("deleted", 0))),
            (response.header.revision, getattr(response, "deleted", None)),
        )

    def range(self) -> None:
        rng, current = self.rng, self.store.revision
        key, end = rng.choice(KEYS), rng.choice(RANGE_ENDS)
        revision = rng.choice([0, 0, current - rng.randrange(0, 6), current + 1])
        limit = rng.choice([0, 0, 1, 2])
        order = rng.choice(["NONE", "ASCEND", "DESCEND"])
        target = rng.choice(["KEY", "VERSION", "CREATE", "MOD"])
        min_mod = rng.choice([0, 0, max(1, current - 5)])
        body = {
            "key": _b64(key),
            "range_end": _b64(end),
            "revision": revision,
            "limit": limit,
            "sort_order": order,
            "sort_target": target,
            "min_mod_revision": min_mod,
        }
        etcd = self.etcd.call("/v3/kv/range", body)
        request = RangeRequest(
            key,
            end,
            limit=limit,
            revision=revision,
            sort_order=SortOrder[order],
            sort_target=SortTarget[target],
            min_mod_revision=min_mod,
        )
        synod: Any
        expected: Any
        try:
            response = self.store.range(request)
            synod = [_synod_kvs(response.kvs), response.count, response.more]
            synod.append(response.header.revision)
        except KVError as error:
            synod = error.message
        if "error" in etcd:
            expected = etcd["error"]
        else:
            expected = [_etcd_kvs(etcd.get("kvs", [])), int(etcd.get("count", 0))]
            expected += [etcd.get("more", False), int(etcd["header"]["revision"])]
        if target != "KEY" and isinstance(synod, list) and isinstance(expected, list):
            if limit:
                synod, expected = synod[1:], expected[1:]
            else:
                synod[0], expected[0] = sorted(synod[0]), sorted(expected[0])
        self.compare(("range", body), expected, synod)

    def txn(self) -> None:
        rng = self.rng
        compare_key, number = rng.choice(KEYS), rng.randrange(0, 3)
        target = rng.choice(list(FIELDS))
        result = rng.choice(["EQUAL", "GREATER", "LESS", "NOT_EQUAL"])
        put_key, delete_key, delete_end = rng.choice(KEYS), rng.choice(KEYS), rng.choice(RANGE_ENDS)
        body = {
            "compare": [
                {
                    "target": target,
                    "result": result,
                    "key": _b64(compare_key),
                    FIELDS[target]: number,
                }
            ],
            "success": [
                {"request_put": {"key": _b64(put_key), "value": _b64(b"t")}},
                {"request_range": {"key": _b64(b"a"), "range_end": _b64(b"\0")}},
            ],
            "failure": [
                {"request_delete_range": {"key": _b64(delete_key), "range_end": _b64(delete_end)}}
            ],
        }
        etcd = self.etcd.call("/v3/kv/txn", body)
        compare = Compare(
            CompareResult[result], CompareTarget[target], compare_key, **{FIELDS[target]: number}
        )
        request = TxnRequest(
            compare=(compare,),
            success=(PutRequest(put_key, b"t"), RangeRequest(b"a", b"\0")),
            failure=(DeleteRangeRequest(delete_key, delete_end),),
        )
        synod: object
        try:
            response = self.store.apply(Command(request)).response
            assert isinstance(response, TxnResponse)
            synod = (response.succeeded, response.header.revision)
        except KVError as error:
            synod = error.message
        expected = etcd.get("error") or (
            etcd.get("succeeded", False),
            int(etcd["header"]["revision"]),
        )
        self.compare(("txn", body), expected, synod)

    def compact(self) -> None:
        revision = self.store.revision - self.rng.randrange(-1, 8)
        etcd = self.etcd.call("/v3/kv/compaction", {"revision": revision})
        try:
            self.store.apply(Command(CompactionRequest(revision)))
            synod = "ok"
        except KVError as error:
            synod = error.message
        self.compare(("compact", revision), etcd.get("error", "ok"), synod)

    def run(self, steps: int) -> int:
        actions = [self.put, self.put, self.delete, self.range, self.txn, self.compact]
        for _ in range(steps):
            self.rng.choice(actions)()
        print(f"{steps} operations, revision {self.store.revision}, {self.differences} differ")
        return self.differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:23791")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=400)
    arguments = parser.parse_args()
    differences = Crosscheck(Gateway(arguments.endpoint), arguments.seed).run(arguments.steps)
    raise SystemExit(1 if differences else 0)


if __name__ == "__main__":
    main()
