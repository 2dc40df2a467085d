"""A member's gRPC workers (synod.api.grpc_relay): started once the member's native door
serves, restarted when one dies, stopped with the member.

The front door asks `targets()` where to splice a new gRPC connection: the workers that
are serving, in turn; with none serving (starting, restarting, `--grpc-workers 0`) it
uses the member's own gRPC server, so clients are served throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys

from synod.api.grpc_relay import READY_PREFIX

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0
RESTART_DELAY_S = 1.0
STOP_TIMEOUT_S = 3.0


class GrpcWorkers:
    def __init__(
        self, count: int, native_address: str, member_grpc: str, log_level: str = "info"
    ) -> None:
        assert count > 0
        self.count = count
        self._argv = [
            sys.executable,
            "-m",
            "synod.api.grpc_relay",
            "--native",
            native_address,
            "--member-grpc",
            member_grpc,
            "--log-level",
            log_level,
        ]
        self._serving: dict[int, str] = {}
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._turn = 0
        self._stopping = False

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._supervise(index)) for index in range(self.count)]

    def targets(self) -> list[str]:
        """Addresses of the serving workers, a different one first on each call."""
        serving = list(self._serving.values())
        if len(serving) > 1:
            self._turn = (self._turn + 1) % len(serving)
            serving = serving[self._turn :] + serving[: self._turn]
        return serving

    async def _supervise(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                # subprocess.Popen spawns with vfork/exec: no fork handlers run. A fork
                # (uvloop's spawn) runs gRPC's, which can cut this process's gRPC
                # connections while the child is set up.
                process = subprocess.Popen(
                    self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
            except OSError as error:
                log.error("cannot start gRPC worker %d: %s", index, error)
                await asyncio.sleep(RESTART_DELAY_S)
                continue
            self._processes[index] = process
            try:
                await self._serve_while_alive(index, process, loop)
            finally:
                self._serving.pop(index, None)
                self._processes.pop(index, None)
            if not self._stopping:
                log.warning(
                    "gRPC worker %d (pid %d) exited with %s; restarting it",
                    index,
                    process.pid,
                    process.returncode,
                )
                await asyncio.sleep(RESTART_DELAY_S)

    async def _serve_while_alive(
        self, index: int, process: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop
    ) -> None:
        """Wait (on a thread: the pipe and the exit are blocking waits) for the ready line,
        then for the exit."""
        assert process.stdout is not None
        reading = loop.run_in_executor(None, process.stdout.readline)
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                line = (await asyncio.shield(reading)).decode(errors="replace").strip()
        except TimeoutError:
            line = ""
        if line.startswith(READY_PREFIX):
            address = line[len(READY_PREFIX) :]
            self._serving[index] = address
            log.info("gRPC worker %d (pid %d) serving on %s", index, process.pid, address)
        else:
            log.error("gRPC worker %d (pid %d) did not start: %r", index, process.pid, line)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await loop.run_in_executor(None, process.wait)
        process.stdout.close()

    async def stop(self, grace: float | None = None) -> None:
        """Close each worker's stdin (it exits), kill the ones that do not (`grace` is
        the ClientDoor signature's; a worker's own stop bounds its in-flight calls)."""
        self._stopping = True
        self._serving.clear()
        processes = list(self._processes.values())
        for process in processes:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
        loop = asyncio.get_running_loop()
        for process in processes:
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await asyncio.shield(loop.run_in_executor(None, process.wait))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
