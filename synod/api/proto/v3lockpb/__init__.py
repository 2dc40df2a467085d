"""Generated stubs of the etcd v3 protobuf package v3lockpb (see scripts/gen_protos.py)."""
