"""The pure Multi-Paxos core: no I/O, no clock, no threads, no global randomness."""
