"""Generated stubs of the etcd v3 protobuf package v3electionpb (see scripts/gen_protos.py)."""
