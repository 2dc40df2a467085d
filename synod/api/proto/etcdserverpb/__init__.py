"""Generated stubs of the etcd v3 protobuf package etcdserverpb (see scripts/gen_protos.py)."""
