"""An in-memory disk for the simulator and the storage tests, behind the `FileSystem` seam.

Owns a namespace of directories and files and models what a real disk does on power loss:
bytes written but not fsynced, and directory changes (create, rename, remove) not followed by
an fsync of their directory, may be lost. `crash(rng)` keeps everything synced and, for each
file with unsynced bytes, draws from the passed `random.Random` whether to keep them, drop
them, tear them at a random point (a prefix of the new bytes survives) or flip one of them;
for each directory with unsynced changes it keeps a random prefix of them.

Faults on demand: `sync_error` makes the next fsync raise that error; `capacity_bytes`
makes writes past it raise ENOSPC; `crash_after_ops` makes the n-th next mutating operation
take effect and then raise `SimulatedCrash`, so a test can crash the WAL mid-write.

Invariants: a handle opened before a crash fails with EBADF afterwards, and a crash releases
directory locks (their process died); every draw comes from
the passed generator, in sorted path order, so a seed reproduces the same damage.
"""

from __future__ import annotations

import errno
import posixpath
import random
from dataclasses import dataclass, field

CRASH_CHOICES = ("keep", "drop", "tear", "flip")


class SimulatedCrash(Exception):
    """Raised by the operation at which an armed crash happens; call `MemDisk.crash` next."""


@dataclass(slots=True)
class _Inode:
    data: bytearray = field(default_factory=bytearray)
    durable: bytes = b""


@dataclass(frozen=True, slots=True)
class _DirOp:
    kind: str  # "link", "unlink" or "rename"
    path: str
    target: str = ""
    inode: _Inode | None = None


class MemFile:
    """A handle on one in-memory file; dead after a crash of its disk."""

    def __init__(self, disk: MemDisk, inode: _Inode, path: str) -> None:
        self.disk = disk
        self.inode = inode
        self.path = path
        self.generation = disk.generation
        self.closed = False

    def _check(self) -> None:
        if self.closed or self.generation != self.disk.generation:
            raise OSError(errno.EBADF, f"stale handle on {self.path}")

    def write_at(self, offset: int, data: bytes) -> None:
        self._check()
        assert offset >= 0
        end = offset + len(data)
        self.disk._reserve(max(0, end - len(self.inode.data)), self.path)
        if end > len(self.inode.data):
            self.inode.data.extend(bytes(end - len(self.inode.data)))
        self.inode.data[offset:end] = data
        self.disk._tick()

    def sync(self) -> None:
        self._check()
        self.disk.sync_count += 1
        if self.disk.sync_error is not None:
            error, self.disk.sync_error = self.disk.sync_error, None
            raise error
        self.inode.durable = bytes(self.inode.data)
        self.disk._tick()

    def truncate(self, size_bytes: int) -> None:
        self._check()
        if size_bytes < len(self.inode.data):
            del self.inode.data[size_bytes:]
        else:
            self.write_at(len(self.inode.data), bytes(size_bytes - len(self.inode.data)))
            return
        self.disk._tick()

    def allocate(self, size_bytes: int) -> None:
        if size_bytes > len(self.inode.data):
            self.truncate(size_bytes)

    def close(self) -> None:
        self.closed = True


class MemDisk:
    """Files in memory that lose, tear or corrupt what was not synced when `crash` is called."""

    def __init__(self, capacity_bytes: int | None = None) -> None:
        self.capacity_bytes = capacity_bytes
        self.sync_error: OSError | None = None
        self.crash_after_ops: int | None = None
        self.sync_count = 0
        self.generation = 0
        self._dirs: set[str] = {"/"}
        self._names: dict[str, _Inode] = {}
        self._durable_names: dict[str, _Inode] = {}
        self._pending: dict[str, list[_DirOp]] = {}
        self._locked: set[str] = set()

    # -- fault machinery --------------------------------------------------------------------

    def _tick(self) -> None:
        if self.crash_after_ops is None:
            return
        self.crash_after_ops -= 1
        if self.crash_after_ops <= 0:
            self.crash_after_ops = None
            raise SimulatedCrash("simulated power loss")

    def _reserve(self, grow_bytes: int, path: str) -> None:
        if self.capacity_bytes is None or grow_bytes == 0:
            return
        used = sum(len(inode.data) for inode in self._live_inodes())
        if used + grow_bytes > self.capacity_bytes:
            raise OSError(errno.ENOSPC, f"No space left on device: {path}")

    def _live_inodes(self) -> list[_Inode]:
        seen: dict[int, _Inode] = {}
        for path in sorted(self._names):
            inode = self._names[path]
            seen.setdefault(id(inode), inode)
        return list(seen.values())

    def crash(self, rng: random.Random) -> None:
        """Power loss: keep what was synced, draw the fate of everything else from `rng`."""
        for directory in sorted(self._pending):
            ops = self._pending[directory]
            for op in ops[: rng.randint(0, len(ops))]:
                self._apply_durable(op)
        self._pending.clear()
        self._names = dict(self._durable_names)
        for path in sorted(self._names):
            inode = self._names[path]
            if bytes(inode.data) != inode.durable:
                inode.data = bytearray(self._survivor(inode, rng))
            inode.durable = bytes(inode.data)
        self.generation += 1
        self._locked.clear()
        self.crash_after_ops = None
        self.sync_error = None

    @staticmethod
    def _survivor(inode: _Inode, rng: random.Random) -> bytes:
        new, old = bytes(inode.data), inode.durable
        first_changed = next(
            (i for i, (a, b) in enumerate(zip(new, old, strict=False)) if a != b),
            min(len(new), len(old)),
        )
        choice = rng.choice(CRASH_CHOICES)
        if choice == "keep" or (choice == "flip" and first_changed >= len(new)):
            return new
        if choice == "drop":
            return old
        if choice == "tear":
            cut = rng.randint(first_changed, len(new))
            return new[:cut] + old[cut:]
        position = rng.randrange(first_changed, len(new))
        flipped = bytearray(new)
        flipped[position] ^= 1 << rng.randrange(8)
        return bytes(flipped)

    def _apply_durable(self, op: _DirOp) -> None:
        if op.kind == "link":
            assert op.inode is not None
            self._durable_names[op.path] = op.inode
        elif op.kind == "unlink":
            self._durable_names.pop(op.path, None)
        else:
            inode = self._durable_names.pop(op.path, None)
            if inode is not None:
                self._durable_names[op.target] = inode

    def _record(self, op: _DirOp) -> None:
        self._pending.setdefault(posixpath.dirname(op.path), []).append(op)

    # -- FileSystem -------------------------------------------------------------------------

    def open(self, path: str, create: bool) -> MemFile:
        self._require_dir(posixpath.dirname(path))
        if create:
            if path in self._names:
                raise FileExistsError(errno.EEXIST, "File exists", path)
            inode = _Inode()
            self._names[path] = inode
            self._record(_DirOp("link", path, inode=inode))
            self._tick()
            return MemFile(self, inode, path)
        if path not in self._names:
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        return MemFile(self, self._names[path], path)

    def read(self, path: str) -> bytes:
        if path not in self._names:
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        return bytes(self._names[path].data)

    def size(self, path: str) -> int:
        return len(self.read(path))

    def listdir(self, directory: str) -> list[str]:
        self._require_dir(directory)
        names = {posixpath.basename(p) for p in self._names if posixpath.dirname(p) == directory}
        names |= {posixpath.basename(d) for d in self._dirs if posixpath.dirname(d) == directory}
        names.discard("")
        return sorted(names)

    def exists(self, path: str) -> bool:
        return path in self._names or path in self._dirs

    def makedirs(self, directory: str) -> None:
        while directory not in self._dirs:
            self._dirs.add(directory)
            directory = posixpath.dirname(directory)

    def rename(self, source: str, target: str) -> None:
        assert posixpath.dirname(source) == posixpath.dirname(target), "same directory only"
        if source not in self._names:
            raise FileNotFoundError(errno.ENOENT, "No such file", source)
        self._names[target] = self._names.pop(source)
        self._record(_DirOp("rename", source, target))
        self._tick()

    def remove(self, path: str) -> None:
        if path not in self._names:
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        del self._names[path]
        self._record(_DirOp("unlink", path))
        self._tick()

    def sync_dir(self, directory: str) -> None:
        self._require_dir(directory)
        for op in self._pending.pop(directory, []):
            self._apply_durable(op)
        self._tick()

    def lock(self, directory: str) -> None:
        self._require_dir(directory)
        if directory in self._locked:
            raise BlockingIOError(errno.EWOULDBLOCK, "directory locked", directory)
        self._locked.add(directory)

    def unlock(self, directory: str) -> None:
        self._locked.discard(directory)

    # -- test helpers -----------------------------------------------------------------------

    def corrupt(self, path: str, offset: int) -> None:
        """Flip one bit of a file as if the medium rotted (both cached and durable copies)."""
        inode = self._names[path]
        inode.data[offset] ^= 0x10
        inode.durable = bytes(inode.data)

    def _require_dir(self, directory: str) -> None:
        if directory not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "No such directory", directory)
