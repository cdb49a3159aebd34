"""The gRPC row of scripts/bench: a grpcio echo server, and a grpcio load client.

    grpc_load.py serve PORT
    grpc_load.py load PORT AUTHORITY SECONDS CONCURRENCY SIZE

The server answers the unary method /mesh.bench.Echo/Call with the request's bytes.
The client keeps CONCURRENCY calls in flight on one channel for SECONDS (each call
carries SIZE bytes, a 10 s deadline) and prints one JSON line: calls, errors,
seconds, and the p50/p99 latency in ms. Generic handlers with bytes in and out: no
generated code. Both run on grpc.aio (grpcio's fastest Python API).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc

METHOD = "/mesh.bench.Echo/Call"


def _ident(data: bytes) -> bytes:
    return data


async def serve(port: int) -> None:
    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "mesh.bench.Echo",
        {"Call": grpc.unary_unary_rpc_method_handler(call, request_deserializer=_ident, response_serializer=_ident)},
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"grpc echo serving on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


async def load(port: int, authority: str, seconds: float, concurrency: int, size: int) -> dict[str, object]:
    options = [("grpc.default_authority", authority), ("grpc.enable_http_proxy", 0)]
    payload = b"x" * size
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call = channel.unary_unary(METHOD, request_serializer=_ident, response_deserializer=_ident)
        await call(payload, timeout=10)  # connected and warm before the clock starts
        end = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < end:
                started = time.perf_counter()
                try:
                    reply = await call(payload, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                if reply != payload:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    latencies.sort()

    def percentile(p: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3) if latencies else None

    return {"calls": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
            "rps": round(len(latencies) / elapsed, 1), "p50_ms": percentile(0.50), "p99_ms": percentile(0.99)}


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "serve":
        asyncio.run(serve(int(argv[1])))
        return 0
    if len(argv) == 6 and argv[0] == "load":
        port, authority, seconds, concurrency, size = argv[1:]
        print(json.dumps(asyncio.run(load(int(port), authority, float(seconds), int(concurrency), int(size)))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
