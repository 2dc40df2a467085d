"""Plant known bugs in a scratch copy of the core and count the seeds the simulator needs to
catch each one (issue 2's acceptance check). Never touches the working tree.

    python scripts/planted_bugs.py [--seeds 300] [--nodes 3] [--bug NAME]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERDICT = re.compile(r"^seed \d+: (?!ok)")

# name -> (file, original text, planted text)
BUGS: dict[str, tuple[str, str, str]] = {
    "skip-reproposal": (
        "synod/paxos/node.py",
        "            found = chosen_candidates.get(slot)\n",
        "            found = None\n",
    ),
    "reply-before-persist": (
        "synod/paxos/node.py",
        "        self._persisted_messages.append(\n"
        "            AcceptReply(\n"
        "                self.node_id,\n"
        "                message.src,\n"
        "                message.ballot,\n"
        "                True,\n"
        "                self._match_slot,\n"
        "                message.read_round,",
        "        self._messages.append(\n"
        "            AcceptReply(\n"
        "                self.node_id,\n"
        "                message.src,\n"
        "                message.ballot,\n"
        "                True,\n"
        "                self._match_slot,\n"
        "                message.read_round,",
    ),
    "promise-before-persist": (
        "synod/paxos/node.py",
        "        self._persisted_messages.append(\n"
        "            Promise(self.node_id, message.src, message.ballot, True,",
        "        self._messages.append(\n"
        "            Promise(self.node_id, message.src, message.ballot, True,",
    ),
    "wrong-quorum": (
        "synod/paxos/types.py",
        "        return len(self.voters) // 2 + 1\n",
        "        return max(1, len(self.voters) // 2)\n",
    ),
    "read-without-quorum-round": (
        "synod/paxos/node.py",
        "        confirmed_round = rounds[self._membership.quorum() - 1]\n",
        "        confirmed_round = rounds[0]\n",
    ),
    # Membership changes (run with the simulator's --reconfig).
    "config-quorum-of-own-view-only": (
        "synod/paxos/node.py",
        "        if all(config.is_quorum(promised) for config in chain):\n",
        "        if self._membership.is_quorum(promised):\n",
    ),
    "two-voters-at-once": (
        "synod/paxos/node.py",
        "        if len(changed_voters) > 1:\n",
        "        if len(changed_voters) > 2:\n",
    ),
    "change-before-previous-committed": (
        "synod/paxos/node.py",
        "        if self._config_slots and self._config_slots[-1] > self._commit_slot:\n",
        "        if False:\n",
    ),
}
RECONFIG_BUGS = {
    "config-quorum-of-own-view-only",
    "two-voters-at-once",
    "change-before-previous-committed",
}


def plant(scratch: Path, name: str) -> None:
    relative, original, planted = BUGS[name]
    path = scratch / relative
    text = path.read_text()
    if original not in text:
        raise SystemExit(f"bug {name}: the code it patches moved; update scripts/planted_bugs.py")
    path.write_text(text.replace(original, planted, 1))


def seeds_to_catch(name: str, seeds: int, nodes: int, first_seed: int) -> tuple[int, str] | None:
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        shutil.copytree(ROOT / "synod", scratch / "synod")
        plant(scratch, name)
        for offset in range(seeds):
            seed = first_seed + offset
            completed = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "synod.cli",
                    "sim",
                    "--seed",
                    str(seed),
                    "--runs",
                    "1",
                    "--nodes",
                    str(nodes),
                    *(["--reconfig"] if name in RECONFIG_BUGS else []),
                ],
                cwd=scratch,
                capture_output=True,
                text=True,
                check=False,
                env={"PYTHONPATH": str(scratch), "PATH": "/usr/bin:/bin"},
            )
            if completed.returncode != 0:
                verdicts = [line for line in completed.stdout.splitlines() if VERDICT.match(line)]
                return offset + 1, (verdicts[0] if verdicts else completed.stderr[-300:])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--bug", choices=sorted(BUGS), action="append")
    args = parser.parse_args()
    for name in args.bug or sorted(BUGS):
        caught = seeds_to_catch(name, args.seeds, args.nodes, args.first_seed)
        if caught is None:
            verdict = f"NOT caught in {args.seeds} seeds"
        else:
            verdict = f"caught after {caught[0]} seeds: {caught[1]}"
        print(f"{name}: {verdict}", flush=True)


if __name__ == "__main__":
    main()
