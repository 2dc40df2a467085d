"""Generated stubs of the etcd v3 protobuf package mvccpb (see scripts/gen_protos.py)."""
