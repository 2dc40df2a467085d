"""`synod ctl` end to end against a real one-member Synod: etcdctl's simple output, `-w
json`, exit statuses and error lines, and the recipe commands (lock with the fencing token
in the child's environment, queue push/pop/ack, double barrier, elect --listen).

Method: `synod.client.ctl.main` in-process (output captured) for the quick commands, a
subprocess where a command must be interrupted. One `synod serve` on free ports."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from synod.client.ctl import main
from tests.integration.cluster import launch

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = launch(tmp_path_factory.mktemp("ctl"), size=1, token="ctl")
    try:
        yield cluster.endpoints[0]
    finally:
        cluster.stop_all()


def ctl(endpoint: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["ctl", "--endpoints", endpoint, *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_put_get_del_in_etcdctl_simple_format(
    endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ctl(endpoint, capsys, "put", "ctl/a", "1") == (0, "OK\n", "")
    ctl(endpoint, capsys, "put", "ctl/b", "2")
    assert ctl(endpoint, capsys, "get", "ctl/", "--prefix")[1] == "ctl/a\n1\nctl/b\n2\n"
    assert (
        ctl(endpoint, capsys, "get", "ctl/", "--prefix", "--keys-only", "--limit", "1")[1]
        == "ctl/a\n"
    )
    status, out, _ = ctl(endpoint, capsys, "-w", "json", "get", "ctl/a")
    data = json.loads(out)
    assert status == 0 and data["kvs"][0]["value"] == "MQ==" and data["count"] == "1"
    assert ctl(endpoint, capsys, "del", "ctl/", "--prefix")[1] == "2\n"


def test_txn_from_stdin(
    endpoint: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO('create("ctl/t") = "0"\n\nput ctl/t x\n\n'))
    assert ctl(endpoint, capsys, "txn")[1] == "SUCCESS\n\nOK\n"
    monkeypatch.setattr(
        sys, "stdin", io.StringIO('create("ctl/t") = "0"\n\nput ctl/t y\n\nget ctl/t\n')
    )
    assert ctl(endpoint, capsys, "txn")[1] == "FAILURE\n\nctl/t\nx\n"


def test_errors_are_one_line_with_a_non_zero_status(
    endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = ctl(endpoint, capsys, "put", "ctl/x", "1", "--lease", "1234")
    assert status == 1 and out == ""
    assert err.startswith("Error: etcdserver: requested lease not found")
    assert ctl(endpoint, capsys, "lease", "revoke", "zz")[0] == 2
    status, _, err = (
        main(["ctl", "--endpoints", "127.0.0.1:1", "--command-timeout", "0.5", "get", "x"]),
        "",
        capsys.readouterr().err,
    )
    assert status == 1 and "Error:" in err


def test_lease_member_and_endpoint_commands(
    endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = ctl(endpoint, capsys, "lease", "grant", "30")
    assert status == 0 and out.endswith("granted with TTL(30s)\n")
    lease = out.split()[1]
    assert (
        f"lease {lease} granted with TTL(30s), remaining("
        in ctl(endpoint, capsys, "lease", "timetolive", lease)[1]
    )
    assert lease in ctl(endpoint, capsys, "lease", "list")[1]
    assert (
        "keepalived with TTL(" in ctl(endpoint, capsys, "lease", "keep-alive", "--once", lease)[1]
    )
    assert ctl(endpoint, capsys, "lease", "revoke", lease)[1] == f"lease {lease} revoked\n"
    assert ", started, m0, " in ctl(endpoint, capsys, "member", "list")[1]
    assert ctl(endpoint, capsys, "endpoint", "status")[1].startswith(f"{endpoint}, ")
    assert "is healthy" in ctl(endpoint, capsys, "endpoint", "health")[1]
    revision = json.loads(ctl(endpoint, capsys, "-w", "json", "put", "ctl/c", "1")[1])
    assert ctl(endpoint, capsys, "compaction", revision["header"]["revision"])[0] == 0


def test_lock_runs_the_command_with_the_fencing_token(
    endpoint: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "token"
    status = main(
        [
            "ctl",
            "--endpoints",
            endpoint,
            "lock",
            "ctl/lock",
            "--ttl",
            "5",
            "--",
            "sh",
            "-c",
            f'echo "$SYNOD_FENCING_TOKEN" > {out}; exit 7',
        ]
    )
    assert status == 7
    assert int(out.read_text()) > 0


def test_queue_push_pop_ack_and_barrier(endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(endpoint, capsys, "queue", "push", "ctl/q", "hello")[0] == 0
    status, out, _ = ctl(endpoint, capsys, "queue", "pop", "ctl/q")
    receipt, payload = out.splitlines()
    assert status == 0 and payload == "hello"
    assert ctl(endpoint, capsys, "queue", "ack", "ctl/q", receipt)[1] == "OK\n"
    assert ctl(endpoint, capsys, "queue", "pop", "ctl/q")[0] == 1
    assert ctl(endpoint, capsys, "-w", "json", "queue", "size", "ctl/q")[1] == (
        '{"dead": 0, "in_flight": 0, "ready": 0}\n'
    )
    assert ctl(endpoint, capsys, "barrier", "enter", "ctl/b", "--n", "1", "--", "true")[0] == 0


def test_elect_and_listen(endpoint: str) -> None:
    command = [sys.executable, "-m", "synod.client.ctl", "ctl", "--endpoints", endpoint]
    listener = subprocess.Popen(
        [*command, "elect", "ctl/e", "--listen"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    candidate = subprocess.Popen(
        [*command, "elect", "ctl/e", "me"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert candidate.stdout is not None and listener.stdout is not None
        assert candidate.stdout.readline().startswith("ctl/e/")
        assert candidate.stdout.readline() == "me\n"
        assert listener.stdout.readline().startswith("ctl/e/")
        assert listener.stdout.readline() == "me\n"
        candidate.send_signal(signal.SIGTERM)
        assert candidate.wait(10) == 0
    finally:
        for process in (listener, candidate):
            process.send_signal(signal.SIGINT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_member_add_update_promote_remove_as_etcdctl(
    endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The member commands print what etcdctl prints (the flags to start the new member
    with, then one line per change) and refuse with etcd's reasons."""
    status, out, _ = ctl(
        endpoint, capsys, "member", "add", "late", "--peer-urls", "http://127.0.0.1:1", "--learner"
    )
    assert status == 0
    head, flags = out.split("\n\n")
    words = head.split()
    assert words[:1] == ["Member"] and words[2:5] == ["added", "to", "cluster"]
    new_id = words[1]
    assert flags.splitlines()[0] == 'ETCD_NAME="late"'
    assert "late=http://127.0.0.1:1" in flags and "m0=http://127.0.0.1:" in flags
    assert flags.splitlines()[-1] == 'ETCD_INITIAL_CLUSTER_STATE="existing"'
    listed = ctl(endpoint, capsys, "member", "list")[1]
    assert f"{new_id}, unstarted, , http://127.0.0.1:1, , true" in listed
    status, _, err = ctl(endpoint, capsys, "member", "promote", new_id)
    assert status == 1
    assert err.startswith(
        "Error: etcdserver: can only promote a learner member which is in sync with leader"
    )
    status, out, _ = ctl(
        endpoint, capsys, "member", "update", new_id, "--peer-urls", "http://127.0.0.1:2"
    )
    assert status == 0 and out.split()[:2] == ["Member", new_id] and "updated in cluster" in out
    status, out, _ = ctl(endpoint, capsys, "member", "remove", new_id)
    assert status == 0 and "removed from cluster" in out
    assert ctl(endpoint, capsys, "member", "remove", new_id)[2].startswith(
        "Error: etcdserver: member not found"
    )
    assert ctl(endpoint, capsys, "member", "remove", "not-hex")[0] == 2
    status, _, err = ctl(endpoint, capsys, "member", "add", "x", "--peer-urls", "notaurl")
    assert status == 2 and "URL scheme must be http, https, unix, or unixs" in err
