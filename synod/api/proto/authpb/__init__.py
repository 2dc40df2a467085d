"""Generated stubs of the etcd v3 protobuf package authpb (see scripts/gen_protos.py)."""
