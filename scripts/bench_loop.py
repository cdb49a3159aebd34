"""The HTTP/1 proxy loop's own cost per request, in-process: no sockets, no TLS, no kernel.

    .venv/bin/python scripts/bench_loop.py [CHECKOUT] [--requests N] [--no-wait]

One ``HttpProxyConnection`` serves N keep-alive requests (`GET / HTTP/1.1`, `Host: web`) from a
client stream that has the next request ready, through the real router (outbound:
``OutboundRouter`` and its balancer; inbound: ``InboundRouter`` with a policy state), the real
pool and ``ProxyMetrics``, to an upstream stream that answers nginx's 200 at once. Each read
yields to the scheduler once (as a socket read that waits would; ``--no-wait``: never), so what
is measured is the Python work of the loop: parsing, routing, framing, records, cancel scopes,
the trio scheduler. Best and median of 5 runs, in µs per request. CHECKOUT (default: this one)
is put first on sys.path, to compare two checkouts (docs/performance.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REQUEST = b"GET / HTTP/1.1\r\nHost: web\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 10:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\r\nhello\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_loop.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkout", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--no-wait", action="store_true", help="reads never yield to the scheduler")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.checkout.resolve()))

    import trio

    from mesh.discovery import Endpoint
    from mesh.proxy._balancer import Balancer
    from mesh.proxy._drain import Drain
    from mesh.proxy._exchange import Timeouts, UpstreamKey
    from mesh.proxy._http import HttpProxyConnection
    from mesh.proxy._metrics import ProxyMetrics
    from mesh.proxy._policy import PolicyState
    from mesh.proxy._pool import ConnectionPool, UpstreamConnection
    from mesh.proxy._routing import InboundRouter, OutboundRouter

    wait = not args.no_wait

    class Client(trio.abc.Stream):
        def __init__(self, count: int) -> None:
            self.count = count

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            if wait:
                await trio.lowlevel.checkpoint()
            if self.count <= 0:
                return b""
            self.count -= 1
            return REQUEST

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            await trio.lowlevel.checkpoint_if_cancelled()

        async def wait_send_all_might_not_block(self) -> None:
            await trio.lowlevel.checkpoint()

        async def aclose(self) -> None:
            await trio.lowlevel.checkpoint()

    class App(Client):
        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            if wait:
                await trio.lowlevel.checkpoint()
            return RESPONSE

    endpoint = Endpoint("web", "127.0.0.1", 9999)

    async def serve(direction: str) -> float:
        policy = PolicyState("bench.test")
        if direction == "outbound":
            key = UpstreamKey("127.0.0.1", 9999, "http/1.1", "spiffe://bench.test/svc/web")
            router: object = OutboundRouter(lambda s: (endpoint,) if s == "web" else (), Balancer(), "bench.test", 10.0,
                                            policy=policy)
        else:
            key = UpstreamKey("127.0.0.1", 9999, None, None)
            router = InboundRouter(key, "spiffe://bench.test/svc/client", "client", 10.0, service="web", policy=policy)
        pool = ConnectionPool(None)
        await pool.release(UpstreamConnection(App(0), key), True)
        metrics = ProxyMetrics()
        conn = HttpProxyConnection(Client(args.requests), b"", router, pool, metrics.record, Timeouts(), Drain())  # type: ignore[arg-type]
        started = time.perf_counter()
        await conn.serve()
        return (time.perf_counter() - started) / args.requests * 1e6

    for direction in ("outbound", "inbound"):
        runs = [trio.run(serve, direction) for _ in range(5)]
        print(f"{direction:>8}: best {min(runs):5.1f} us/request, median {statistics.median(runs):5.1f}"
              f" ({args.requests} requests, {'a scheduler pass per read' if wait else 'no waits'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
