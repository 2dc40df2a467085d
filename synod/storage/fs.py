"""The file-system seam under the WAL and the snapshot files.

Owns the few operations storage needs (open, write at an offset, fsync, truncate, allocate,
read, list, rename, remove, fsync a directory) so the same WAL code runs over the real disk
(`RealFileSystem`) and over the simulator's in-memory disk (`synod.storage.memdisk`).

Invariants: `WritableFile.write_at` writes all bytes or raises (a short `pwrite` is retried
for the rest); `sync` returns only once the file's data is durable, and any failure raises
`OSError` without being retried; paths are plain strings joined with `os.path.join`.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Protocol

WRITE_ATTEMPTS_MAX = 1024


class WritableFile(Protocol):
    def write_at(self, offset: int, data: bytes) -> None:
        """Write all of `data` at `offset`; raises OSError (ENOSPC, EIO, ...)."""

    def sync(self) -> None:
        """Make the file's data durable (fdatasync)."""

    def truncate(self, size_bytes: int) -> None: ...

    def allocate(self, size_bytes: int) -> None:
        """Reserve space up to `size_bytes`, zero-filled; a no-op where unsupported."""

    def close(self) -> None: ...


class FileSystem(Protocol):
    def open(self, path: str, create: bool) -> WritableFile:
        """Open for writing; `create` requires that the file does not exist yet."""

    def read(self, path: str) -> bytes: ...

    def size(self, path: str) -> int: ...

    def listdir(self, directory: str) -> list[str]: ...

    def exists(self, path: str) -> bool: ...

    def makedirs(self, directory: str) -> None: ...

    def rename(self, source: str, target: str) -> None:
        """Atomically replace `target` with `source` (same directory)."""

    def remove(self, path: str) -> None: ...

    def sync_dir(self, directory: str) -> None:
        """Make creations, renames and removals in `directory` durable."""

    def lock(self, directory: str) -> None:
        """Take `directory`'s exclusive lock; raises BlockingIOError if another holder has it."""

    def unlock(self, directory: str) -> None: ...


class RealFile:
    """A file descriptor opened for positional writes."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    def write_at(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        done = 0
        for _ in range(WRITE_ATTEMPTS_MAX):
            if done == len(view):
                return
            written = os.pwrite(self.fd, view[done:], offset + done)
            if written <= 0:
                raise OSError(errno.EIO, f"pwrite wrote nothing to {self.path}")
            done += written
        if done != len(view):
            raise OSError(errno.EIO, f"pwrite kept writing short to {self.path}")

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def truncate(self, size_bytes: int) -> None:
        assert size_bytes >= 0
        os.ftruncate(self.fd, size_bytes)

    def allocate(self, size_bytes: int) -> None:
        assert size_bytes >= 0
        try:
            os.posix_fallocate(self.fd, 0, size_bytes)
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise

    def close(self) -> None:
        os.close(self.fd)


LOCK_NAME = "LOCK"


class RealFileSystem:
    """The operating system's files, with the fsync discipline the WAL relies on."""

    def __init__(self) -> None:
        self._lock_fds: dict[str, int] = {}

    def open(self, path: str, create: bool) -> WritableFile:
        flags = os.O_RDWR | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        return RealFile(os.open(path, flags, 0o644), path)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as file:
            return file.read()

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def listdir(self, directory: str) -> list[str]:
        return sorted(os.listdir(directory))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def makedirs(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)

    def rename(self, source: str, target: str) -> None:
        os.rename(source, target)

    def remove(self, path: str) -> None:
        os.remove(path)

    def sync_dir(self, directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, directory: str) -> None:
        assert directory not in self._lock_fds, "directory already locked by this instance"
        fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        self._lock_fds[directory] = fd

    def unlock(self, directory: str) -> None:
        fd = self._lock_fds.pop(directory, None)
        if fd is not None:
            os.close(fd)
