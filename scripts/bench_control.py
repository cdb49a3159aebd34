"""Control-plane benchmark: config push latency to N proxies, registrations per second,
embedded store vs etcd (a 3-member cluster on loopback, two controllers).

What is measured, per store:

- push: `POST /v1/config` (an operator's `mesh apply`) until every one of N watch
  streams has received the snapshot with the new config version. The watchers are
  the same HTTP/2 mTLS watch streams a proxy opens (one connection and one
  certificate each), run in this process so that 50 of them cost no 50 sidecars.
  With etcd the apply goes to controller A while half the watchers are on
  controller B: B learns it through etcd's watch.
- registrations: distinct proxy instances registering (`POST /v1/registrations`),
  over C concurrent connections: a new registration writes to the store (SQLite
  commit with fsync; etcd lease grant + transaction).
- heartbeats: the same instances again: the store only keeps a lease alive.

Usage: ./scripts/bench_control [--proxies 50] [--rounds 10] [--registrations 1000]
       [--concurrency 16] [--only embedded|etcd]
Needs etcd (apt-get install etcd-server) for the etcd rows. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(*argv: str, home: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "--home", str(home), *argv], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise SystemExit(f"mesh {' '.join(argv)} failed:\n{result.stderr}")
    return result.stdout


def start_controller(home: Path, store: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    argv = [sys.executable, "-m", "mesh", "--home", str(home), "controller", "--listen", "127.0.0.1:0", "--no-zeroconf"]
    with open(log, "wb") as out:
        process = subprocess.Popen([*argv, "--store", store], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if "controller listening" in log.read_text(errors="replace"):
            return process, json.loads((home / "controller.json").read_text())["address"]
        if process.poll() is not None:
            raise SystemExit(f"the controller exited:\n{log.read_text()}")
        time.sleep(0.05)
    raise SystemExit(f"the controller did not start:\n{log.read_text()}")


async def client_for(home: Path, address: str, service: str) -> Any:
    from mesh.discovery import parse_address
    from mesh.home import MeshHome
    from mesh.identity import CertificateAuthority, client_context, service_identity
    from mesh.net import ApiClient

    ca = CertificateAuthority.load(MeshHome(home))
    creds = ca.issue(service_identity(ca.trust_domain, service))
    host, port = parse_address(address)
    identity = f"spiffe://{ca.trust_domain}/svc/mesh-controller"
    return await ApiClient.connect(host, port, client_context(creds, alpn=("h2",)), identity)


async def operator_client(home: Path, address: str) -> Any:
    from mesh.discovery import parse_address
    from mesh.identity import client_context, load_credentials
    from mesh.net import ApiClient

    operator = home / "operator"
    creds = load_credentials(operator / "cert.pem", operator / "key.pem", home / "ca" / "bundle.pem")
    host, port = parse_address(address)
    td = json.loads((home / "controller.json").read_text())["trust_domain"]
    return await ApiClient.connect(host, port, client_context(creds, alpn=("h2",)), f"spiffe://{td}/svc/mesh-controller")


class Watcher:
    def __init__(self) -> None:
        self.config_version = -1
        self.changed = trio.Event()
        self.seen_at: dict[int, float] = {}

    async def run(self, client: Any, service: str, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with client.stream("GET", f"/v1/watch?service={service}&instance={service}-0") as events:
            started = False
            async for event in events:
                if event.get("type") != "snapshot":
                    continue
                version = int(event["config_version"])
                if version not in self.seen_at:
                    self.seen_at[version] = time.perf_counter()
                self.config_version = version
                self.changed.set()
                self.changed = trio.Event()
                if not started:
                    started = True
                    task_status.started()


async def measure(
    homes: list[Path], addresses: list[str], proxies: int, rounds: int, registrations: int, concurrency: int
) -> dict[str, Any]:
    operator = await operator_client(homes[0], addresses[0])
    clients = []
    watchers = [Watcher() for _ in range(proxies)]
    result: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        for index, watcher in enumerate(watchers):
            address = addresses[index % len(addresses)]
            client = await client_for(homes[index % len(homes)], address, f"bench-{index}")
            clients.append(client)
            await nursery.start(watcher.run, client, f"bench-{index}")
        td = json.loads((homes[0] / "controller.json").read_text())["trust_domain"]
        push, apply_calls = [], []
        for round_number in range(rounds):
            config = {"mesh": {"trust_domain": td}, "route": [{"service": "web", "timeout": f"{round_number + 2}s"}]}
            started = time.perf_counter()
            response = await operator.request("POST", "/v1/config", {"config": config, "source": "bench"})
            apply_calls.append(time.perf_counter() - started)
            assert response.status == 200, response.body
            version = int(response.body["version"])
            with trio.fail_after(10):
                for watcher in watchers:
                    while version not in watcher.seen_at:
                        await watcher.changed.wait()
            push.append(max(w.seen_at[version] for w in watchers) - started)
            await trio.sleep(0.2)
        result["push_ms_p50"] = round(statistics.median(push) * 1000, 1)
        result["push_ms_max"] = round(max(push) * 1000, 1)
        result["apply_ms_p50"] = round(statistics.median(apply_calls) * 1000, 1)
        nursery.cancel_scope.cancel()
    await operator.aclose()

    registration_clients = [
        await client_for(homes[i % len(homes)], addresses[i % len(addresses)], "bench-reg") for i in range(concurrency)
    ]

    async def register_all(instance_of: Callable[[int], str]) -> float:
        counter = iter(range(registrations))
        started = time.perf_counter()

        async def worker(client: Any) -> None:
            for n in counter:
                body = {
                    "service": "bench-reg",
                    "instance": instance_of(n),
                    "address": f"127.0.0.1:{10000 + n}",
                    "ttl_seconds": 300,
                }
                response = await client.request("POST", "/v1/registrations", body)
                assert response.status == 200, response.body

        async with trio.open_nursery() as nursery:
            for client in registration_clients:
                nursery.start_soon(worker, client)
        return registrations / (time.perf_counter() - started)

    result["registrations_per_s"] = round(await register_all(lambda n: f"bench-reg-{n}"))
    result["heartbeats_per_s"] = round(await register_all(lambda n: f"bench-reg-{n}"))
    for client in [*clients, *registration_clients]:
        await client.aclose()
    return result



def bench_store(kind: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from tests.integration.etcd import EtcdCluster

    home_a = tmp / f"{kind}-a"
    run("ca", "init", "--trust-domain", f"bench-{os.getpid()}.test", home=home_a)
    processes: list[subprocess.Popen[bytes]] = []
    etcd = None
    try:
        if kind == "embedded":
            homes = [home_a]
            process, address = start_controller(home_a, "embedded", tmp / "embedded.log")
            processes.append(process)
            addresses = [address]
        else:
            etcd = EtcdCluster.start(tmp / "etcd", fsync=True)  # durable, like the embedded store
            url = f"{etcd.url}/bench"
            home_b = tmp / f"{kind}-b"
            home_b.mkdir(mode=0o700)
            shutil.copytree(home_a / "ca", home_b / "ca")
            homes, addresses = [home_a, home_b], []
            for home in homes:
                process, address = start_controller(home, url, tmp / f"{home.name}.log")
                processes.append(process)
                addresses.append(address)
        return trio.run(measure, homes, addresses, args.proxies, args.rounds, args.registrations, args.concurrency)
    finally:
        for process in processes:
            process.terminate()
            process.wait(15)
        if etcd is not None:
            etcd.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxies", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--registrations", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--only", choices=("embedded", "etcd"))
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mesh-bench-control-") as tmp:
        for kind in ("embedded", "etcd"):
            if args.only in (None, kind):
                rows[kind] = bench_store(kind, args, Path(tmp))
                print(f"{kind}: {json.dumps(rows[kind])}", flush=True)
    print()
    print(f"{'store':<10} {'push p50 ms':>12} {'push max ms':>12} {'apply p50 ms':>13} {'reg/s':>8} {'heartbeat/s':>12}")
    for kind, row in rows.items():
        print(
            f"{kind:<10} {row['push_ms_p50']:>12} {row['push_ms_max']:>12} {row['apply_ms_p50']:>13} "
            f"{row['registrations_per_s']:>8} {row['heartbeats_per_s']:>12}"
        )
    print(f"({args.proxies} watch streams, {args.rounds} applies, {args.registrations} registrations over {args.concurrency} connections)")


if __name__ == "__main__":
    main()
