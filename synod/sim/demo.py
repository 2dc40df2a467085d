"""`synod demo`: a short, calm simulated cluster that shows the life of a Synod cluster in
virtual time, with no processes and no network (`synod up` runs real member processes).

The demo runs the real core, driver and a key-value state machine in the simulator with no
random faults, crashes the leader once, lets it recover, and reports what happened: who was
elected, how many writes were committed, the crash and the recovery, and that every member
ends in the same state. It says plainly that it is a simulation.
"""

from __future__ import annotations

from synod.paxos.node import Role
from synod.sim.world import RunOptions, World

DEMO_SAFETY_US = 3_000_000
CRASH_AT_US = 1_000_000


def run_demo(members: int, seed: int) -> tuple[bool, list[str]]:
    """Run the demo cluster; returns whether it ended healthy and the lines to print."""
    assert 1 <= members <= 9
    world = World(RunOptions(seed, members, "calm", DEMO_SAFETY_US))
    world.loop.schedule_at(CRASH_AT_US, "demo: crash the leader", lambda: _crash_leader(world))
    result = world.run()
    lines = [
        f"synod demo: SIMULATION - {members} members (seed {seed}) run the real Multi-Paxos "
        "core, driver and storage in virtual time; no processes, no network.",
    ]
    notes = [
        (time_us, f"member {member} elected leader (ballot {ballot})")
        for time_us, member, ballot in world.leaders
    ]
    notes += world.life_events
    for time_us, text in sorted(notes):
        lines.append(f"  {time_us / 1000:9.1f} ms  {text}")
    lines.append(
        f"  writes committed and acknowledged: {world.monitor.acknowledged_count}; "
        f"client operations checked for linearizability: {result.operations_checked}"
    )
    lines += _final_states(world)
    if result.ok:
        lines.append(f"  healthy after {result.simulated_us / 1_000_000:.2f} simulated seconds")
    else:
        lines.append(result.report())
    return result.ok, lines


def _crash_leader(world: World) -> None:
    for member_id in world.ids:
        member = world.members[member_id]
        if member.node is not None and member.node.role is Role.LEADER:
            world.crash(member_id, "demo: the leader is killed")
            return


def _final_states(world: World) -> list[str]:
    states: dict[int, tuple[int, bytes]] = {}
    lines: list[str] = []
    for member_id in world.ids:
        member = world.members[member_id]
        if not member.up:
            lines.append(f"  member {member_id}: down")
            continue
        machine = member.machine
        states[member_id] = (machine.applied_slot, machine.digest())
        lines.append(
            f"  member {member_id}: applied through slot {machine.applied_slot}, "
            f"state digest {machine.digest().hex()[:16]}"
        )
    first = next(iter(states.values()), None)
    if len(states) == len(world.ids) and all(state == first for state in states.values()):
        lines.append("  final state is equal on all members")
    else:
        lines.append("  final states differ between members")
    return lines
