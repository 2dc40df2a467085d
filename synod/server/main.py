"""The member process: configuration from etcd-style flags (or SYNOD_* variables), the data
directory's identity check, and the asyncio life of one member: KV service, member runtime,
the client doors, the watch progress timer, and a clean stop on SIGTERM or SIGINT.

The data directory remembers which cluster and member it belongs to (`synod-member`, written
at first start); a later start with flags naming another cluster or member is refused
rather than mixing two clusters' logs.

Client doors: `start_client_door(handlers, address)` is the one place that decides what
listens on a client URL (today the etcd gRPC API; the JSON gateway and the port multiplexer
plug in there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgpack

from synod.api.front_door import EtcdClientPort, start_etcd_client_port
from synod.api.grpc_server import start_grpc
from synod.api.grpc_workers import GrpcWorkers
from synod.api.handlers import Handlers
from synod.api.metrics import SynodMetrics, member_sampler
from synod.api.native import NativeDoor, start_native_door
from synod.api.proto.native_wire import NATIVE_PORT_OFFSET
from synod.paxos.config import Config as CoreConfig
from synod.paxos.config import ConfigError as CoreConfigError
from synod.server.collector import tune_collector
from synod.server.config import (
    ConfigError,
    JoinedCluster,
    ServerConfig,
    Url,
    parse_initial_cluster,
    parse_urls,
)
from synod.server.kv_service import KvService
from synod.server.member import Member
from synod.server.members import MemberTable, TableError
from synod.storage.errors import StorageError
from synod.transport.codec import WireError
from synod.transport.peer import query_cluster

log = logging.getLogger("synod.server")

MEMBER_FILE = "synod-member"
JOIN_FILE = "synod-join"  # the table a joining member learned (its bootstrap table)
JOIN_WAIT_S = 10.0
JOIN_RETRY_S = 0.5
PROGRESS_NOTIFY_INTERVAL_S = 10.0  # etcd: 10 minutes; shorter is allowed and cheaper to test
STOP_GRACE_S = 1.0
REMOVED_EXIT_GRACE_S = 1.0
EVENT_LOOP_ENV = "SYNOD_EVENT_LOOP"
PORT_MAX = 65535


class StartError(Exception):
    """The member cannot start (busy port, unusable data dir); the message says why."""


class ClientDoor(Protocol):
    """Something listening for clients that can be stopped (a grpc.aio.Server, ...)."""

    async def stop(self, grace: float | None) -> None: ...


ClientDoorFactory = Callable[[Handlers, str], Awaitable[ClientDoor]]


# --------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class Flag:
    name: str
    default: str
    help: str

    @property
    def env(self) -> str:
        return "SYNOD_" + self.name.upper().replace("-", "_")


FLAGS = (
    Flag("name", "default", "human-readable name of this member"),
    Flag("data-dir", "", "path to the data directory (default: NAME.synod)"),
    Flag("listen-client-urls", "http://localhost:2379", "URLs to listen on for clients"),
    Flag("advertise-client-urls", "", "client URLs told to clients (default: listen URLs)"),
    Flag("listen-peer-urls", "http://localhost:2380", "URL to listen on for peers"),
    Flag("initial-advertise-peer-urls", "", "this member's peer URL (default: listen peer URL)"),
    Flag("initial-cluster", "", "NAME=PEER_URL,... of every member (default: this one)"),
    Flag("initial-cluster-state", "new", "new or existing"),
    Flag("initial-cluster-token", "synod-cluster", "token that makes cluster ids unique"),
    Flag(
        "initial-cluster-client-urls",
        "",
        "Synod only: NAME=CLIENT_URL,... of the other members, for member list",
    ),
    Flag(
        "listen-native-url",
        "",
        "Synod only: URL for Synod's native client door, on the host of the first client URL "
        "(default: its port + 2; 'off': none)",
    ),
    Flag("heartbeat-interval", "100", "time of one heartbeat (a core tick), in ms"),
    Flag("election-timeout", "1000", "election timeout in ms"),
    Flag("snapshot-count", "10000", "applied slots between snapshots"),
    Flag(
        "wal-fsync",
        "loop",
        "Synod only: 'loop' fsyncs the log on the event loop (lowest cost per round), "
        "'thread' on a committer thread (for a disk whose fsync takes milliseconds)",
    ),
    Flag(
        "grpc-workers",
        "1",
        "Synod only: processes that serve the gRPC door beside the member, relaying to it "
        "over the native door (0: the member serves gRPC itself)",
    ),
    Flag("log-level", "info", "debug, info, warning or error"),
)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The etcd-style flags; each defaults to its SYNOD_* environment variable."""
    for flag in FLAGS:
        parser.add_argument(
            "--" + flag.name,
            default=os.environ.get(flag.env, flag.default),
            help=f"{flag.help} [env {flag.env}]",
        )


def _int_flag(value: str, flag: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"--{flag} must be an integer, not {value!r}") from None
    if number < minimum:
        raise ConfigError(f"--{flag} must be at least {minimum}")
    return number


def _client_urls_of(text: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    found: dict[str, list[str]] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, url = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"bad --initial-cluster-client-urls item {item!r}: NAME=URL")
        found.setdefault(name.strip(), []).append(str(Url.parse(url)))
    return tuple((name, tuple(urls)) for name, urls in sorted(found.items()))


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """Validate the flags into a ServerConfig; ConfigError says what is wrong."""
    name = args.name.strip()
    if not name:
        raise ConfigError("--name must not be empty")
    listen_clients = parse_urls(args.listen_client_urls, "--listen-client-urls")
    advertise_clients = (
        parse_urls(args.advertise_client_urls, "--advertise-client-urls")
        if args.advertise_client_urls.strip()
        else listen_clients
    )
    listen_peers = parse_urls(args.listen_peer_urls, "--listen-peer-urls")
    if len(listen_peers) != 1:
        raise ConfigError("--listen-peer-urls takes exactly one URL")
    advertise_peer = (
        parse_urls(args.initial_advertise_peer_urls, "--initial-advertise-peer-urls")[0]
        if args.initial_advertise_peer_urls.strip()
        else listen_peers[0]
    )
    cluster_text = args.initial_cluster.strip() or f"{name}={advertise_peer}"
    token = args.initial_cluster_token.strip()
    if not token:
        raise ConfigError("--initial-cluster-token must not be empty")
    cluster = parse_initial_cluster(cluster_text, token)
    mine = [peer for peer in cluster if peer.name == name]
    if not mine:
        raise ConfigError(f"--name {name!r} is not in --initial-cluster {cluster_text!r}")
    if mine[0].peer_url != advertise_peer:
        raise ConfigError(
            f"--initial-cluster gives {name!r} the peer URL {mine[0].peer_url}, but "
            f"--initial-advertise-peer-urls is {advertise_peer}"
        )
    if args.initial_cluster_state not in ("new", "existing"):
        raise ConfigError("--initial-cluster-state must be 'new' or 'existing'")
    heartbeat_ms = _int_flag(args.heartbeat_interval, "heartbeat-interval", 1)
    election_ms = _int_flag(args.election_timeout, "election-timeout", 1)
    if election_ms < 3 * heartbeat_ms:
        raise ConfigError("--election-timeout must be at least 3 times --heartbeat-interval")
    core = CoreConfig(heartbeat_ticks=1, election_ticks=election_ms // heartbeat_ms)
    try:
        core.validate()
    except CoreConfigError as error:
        raise ConfigError(str(error)) from error
    native_port = _native_port(args.listen_native_url, listen_clients[0])
    return ServerConfig(
        name=name,
        data_dir=args.data_dir.strip() or f"{name}.synod",
        listen_client_urls=listen_clients,
        advertise_client_urls=advertise_clients,
        listen_peer_url=listen_peers[0],
        initial_cluster=cluster,
        initial_cluster_state=args.initial_cluster_state,
        initial_cluster_token=token,
        tick_ms=heartbeat_ms,
        snapshot_every_slots=_int_flag(args.snapshot_count, "snapshot-count", 1),
        core=core,
        client_urls_of=_client_urls_of(args.initial_cluster_client_urls),
        native_port=native_port,
        wal_fsync=_choice_flag(args.wal_fsync, "wal-fsync", ("loop", "thread")),
        grpc_workers=_int_flag(args.grpc_workers, "grpc-workers", 0),
    )


def _choice_flag(value: str, flag: str, choices: tuple[str, ...]) -> str:
    value = value.strip().lower()
    if value not in choices:
        raise ConfigError(f"--{flag} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _native_port(text: str, first_client: Url) -> int | None:
    """The native door's port: beside the first client URL unless given; None when 'off'."""
    text = text.strip()
    if text.lower() in ("off", "none"):
        return None
    if not text:
        if not first_client.port:
            return 0
        port = first_client.port + NATIVE_PORT_OFFSET
        return port if port <= PORT_MAX else None
    url = Url.parse(text)
    if url.host != first_client.host:
        raise ConfigError(
            f"--listen-native-url {text!r} must be on the host of the first client URL "
            f"({first_client.host})"
        )
    return url.port


# --------------------------------------------------------------------------- data dir


def check_data_dir(config: ServerConfig) -> None:
    """Create the data dir, check it is writable and belongs to this cluster and member;
    record both ids at first start."""
    path = Path(config.data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StartError(f"cannot create data dir {path}: {error.strerror}") from error
    probe = path / ".synod-write-probe"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise StartError(f"data dir {path} is not writable: {error.strerror}") from error
    identity = f"cluster_id={config.cluster_id:016x}\nmember_id={config.member_id:016x}\n"
    record = path / MEMBER_FILE
    if record.exists():
        found = record.read_text(errors="replace")
        if found != identity:
            raise StartError(
                f"data dir {path} belongs to another cluster or member ({_one_line(found)}); "
                f"these flags give {_one_line(identity)} (check --name, --initial-cluster "
                f"and --initial-cluster-token, or use another --data-dir)"
            )
        return
    temporary = path / (MEMBER_FILE + ".tmp")
    with open(temporary, "w") as out:
        out.write(identity)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, record)


def _with_recorded_cluster(config: ServerConfig) -> ServerConfig:
    """A member that restarts keeps the cluster id its data dir records, whatever
    --initial-cluster now lists (members added and removed since change the id derived from
    it; etcd too ignores --initial-cluster once the data dir exists). Only when the flags
    name the same member: a data dir of another member is still refused."""
    if config.joined is not None:
        return config
    record = Path(config.data_dir) / MEMBER_FILE
    try:
        fields = dict(line.split("=", 1) for line in record.read_text().splitlines() if "=" in line)
        cluster_id = int(fields["cluster_id"], 16)
        member_id = int(fields["member_id"], 16)
    except (OSError, KeyError, ValueError):
        return config
    if member_id != config.member_id or cluster_id == config.cluster_id:
        return config
    log.info(
        "data dir %s belongs to cluster %016x: --initial-cluster (which gives %016x) is "
        "not used by a member that already started",
        config.data_dir,
        cluster_id,
        config.cluster_id,
    )
    return dataclasses.replace(config, recorded_cluster_id=cluster_id)


def _one_line(text: str) -> str:
    return ", ".join(line for line in text.splitlines() if line)


# --------------------------------------------------------------------------- joining


async def join_config(config: ServerConfig) -> ServerConfig:
    """`--initial-cluster-state existing`: the config of a member joining a running
    cluster. At first start it asks the other members named in --initial-cluster for the
    cluster id and member table, finds its own id by its peer URL (given to MemberAdd) and
    records both; later starts read the record (the flags no longer matter, as in etcd)."""
    path = Path(config.data_dir) / JOIN_FILE
    if path.exists():
        return _joined_from(config, path.read_bytes())
    if (Path(config.data_dir) / MEMBER_FILE).exists():
        return config  # a member of the original cluster restarted with 'existing'
    answer = await _ask_cluster(config)
    joined = _joined_from(config, answer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        with open(temporary, "wb") as out:
            out.write(answer)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise StartError(f"cannot record the joined cluster in {path}: {error}") from error
    return joined


async def _ask_cluster(config: ServerConfig) -> bytes:
    """The first answer (cluster id, member table) that lists this member's peer URL. A
    member that has not applied the MemberAdd yet answers without it: ask the others, and
    ask again for a while."""
    me = str(config.me.peer_url)
    others = [p for p in config.initial_cluster if p.name != config.name]
    if not others:
        raise StartError(
            "--initial-cluster-state existing needs the running members in --initial-cluster"
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + JOIN_WAIT_S
    while True:
        failures = []
        for peer in others:
            try:
                answer = await query_cluster(peer.peer_url.host, peer.peer_url.port, me)
            except (OSError, TimeoutError, WireError) as error:
                failures.append(f"{peer.name} ({peer.peer_url}): {error!r}")
                continue
            if isinstance(answer, list) and len(answer) == 2 and isinstance(answer[1], bytes):
                packed: bytes = msgpack.packb(answer)
                try:
                    _joined_from(config, packed)
                except StartError as error:
                    failures.append(f"{peer.name} ({peer.peer_url}): {error}")
                    continue
                return packed
            failures.append(f"{peer.name} ({peer.peer_url}): no cluster answer")
        if loop.time() > deadline:
            raise StartError("cannot join: " + "; ".join(failures))
        log.info("cannot join yet, asking again: %s", "; ".join(failures))
        await asyncio.sleep(JOIN_RETRY_S)


def _joined_from(config: ServerConfig, answer: bytes) -> ServerConfig:
    try:
        cluster_id, table_bytes = msgpack.unpackb(answer)
        table = MemberTable.decode(table_bytes)
    except (ValueError, TypeError, TableError, msgpack.UnpackException) as error:
        raise StartError(f"cannot join: bad answer about the cluster: {error}") from error
    me = str(config.me.peer_url)
    found = [m for m in table.members if me in {_normal_url(u) for u in m.peer_urls}]
    if not found:
        raise StartError(
            f"cannot join: the cluster has no member with peer URL {me}; add it first "
            f"(synod ctl member add {config.name} --peer-urls {me})"
        )
    joined = JoinedCluster(int(cluster_id), found[0].member_id, table.encode())
    return dataclasses.replace(config, joined=joined)


def _normal_url(text: str) -> str:
    try:
        return str(Url.parse(text))
    except ConfigError:
        return text


# --------------------------------------------------------------------------- running


def _address(url: Url) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}"


async def start_client_door(handlers: Handlers, address: str) -> ClientDoor:
    """The etcd gRPC door alone on one listen address (tests that need no gateway)."""
    server: ClientDoor = await start_grpc(handlers, address)
    return server


async def _progress_notifier(service: KvService, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        service.progress_notify()


async def run_member(
    config: ServerConfig,
    stop: asyncio.Event,
    client_door: ClientDoorFactory | None = None,
    progress_interval_s: float = PROGRESS_NOTIFY_INTERVAL_S,
) -> None:
    """Run one member until `stop` is set; StartError if it cannot start.

    By default each client URL serves gRPC and the JSON gateway on one port (the front
    door), with the member's Prometheus metrics on /metrics.
    """
    if config.initial_cluster_state == "existing":
        config = await join_config(config)
    config = _with_recorded_cluster(config)
    check_data_dir(config)
    service = KvService(election_timeout_ms=config.tick_ms * config.core.election_ticks)
    member = Member(config, service)
    if client_door is None:
        metrics = SynodMetrics(member_sampler(member, service))
        member.observer = metrics

        async def front_door(handlers: Handlers, address: str) -> ClientDoor:
            return await start_etcd_client_port(handlers, address, metrics)

        client_door = front_door
    try:
        await member.start()
    except StorageError as error:
        raise StartError(f"data dir {config.data_dir}: {error}") from error
    except OSError as error:
        raise StartError(
            f"cannot listen for peers on {config.listen_peer_url}: {error.strerror or error}"
        ) from error
    doors: list[ClientDoor] = []
    progress: asyncio.Task[None] | None = None
    try:
        handlers = Handlers(member, service, config)
        for url in config.listen_client_urls:
            try:
                doors.append(await client_door(handlers, _address(url)))
            except OSError as error:
                raise StartError(f"cannot listen for clients on {url}: {error}") from error
        native: NativeDoor | None = None
        if config.native_port is not None:
            native_host = config.listen_client_urls[0].host
            try:
                native = await start_native_door(handlers, (native_host, config.native_port))
                doors.append(native)
            except OSError as error:
                # clients fall back to gRPC without it: a busy port is worth a loud line only
                log.error("native door NOT serving on port %d: %s", config.native_port, error)
        workers = _start_grpc_workers(config, native, doors)
        if workers is not None:
            doors.insert(0, workers)
        progress = asyncio.create_task(_progress_notifier(service, progress_interval_s))
        log.info(
            "member %s (%016x) of cluster %016x serving clients on %s",
            config.name,
            config.member_id,
            config.cluster_id,
            ", ".join(str(url) for url in config.listen_client_urls),
        )
        await _until_stopped(stop, member)
        log.info("stopping member %s", config.name)
        if not member.removed.is_set():
            await member.hand_over_leadership()
    finally:
        if progress is not None:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
        for door in doors:
            await door.stop(STOP_GRACE_S)
        await member.stop()


def _start_grpc_workers(
    config: ServerConfig, native: NativeDoor | None, doors: list[ClientDoor]
) -> GrpcWorkers | None:
    """The member's gRPC workers, relaying to its native door and proxying the rest to the
    first client port's own gRPC server; None when there are none to start."""
    ports = [door for door in doors if isinstance(door, EtcdClientPort)]
    if config.grpc_workers == 0 or native is None or not ports:
        return None
    host, port = native.address
    workers = GrpcWorkers(
        config.grpc_workers,
        f"{host or '127.0.0.1'}:{port}",
        ports[0].door.grpc_target,
        logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
    )
    workers.start()
    for client_port in ports:
        client_port.door.workers = workers.targets
    return workers


async def _until_stopped(stop: asyncio.Event, member: Member) -> None:
    """Return when asked to stop, or once the cluster removed this member (after a short
    grace, so the answer to the request that removed it still leaves)."""
    stopping = asyncio.create_task(stop.wait())
    removed = asyncio.create_task(member.removed.wait())
    try:
        await asyncio.wait([stopping, removed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        removed.cancel()
    if member.removed.is_set() and not stop.is_set():
        log.warning("the member has been permanently removed from the cluster; exiting")
        await asyncio.sleep(REMOVED_EXIT_GRACE_S)


async def _serve(config: ServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_member(config, stop)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed, unless SYNOD_EVENT_LOOP=asyncio asks for asyncio's own."""
    if os.environ.get(EVENT_LOOP_ENV, "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def serve(config: ServerConfig) -> int:
    """Run the member in this process; the exit status."""
    if not __debug__:
        print(
            "synod serve: refusing to run under python -O (assertions guard safety)",
            file=sys.stderr,
        )
        return 2
    loop_factory = _loop_factory()
    tune_collector()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve(config))
    except StartError as error:
        print(f"synod serve: {error}", file=sys.stderr)
        return 1
    return 0


def setup_logging(level: str, name: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigError(f"--log-level must be debug, info, warning or error, not {level!r}")
    logging.basicConfig(
        level=numeric, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s"
    )
