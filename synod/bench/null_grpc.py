"""The null gRPC server: a grpc.aio KV service on uvloop that answers every Put at once with
an empty PutResponse. It measures what Python gRPC alone costs per request, the ceiling of
any Python gRPC door (`synod bench --null-grpc`).

    python -m synod.bench.null_grpc --listen 127.0.0.1:23790
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
import uvloop

from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc


class NullKV(rpc_pb2_grpc.KVServicer):
    """Put answers at once; every other KV method is left unimplemented."""

    async def Put(self, request: rpc_pb2.PutRequest, context: Any) -> rpc_pb2.PutResponse:
        return rpc_pb2.PutResponse()


async def serve(listen: str) -> None:
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 1 << 20)])
    rpc_pb2_grpc.add_KVServicer_to_server(NullKV(), server)
    port = server.add_insecure_port(listen)
    assert port > 0, f"cannot listen on {listen}"
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    await stop.wait()
    await server.stop(grace=0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="host:port")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.listen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
