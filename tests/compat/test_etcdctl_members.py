"""The real etcdctl 3.4's member commands against a real etcd 3.4 and against Synod.

Goal: `etcdctl member add|list|promote|update|remove` work unchanged against Synod and print
what they print against etcd, refusals included (ETCD_COMPAT.md). Method: one single-member
etcd and one single-member Synod on free loopback ports; the same script of etcdctl
commands runs against both; the transcripts (exit status, stdout, the `Error:` line) are
compared after replacing member ids, cluster ids and URLs, which differ by nature. Skipped
only when the etcd or etcdctl binary is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.test_client_vs_etcd import running_etcd
from tests.integration.cluster import free_ports, launch

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        ETCD is None or ETCDCTL is None,
        reason="etcd and etcdctl binaries not on PATH (install Debian's etcd-server, etcd-client)",
    ),
]

HEX_ID = re.compile(r"\b[0-9a-f]{6,16}\b")
URL = re.compile(r"https?://127\.0\.0\.1:\d+")


def etcdctl(endpoint: str, *args: str) -> tuple[int, str, str]:
    assert ETCDCTL is not None
    result = subprocess.run(
        [ETCDCTL, f"--endpoints={endpoint}", "--command-timeout=5s", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, ETCDCTL_API="3"),
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    return result.returncode, result.stdout, errors[-1] if errors else ""


def normalize(text: str) -> str:
    """Ids, URLs and the first member's name replaced; lines listing members (ordered by
    random ids) sorted."""
    for name in ("client-compat", "m0"):
        text = text.replace(f", {name},", ", <NAME>,").replace(f"{name}=", "<NAME>=")
    text = HEX_ID.sub("<ID>", URL.sub("<URL>", text))
    text = re.sub(r" +<ID>", " <ID>", text)  # %16x pads ids with spaces
    lines = []
    for line in text.splitlines():
        if line.startswith("ETCD_INITIAL_CLUSTER="):
            items = line.removeprefix("ETCD_INITIAL_CLUSTER=").strip('"').split(",")
            line = 'ETCD_INITIAL_CLUSTER="' + ",".join(sorted(items)) + '"'
        lines.append(line)
    if lines and all(line.count(", ") == 5 for line in lines):
        lines.sort()
    return "".join(line + "\n" for line in lines)


def transcript(endpoint: str) -> list[tuple[int, str, str]]:
    """The script, run against one server; ids looked up from `member list`."""
    learner_url, other_url, moved_url = (f"http://127.0.0.1:{p}" for p in free_ports(3))
    steps: list[tuple[int, str, str]] = []

    def run(*args: str) -> tuple[int, str, str]:
        outcome = etcdctl(endpoint, *args)
        steps.append((outcome[0], normalize(outcome[1]), normalize(outcome[2])))
        return outcome

    def id_of(url: str) -> str:
        for line in etcdctl(endpoint, "member", "list")[1].splitlines():
            if url in line:
                return line.split(",")[0]
        raise AssertionError(f"no member with {url}")

    run("member", "list")
    voter = etcdctl(endpoint, "member", "list")[1].split(",")[0]
    run("member", "add", "newbie", f"--peer-urls={learner_url}", "--learner")
    run("member", "list")
    learner = id_of(learner_url)
    run("member", "add", "second", f"--peer-urls={other_url}", "--learner")
    # The voter's own line (member list is ordered by id, and a learner's random id may sort
    # first: re-adding a learner's URL in the same second makes etcd answer "member ID
    # already exist", its id being a hash of the URLs and the time in seconds).
    listed = etcdctl(endpoint, "member", "list")[1].splitlines()
    voter_url = next(line for line in listed if line.endswith(", false")).split(", ")[3]
    run("member", "add", "again", f"--peer-urls={voter_url}", "--learner")
    run("member", "promote", learner)
    run("member", "promote", voter)
    run("member", "promote", "ffff")
    run("member", "update", "ffff", f"--peer-urls={moved_url}")
    run("member", "update", learner, f"--peer-urls={moved_url}")
    run("member", "remove", learner)
    run("member", "remove", learner)
    run("member", "list")
    return steps


@pytest.fixture(scope="module")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from running_etcd(tmp_path_factory)


def test_member_commands_print_what_etcd_prints(etcd_endpoint: str, tmp_path: Path) -> None:
    expected = transcript(etcd_endpoint)
    cluster = launch(tmp_path, size=1, token="ctl-members")
    try:
        got = transcript(cluster.endpoints[0])
    finally:
        cluster.stop_all()
    for number, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, f"step {number}: etcd {want!r}, synod {have!r}"
    assert expected[1][1].startswith("Member <ID> added to cluster <ID>\n")
    assert expected[-3][2] == "" and expected[-2][2] == "Error: etcdserver: member not found\n"
