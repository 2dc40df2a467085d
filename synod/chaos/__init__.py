"""Fault testing with real processes: a cluster of `synod serve` members behind
fault-injecting peer proxies, client workloads that record a history, a nemesis that kills,
pauses, partitions, slows fsync and jumps clocks, and the checks after healing
(linearizability, acknowledged writes, convergence, fencing). See docs/chaos.md.
"""
