"""A/B of the proxy's cost: the same loads through proxy pairs built from different checkouts.

    scripts/bench_ab before=/path/to/worktree-a after=/path/to/worktree-b [--mode http1|http2|hey|grpc]
                     [--rounds 4] [--duration 4] [--profile DIR]

Each NAME=CHECKOUT gets its own MESH_HOME (`mesh ca init`), an inbound proxy `web` in front of
one nginx app (HTTP/1 and h2c), an inbound proxy `webh2` in front of its HTTP/2 port, and an
outbound proxy `client` that reaches both through a static endpoints file; every proxy runs
that checkout's code with that checkout's venv, `--no-zeroconf`. The loads alternate between
the variants (a b b a a b ...), so a machine whose speed drifts, or that other work shares,
disturbs both alike. Printed per load: requests/s, CPU µs per request of the outbound and the
inbound proxy (utime + stime from /proc), their system-time share, and the CPU that everything
else on the machine used; then the medians.

Loads: http1 = wrk -t1 -c16; hey = hey -c16 -q32 (p50/p99 too; --hey-concurrency N: -cN at 512/N each); http2 = h2load -t1 -c4 -m16;
grpc = scripts/grpc_load.py (unary 1 KiB, 16 in flight) to a grpcio echo server behind `webgrpc`.
With --profile DIR, each variant then runs the load twice more, once with both proxies under
`strace -c` (system calls per request) and once under `py-spy record --native` (the share of
samples per component: mesh, the HTTP/2 codec, trio, OpenSSL, httptools, system calls, the
interpreter); scripts/_profile.py. These rounds are not in the medians (the tools slow the proxies).
Traffic stays on 127.0.0.1; every process started is stopped at the end. docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
READY = re.compile(r"ready: inbound ([\d.]+):(\d+), outbound ([\d.]+):(\d+)")
# The proxies run through this launcher so that their command line does not say `mesh proxy`
# (a shared machine's `pkill -f 'mesh proxy'` must not end the run halfway), as in scripts/bench.
LAUNCHER = """\
import json, os, sys
from mesh.cli import main
sys.argv = ["mesh", *json.loads(os.environ.pop("AB_ARGV"))]
sys.exit(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime


def machine_busy_ticks() -> int:
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return values[0] + values[1] + values[2]


class Run:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, cmd: list[str], log: Path, env: dict[str, str], cwd: str | None = None) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(log: Path, proc: subprocess.Popen[bytes]) -> tuple[int, int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = READY.search(log.read_text(errors="replace"))
        if match:
            return int(match.group(2)), int(match.group(4))
        if proc.poll() is not None:
            sys.exit(f"bench_ab: a proxy exited before it was ready:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    sys.exit(f"bench_ab: no ready line in {log}")


def start_app(run: Run, env: dict[str, str]) -> tuple[int, int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port, port_h2 = free_port(), free_port()
    prefix = run.tmp / "app"
    prefix.mkdir()
    temps = " ".join(f"{d}_temp_path {prefix};" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (prefix / "nginx.conf").write_text(f"""daemon off; master_process on; worker_processes 1;
pid {prefix}/nginx.pid; error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; {temps}
  server {{ listen 127.0.0.1:{port}; keepalive_requests 10000000; location / {{ return 200 "hello\\n"; }} }}
  server {{ listen 127.0.0.1:{port_h2} http2; keepalive_requests 10000000; location / {{ return 200 "hello\\n"; }} }}
}}
""")
    run.start([nginx, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
              prefix / "stderr.log", env)
    for p in (port, port_h2):
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("bench_ab: the nginx app did not listen")
                time.sleep(0.05)
    return port, port_h2


GRPC_LOAD = Path(__file__).resolve().parent / "grpc_load.py"


def start_grpc_app(run: Run, env: dict[str, str]) -> int:
    port = free_port()
    run.start([sys.executable, str(GRPC_LOAD), "serve", str(port)], run.tmp / "grpc-app.log", env)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return port
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("bench_ab: the grpc echo server did not listen")
            time.sleep(0.05)


def start_variant(run: Run, name: str, checkout: Path, app: tuple[int, int, int], env: dict[str, str]) -> dict[str, object]:
    home = run.tmp / name
    home.mkdir()
    python = str(checkout / ".venv" / "bin" / "python")
    venv_env = dict(env, MESH_HOME=str(home), PYTHONPATH=str(checkout))
    subprocess.run([python, "-m", "mesh", "ca", "init", "--trust-domain", f"ab-{name}.test"], env=venv_env, check=True,
                   capture_output=True, cwd=checkout)
    launcher = run.tmp / "launch.py"
    common = ["--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0",
              "--drain-timeout", "1s", "--no-zeroconf"]

    def proxy(label: str, args: list[str]) -> tuple[subprocess.Popen[bytes], tuple[int, int]]:
        log = run.tmp / f"{name}-{label}.log"
        proc = run.start([python, str(launcher)], log, dict(venv_env, AB_ARGV=json.dumps(["proxy", *args, *common])),
                         cwd=str(checkout))
        return proc, wait_ready(log, proc)

    web, (web_in, _) = proxy("web", ["--service", "web", "--app", f"127.0.0.1:{app[0]}"])
    web_h2, (web_h2_in, _) = proxy("webh2", ["--service", "webh2", "--app", f"127.0.0.1:{app[1]}"])
    entries = [("web", web_in), ("webh2", web_h2_in)]
    web_grpc = None
    if app[2]:
        web_grpc, (web_grpc_in, _) = proxy("webgrpc", ["--service", "webgrpc", "--app", f"127.0.0.1:{app[2]}"])
        entries.append(("webgrpc", web_grpc_in))
    endpoints = home / "endpoints.toml"
    endpoints.write_text("".join(f'[[endpoint]]\nservice = "{svc}"\naddress = "127.0.0.1:{port}"\n\n' for svc, port in entries))
    client, (_, outbound) = proxy("client", ["--service", "client", "--app", "127.0.0.1:1", "--endpoints", str(endpoints)])
    return {"client": client, "web": web, "webh2": web_h2, "webgrpc": web_grpc, "port": outbound}


def inner_proxy(mode: str, variant: dict[str, object]) -> object:
    """The inbound proxy a load goes through (each mode has its own app behind its own proxy)."""
    return variant[{"http2": "webh2", "grpc": "webgrpc"}.get(mode, "web")]


HEY_RATE = 512  # requests/s in all, split over hey's connections (16 x 32 by default, as scripts/bench)


def load(mode: str, variant: dict[str, object], seconds: float, env: dict[str, str], concurrency: int = 16) -> dict[str, object]:
    port = variant["port"]
    inner = inner_proxy(mode, variant)
    client = variant["client"]
    if mode == "http1":
        cmd = ["wrk", "-t1", "-c16", f"-d{seconds:g}s", "-H", "Host: web", f"http://127.0.0.1:{port}/"]
    elif mode == "hey":
        rate = max(1, round(HEY_RATE / concurrency))  # hey's -q is per connection; its connections fire together
        cmd = ["hey", "-z", f"{seconds:g}s", "-c", str(concurrency), "-q", str(rate), "-host", "web", f"http://127.0.0.1:{port}/"]
    elif mode == "grpc":
        cmd = [sys.executable, str(GRPC_LOAD), "load", str(port), "webgrpc", f"{seconds:g}", "16", "1024"]
    else:
        cmd = ["h2load", "-t1", "-c4", "-m16", "-D", f"{seconds:g}", "-H", ":authority: webh2", f"http://127.0.0.1:{port}/"]
    pids = [client.pid, inner.pid]  # type: ignore[attr-defined]
    before = [cpu_ticks(p) for p in pids]
    busy0, started = machine_busy_ticks(), time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60).stdout
    wall = time.monotonic() - started
    busy1 = machine_busy_ticks()
    after = [cpu_ticks(p) for p in pids]
    result: dict[str, object] = {}
    if mode == "http1":
        found = re.search(r"(\d+) requests in", out)
        result["errors"] = "Non-2xx" in out or "Socket errors" in out
    elif mode == "hey":
        counts = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
        found = None
        result["requests"] = sum(int(n) for _, n in counts)
        result["errors"] = any(code != "200" for code, _ in counts)
        for pct in ("50", "99"):
            m = re.search(rf"{pct}% in ([\d.]+) secs", out)
            result[f"p{pct}_ms"] = float(m.group(1)) * 1000 if m else None
    elif mode == "grpc":
        found = None
        report = json.loads(out.strip().splitlines()[-1])
        result["requests"], result["errors"] = report["calls"], bool(report["errors"])
        result["p50_ms"], result["p99_ms"] = report["p50_ms"], report["p99_ms"]
    else:
        found = re.search(r"(\d+) succeeded, (\d+) failed", out)
        result["errors"] = bool(found and found.group(2) != "0")
    if "requests" not in result:
        if not found:
            sys.exit(f"bench_ab: cannot read the load tool's output:\n{out}")
        result["requests"] = int(found.group(1))
    requests = max(int(result["requests"]), 1)  # type: ignore[call-overload]
    cpu = [(a[0] + a[1] - b[0] - b[1]) / CLK_TCK for a, b in zip(after, before, strict=True)]
    result["rps"] = requests / wall
    result["us_per_request"] = [c / requests * 1e6 for c in cpu]
    result["sys_share"] = [(a[1] - b[1]) / max(1, a[0] + a[1] - b[0] - b[1]) for a, b in zip(after, before, strict=True)]
    result["others_cpus"] = max(0.0, ((busy1 - busy0) / CLK_TCK - sum(cpu)) / wall)  # the load tool included
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench_ab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", metavar="NAME=CHECKOUT")
    ap.add_argument("--mode", choices=("http1", "http2", "hey", "grpc"), default="http1")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=float, default=4.0, metavar="SECONDS")
    ap.add_argument("--hey-concurrency", type=int, default=16, metavar="N",
                    help="--mode hey: N connections at 512/N requests/s each (the bursts are N requests)")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="then, per variant, one round under strace -c and one under py-spy --native (raw files in DIR)")
    args = ap.parse_args(argv)
    variants: dict[str, Path] = {}
    for spec in args.variants:
        name, sep, path = spec.partition("=")
        checkout = Path(path).resolve()
        if not sep or not name or not (checkout / ".venv" / "bin" / "python").exists():
            ap.error(f"{spec!r}: expected NAME=CHECKOUT, a checkout with its .venv (./install.sh)")
        variants[name] = checkout
    needed = ["nginx", *{"http1": ["wrk"], "hey": ["hey"], "http2": ["h2load"], "grpc": []}[args.mode]]
    missing = [tool for tool in needed if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]
    if missing:
        ap.error(f"{', '.join(missing)} not installed (apt-get install nginx wrk hey nghttp2-client)")
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    run = Run(Path(tempfile.mkdtemp(prefix="mesh-bench-ab-")))
    (run.tmp / "launch.py").write_text(LAUNCHER)
    results: dict[str, list[dict[str, object]]] = {name: [] for name in variants}
    try:
        app = (*start_app(run, env), start_grpc_app(run, env) if args.mode == "grpc" else 0)
        started = {name: start_variant(run, name, checkout, app, env) for name, checkout in variants.items()}
        for variant in started.values():
            load(args.mode, variant, 1, env, args.hey_concurrency)  # warm-up: pools filled, code paths hot
        names = list(started)
        for rnd in range(args.rounds):
            for name in names if rnd % 2 == 0 else names[::-1]:
                r = load(args.mode, started[name], args.duration, env, args.hey_concurrency)
                results[name].append(r)
                us = r["us_per_request"]
                latency = f"  p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms" if args.mode in ("hey", "grpc") else ""
                print(f"{name:>10} round {rnd + 1}: {r['rps']:8.0f} req/s  CPU us/req out {us[0]:6.1f} in {us[1]:6.1f}"  # type: ignore[index]
                      f"  sys {r['sys_share'][0]:.0%}/{r['sys_share'][1]:.0%}{latency}"  # type: ignore[index]
                      f"  (others {r['others_cpus']:.2f} CPUs){' ERRORS' if r['errors'] else ''}", flush=True)
        print("medians:")
        for name, rs in results.items():
            out = statistics.median(r["us_per_request"][0] for r in rs)  # type: ignore[index]
            inn = statistics.median(r["us_per_request"][1] for r in rs)  # type: ignore[index]
            rps = statistics.median(r["rps"] for r in rs)  # type: ignore[misc]
            others = statistics.median(r["others_cpus"] for r in rs)  # type: ignore[misc]
            print(f"{name:>10}: {rps:8.0f} req/s  CPU us/req out {out:6.1f} in {inn:6.1f}  (others {others:.2f} CPUs)")
        if args.profile:
            from _profile import profile  # scripts/_profile.py

            for name, variant in started.items():
                pids = [variant["client"].pid, inner_proxy(args.mode, variant).pid]  # type: ignore[attr-defined]
                report = profile(name, pids, lambda v=variant: load(args.mode, v, args.duration, env, args.hey_concurrency), args.profile)
                print("\n".join(report), flush=True)
    finally:
        run.stop()
        shutil.rmtree(run.tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
