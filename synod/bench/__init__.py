"""`synod bench`: throughput, latency percentiles and CPU per operation of an etcd-compatible
cluster (Synod or etcd), measured by many client processes, with an optional side-by-side run
against a 3-member etcd and a null gRPC server. See docs/bench.md."""
