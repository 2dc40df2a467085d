"""Synod's etcd v3 wire contract: .proto sources and their generated Python stubs.

One subpackage per protobuf package, named as etcd names them (etcdserverpb, mvccpb,
authpb, v3lockpb, v3electionpb). Regenerate with ``python scripts/gen_protos.py``.
"""
