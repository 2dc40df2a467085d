"""Synod: a distributed consensus and coordination service (Multi-Paxos, etcd v3 API)."""

if not __debug__:  # pragma: no cover - depends on interpreter flags
    raise SystemExit("synod refuses to run with python -O: its safety assertions would vanish")

__version__ = "0.1.0"
