"""The deterministic simulator: real cores, the real driver and real storage code under a
virtual clock, a virtual network and a simulated disk, all from one integer seed.

Modules, one job each: `rng` (named seeded streams), `loop` (virtual time and the event
heap), `network` (delay, loss, duplication, reordering, partitions, clogging), `storage` (a
record-level storage model with torn saves) and `disk` (the production WAL on an in-memory
disk), `kvmachine` (the replicated key-value state machine with sessions), `client`
(simulated clients with timeouts), `member` (a core's life cycle: crash and restart),
`faults` (knobs drawn per seed and the fault scheduler), `invariants` (safety checked after
every event), `history` and `linearizability` (the client history and its checker),
`world` (one run: safety phase, then liveness phase), `cli` (`synod sim`), `demo`
(`synod demo`).

Run `synod sim --seed 1 --runs 50 --nodes 3`; a failure prints the violated property, the
last events and the one command that reproduces it.
"""
