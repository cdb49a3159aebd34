"""Side-by-side benchmark: direct vs mesh vs an nginx pair, in one run.

Shapes (every one ends at the same app, an nginx `return 200 "hello\\n"`):

  direct  client ──plain──▶ app
  mesh    client ──plain──▶ mesh proxy (outbound) ──mTLS──▶ mesh proxy (inbound) ──plain──▶ app
  nginx   client ──plain──▶ nginx #1 ──mTLS (TLS 1.3)──▶ nginx #2 ──plain──▶ app

Loads, per shape: wrk -t1 -c16 (maximum throughput); hey -c16 -q32 (~512 req/s,
latency); wrk with exponential think time (~500 req/s, latency with spread-out
arrivals). The shapes run interleaved, twice (a b c a b c); the report gives medians.

Telemetry rows (asked for): --access-log adds "mesh+log", a second mesh pair whose two
proxies append access log lines to a file; --trace adds "mesh+trace", a pair exporting a
span per request (sample rate 1.0) to an OTLP sink (the app's nginx answers the POSTs).
They serve their own service name (Host: web-log, web-trace) so zeroconf never mixes the
pairs, and run interleaved with the others; the report gives their CPU per request and
throughput against the plain mesh pair.

HTTP/2 row (when h2load is installed): the same three shapes over HTTP/2 — h2c
from h2load to the first hop and to the app (an nginx `listen ... http2`), ALPN
h2 over mTLS between the proxies (nginx: grpc_pass, its one HTTP/2 upstream
module), h2load -c4 -m16 (64 streams in flight).

gRPC row: a grpcio client (scripts/grpc_load.py: unary calls of 1 KiB, 16 in
flight on one channel) against a grpcio echo server, direct and through the mesh
(h2c to the outbound listener, ALPN h2 over mTLS between the proxies).

Edge row: HTTPS from the client, terminated in front of the same app, the same
two hops behind it as the mesh row:

  mesh-edge   client ──TLS──▶ mesh gateway ──mTLS──▶ mesh proxy (inbound) ──plain──▶ app
  nginx-edge  client ──TLS──▶ nginx (edge) ──mTLS──▶ nginx #2 ──plain──▶ app

wrk -c16 (HTTP/1.1 over TLS) and, with h2load, -c4 -m16 over TLS with ALPN h2 (the
gateway and nginx both send HTTP/1.1 on to the app).
Run through ./scripts/bench; see docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MESH = ROOT / ".venv" / "bin" / "mesh"
HOST_HEADER = "web"
WORKERS_SERVICE = f"{HOST_HEADER}-2w"  # the mesh-2w pair's own service
CONNECTIONS = 16
RATE_PER_CONNECTION = 32  # hey -q is per worker: 16 x 32 = 512 req/s
TARGETS = {  # issue 16
    "throughput_vs_nginx_min": 0.40,
    "cpu_us_per_request_max": 75.0,  # HTTP/1, per proxy, at maximum throughput
    "added_p50_ms_max": 1.5,
    "added_p99_ms_max": 4.0,
    "rss_mb_max": 50.0,  # peak under the loads
    "h2_throughput_vs_nginx_min": 0.20,
    "h2_cpu_us_per_request_max": 200.0,
    "grpc_vs_direct_min": 0.5,
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Extra mesh pairs with telemetry on: shape → (flag of scripts/bench, the proxies' flags; {sink} is the OTLP sink URL).
TELEMETRY_SHAPES = {
    "mesh+log": ("access_log", ["--access-log", "{dir}/access-{service}.log"]),
    "mesh+trace": ("trace", ["--otlp-endpoint", "{sink}", "--trace-sample", "1.0"]),
}
INSTALL_HINT = "apt-get install nginx wrk hey"
H2_CONNECTIONS = 4
H2_STREAMS = 16  # per connection (h2load -m)
# grpc_pass sends one stream per upstream connection (no multiplexing): keep enough connections
# for every stream in flight, or nginx opens (and for #1 -> #2, handshakes) new ones all the time.
H2_UPSTREAM_KEEPALIVE = 2 * H2_CONNECTIONS * H2_STREAMS
GRPC_CONCURRENCY = 16  # unary calls in flight on one channel
GRPC_MESSAGE = 1024  # bytes per request and per response
GRPC_LOAD = ROOT / "scripts" / "grpc_load.py"
PYTHON = ROOT / ".venv" / "bin" / "python"

# Exponential think time per connection (mean 1/32 s): ~500 req/s over 16
# connections with arrivals spread out, unlike hey's -q whose per-worker tickers
# start together and fire in bursts of 16.
PACE_LUA = """\
local mean_ms = %d
init = function(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end
delay = function()
  return math.floor(-math.log(1 - math.random()) * mean_ms)
end
"""


class BenchError(Exception):
    """Something the user must fix or look at; printed without a traceback."""


class Interrupted(Exception):
    pass


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- tools


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):  # nginx lives in sbin, often off a user's PATH
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def check_tools() -> dict[str, str]:
    tools = {name: find_tool(name) for name in ("nginx", "wrk", "hey")}
    missing = [n for n, p in tools.items() if p is None]
    if missing:
        raise BenchError(f"missing tool(s): {', '.join(missing)}. Install them: {INSTALL_HINT}")
    if not MESH.exists():
        raise BenchError(f"{MESH} not found; run ./install.sh first")
    h2load = find_tool("h2load")
    if h2load:
        tools["h2load"] = h2load
    else:
        log("h2load not found: no HTTP/2 row (apt-get install nghttp2-client)")
    return tools  # type: ignore[return-value]


def tool_version(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    out = (r.stdout + r.stderr).strip().splitlines()
    return out[0].strip() if out else "?"


def load_env() -> dict[str, str]:
    env = dict(os.environ)
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del env[k]
    return env


# ----------------------------------------------------------------------------- /proc


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(user, system) CPU time of a process, all threads, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after "pid (comm)": state=0 ... utime=11, stime=12
    return int(fields[11]), int(fields[12])


def proc_status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def machine_busy_ticks() -> int:
    """All CPUs' user+nice+system time in clock ticks (interrupt time is nobody's, so left out)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2]


def children_cpu_s() -> float:
    """CPU seconds of our waited-for children (the load tools) and of this script."""
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return c.ru_utime + c.ru_stime + me.ru_utime + me.ru_stime


def children_of(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            kids.append(int(d))
    return sorted(kids)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, alive: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise BenchError(f"{what} exited before listening on 127.0.0.1:{port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in lines[-n:]) or "    (empty)"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    kind: str  # "mesh" | "nginx"
    workers: list[int] = field(default_factory=list)  # nginx worker pids

    @property
    def measured_pids(self) -> list[int]:
        """The processes doing the proxying: nginx's worker, a mesh proxy's workers (--workers), or the mesh process."""
        return self.workers or [self.popen.pid]

    def alive(self) -> bool:
        return self.popen.poll() is None


class Processes:
    """Everything the benchmark starts; stop_all() ends it, whatever happened."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, name: str, kind: str, cmd: list[str], log: Path, env: dict[str, str]) -> Proc:
        f = open(log, "ab")
        try:
            # Own session: a Ctrl-C on the terminal reaches only us; we stop them in order.
            popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True, cwd=log.parent)
        finally:
            f.close()
        p = Proc(name, popen, log, kind)
        self.procs.append(p)
        return p

    def check_alive(self) -> None:
        for p in self.procs:
            if not p.alive():
                why = ""
                if "received SIGTERM" in p.log.read_text(errors="replace"):
                    why = ("\n  It received a SIGTERM that the benchmark did not send: something else on this machine "
                           "is killing processes by name (pkill -f / killall?). Run the benchmark when that has stopped.")
                raise BenchError(f"{p.name} (pid {p.popen.pid}) exited with code {p.popen.returncode} "
                                 f"during the benchmark; its log ({p.log}):\n{tail(p.log)}{why}")
            for w in p.workers:
                if not Path(f"/proc/{w}").exists():
                    raise BenchError(f"{p.name}: worker pid {w} disappeared; log:\n{tail(p.log)}")

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.alive():
                try:
                    p.popen.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for p in reversed(self.procs):
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{p.name} did not stop on SIGTERM; killing pid {p.popen.pid}")
                p.popen.kill()
                p.popen.wait()
            for w in p.workers:  # nginx workers normally leave with their master
                if self._is_ours(w, p.popen.pid):
                    try:
                        os.kill(w, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    @staticmethod
    def _is_ours(pid: int, master: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            return ppid in (master, 1) and b"nginx" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return False


# ----------------------------------------------------------------------------- setup


def run_mesh(args: list[str], env: dict[str, str]) -> None:
    r = subprocess.run([str(MESH), *args], capture_output=True, text=True, env=env, timeout=60)
    if r.returncode != 0:
        raise BenchError(f"`mesh {' '.join(args)}` failed ({r.returncode}):\n{r.stdout}{r.stderr}")


def nginx_conf(prefix: Path, body: str) -> Path:
    conf = prefix / "nginx.conf"
    temps = "\n".join(f"  {d}_temp_path {prefix}/tmp-{d};" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(f"""\
# written by scripts/bench; one worker process, like one mesh proxy process
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temps}
{body}
}}
""")
    return conf


def peer_mtls(module: str, client_dir: Path) -> str:
    """nginx's directives for mTLS to nginx #2 (``module``: ``proxy`` or ``grpc``), as a mesh proxy dials a peer."""
    return f"""
      {module}_ssl_protocols TLSv1.3;
      {module}_ssl_certificate {client_dir}/cert.pem;
      {module}_ssl_certificate_key {client_dir}/key.pem;
      {module}_ssl_trusted_certificate {client_dir}/bundle.pem;
      {module}_ssl_verify on;
      {module}_ssl_verify_depth 3;
      {module}_ssl_name web;   # the leaf has only a URI SAN; OpenSSL then matches the name against CN=web
      {module}_ssl_session_reuse on;"""


def start_nginx(procs: Processes, tools: dict[str, str], name: str, prefix: Path, body: str, port: int,
                env: dict[str, str]) -> Proc:
    prefix.mkdir(parents=True)
    conf = nginx_conf(prefix, body)
    test = subprocess.run([tools["nginx"], "-t", "-q", "-p", f"{prefix}/", "-c", str(conf), "-e", f"{prefix}/error.log"],
                          capture_output=True, text=True, env=env)
    if test.returncode != 0:
        raise BenchError(f"{name}: nginx rejected its config {conf}:\n{test.stderr}")
    p = procs.start(name, "nginx", [tools["nginx"], "-p", f"{prefix}/", "-c", str(conf), "-e", f"{prefix}/error.log"],
                    prefix / "stderr.log", env)
    p.log = prefix / "error.log"
    wait_port(port, p.alive, name)
    deadline = time.monotonic() + 5
    while not p.workers and time.monotonic() < deadline:
        p.workers = children_of(p.popen.pid)
        time.sleep(0.05)
    if len(p.workers) != 1:
        raise BenchError(f"{name}: expected 1 nginx worker under master {p.popen.pid}, found {p.workers}")
    return p


# The proxies run through this launcher rather than as `mesh proxy ...`: on a shared
# machine someone's `pkill -f 'mesh proxy'` must not take the benchmark down halfway.
# It is the same interpreter and the same entry point as .venv/bin/mesh.
SIDECAR_PY = """\
import json, os, sys
from mesh.cli import main
sys.argv = ["mesh", *json.loads(os.environ.pop("MESH_BENCH_ARGV"))]
sys.exit(main())
"""

READY = re.compile(r"proxy (\S+) ready: inbound ([\d.]+):(\d+), outbound ([\d.]+):(\d+), admin ([\d.]+):(\d+)")


def start_mesh(procs: Processes, name: str, args: list[str], log_path: Path, env: dict[str, str],
               workers: int = 1) -> tuple[Proc, dict[str, int]]:
    if workers > 1:
        args = [*args, "--workers", str(workers)]
    p, m = launch_mesh(procs, name, ["proxy", *args], args[args.index("--service") + 1], READY, log_path, env, workers)
    if workers > 1:
        p.workers = children_of(p.popen.pid)  # measured: the workers, not their supervisor
        if len(p.workers) != workers:
            raise BenchError(f"{name}: expected {workers} workers under pid {p.popen.pid}, found {p.workers}")
    return p, {"inbound": int(m.group(3)), "outbound": int(m.group(5)), "admin": int(m.group(7))}


def launch_mesh(procs: Processes, name: str, argv: list[str], label: str, ready: re.Pattern[str], log_path: Path,
                env: dict[str, str], workers: int = 1) -> tuple[Proc, re.Match[str]]:
    """`mesh ARGV...` through the launcher; the process and its (first) ready line, once every worker has one."""
    launcher = log_path.parent / "sidecar.py"
    if not launcher.exists():
        launcher.write_text(SIDECAR_PY)
    env = dict(env, MESH_BENCH_ARGV=json.dumps(argv))
    p = procs.start(name, "mesh", [str(ROOT / ".venv" / "bin" / "python"), str(launcher), label], log_path, env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        m = ready.search(text)
        if m and len(ready.findall(text)) >= workers:
            return p, m
        if not p.alive():
            raise BenchError(f"{name} exited ({p.popen.returncode}) before it was ready:\n{tail(log_path)}")
        time.sleep(0.05)
    raise BenchError(f"{name} printed no 'ready' line within 20s:\n{tail(log_path)}")


def http_get(port: int, host: str = HOST_HEADER) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def verify_200(shape: str, port: int, host: str = HOST_HEADER) -> None:
    try:
        status, body, headers = http_get(port, host)
    except OSError as e:
        raise BenchError(f"{shape}: GET http://127.0.0.1:{port}/ (Host: {host}) failed: {e}") from None
    if status != 200 or body != b"hello\n":
        extra = f", x-mesh-error: {headers['x-mesh-error']}" if "x-mesh-error" in headers else ""
        raise BenchError(f"{shape}: GET http://127.0.0.1:{port}/ answered {status} {body[:200]!r}{extra}; expected 200 'hello'")


def verify_nginx_mtls(port: int, client_dir: Path) -> dict[str, Any]:
    """nginx #2 must demand a client certificate and speak TLS 1.3 with one."""

    def get(with_cert: bool) -> tuple[int, str | None]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # the leaves carry only a URI SAN
        ctx.load_verify_locations(client_dir / "bundle.pem")
        if with_cert:
            ctx.load_cert_chain(client_dir / "cert.pem", client_dir / "key.pem")
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            return resp.status, conn.sock.version() if conn.sock else None  # type: ignore[union-attr]
        finally:
            conn.close()

    try:
        with_status, version = get(True)
        without_status, _ = get(False)
    except (OSError, ssl.SSLError) as e:
        raise BenchError(f"nginx #2 (127.0.0.1:{port}): TLS check failed: {e}") from None
    if with_status != 200 or version != "TLSv1.3":
        raise BenchError(f"nginx #2: with a client certificate got {with_status} over {version}; expected 200 over TLSv1.3")
    if without_status != 400:
        raise BenchError(f"nginx #2: without a client certificate got {without_status}; expected 400 (certificate required)")
    return {"tls_version": version, "status_with_client_cert": with_status, "status_without_client_cert": without_status}


# ----------------------------------------------------------------------------- loads

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * UNITS[m.group(2)]


def run_tool(cmd: list[str], env: dict[str, str], timeout: float) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f}s") from None
    if r.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r.stdout


def parse_wrk(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise BenchError(f"cannot read wrk's output:\n{out}")
    res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            res[f"p{pct}_ms"] = to_ms(m.group(1))
    return res


def parse_hey(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise BenchError(f"cannot read hey's output:\n{out}")
    res["rps"] = float(m.group(1))
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}% in ([\d.]+) secs", out, re.M)
        res[f"p{pct}_ms"] = float(m.group(1)) * 1e3 if m else None
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    res["status_codes"] = codes
    res["requests"] = sum(codes.values())
    res["non_200"] = sum(n for c, n in codes.items() if c != 200)
    err = out.split("Error distribution:", 1)
    res["errors"] = sum(int(n) for n in re.findall(r"\[(\d+)\]", err[1])) if len(err) == 2 else 0
    return res


def parse_h2load(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    m = re.search(r"finished in [\d.]+(?:us|ms|s), ([\d.]+) req/s", out)
    if not m:
        raise BenchError(f"cannot read h2load's output:\n{out}")
    res["rps"] = float(m.group(1))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    if not m:
        raise BenchError(f"cannot read h2load's request counts:\n{out}")
    res["requests"] = int(m.group(3))
    res["failed"] = int(m.group(4))
    res["errors"] = int(m.group(5)) + int(m.group(6))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    res["non_2xx"] = sum(int(x) for x in m.groups()[1:]) if m else 0
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    res["mean_ms"] = to_ms(m.group(3)) if m else None
    return res


@dataclass
class Shape:
    name: str
    port: int
    proxies: list[Proc]  # the two proxy processes (none for direct)
    runs: list[dict[str, Any]] = field(default_factory=list)
    host: str = HOST_HEADER
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"


class Bench:
    def __init__(self, tools: dict[str, str], procs: Processes, app: Proc, duration: int, paced: float,
                 env: dict[str, str], pace_script: Path) -> None:
        self.tools, self.procs, self.app = tools, procs, app
        self.duration, self.paced, self.env, self.pace_script = duration, paced, env, pace_script
        self.other_apps: list[Proc] = []  # the grpc echo server: its CPU is not noise

    def cpu_snapshot(self, shape: Shape) -> dict[str, tuple[int, int]]:
        snap = {}
        for p in [*shape.proxies, self.app, *self.other_apps]:
            ticks = [cpu_ticks(pid) for pid in p.measured_pids]
            snap["app" if p is self.app else p.name] = (sum(t[0] for t in ticks), sum(t[1] for t in ticks))
        return snap

    def measured(self, shape: Shape, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        before = self.cpu_snapshot(shape)
        busy0, tools0 = machine_busy_ticks(), children_cpu_s()
        t0 = time.monotonic()
        res = fn()
        wall = time.monotonic() - t0
        busy1, tools1 = machine_busy_ticks(), children_cpu_s()
        after = self.cpu_snapshot(shape)
        res["cpu_s"] = {k: round((sum(after[k]) - sum(before[k])) / CLK_TCK, 2) for k in before}
        res["cpu_user_s"] = {k: round((after[k][0] - before[k][0]) / CLK_TCK, 2) for k in before}
        res["cpu_sys_s"] = {k: round((after[k][1] - before[k][1]) / CLK_TCK, 2) for k in before}
        if res.get("requests"):
            res["cpu_us_per_request"] = {k: round(v / res["requests"] * 1e6, 1) for k, v in res["cpu_s"].items()}
        res["wall_s"] = round(wall, 2)
        # Noise: CPU that neither the measured processes nor the load tool nor this script used.
        res["load_tool_cpu_s"] = round(tools1 - tools0, 2)
        res["machine_busy_cpu_s"] = round((busy1 - busy0) / CLK_TCK, 2)
        res["other_cpu_s"] = round(max(0.0, res["machine_busy_cpu_s"] - sum(res["cpu_s"].values()) - res["load_tool_cpu_s"]), 2)
        self.procs.check_alive()
        return res

    def wrk(self, shape: Shape, seconds: float) -> dict[str, Any]:
        cmd = [self.tools["wrk"], "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency",
               "-H", f"Host: {shape.host}", shape.url]
        return parse_wrk(run_tool(cmd, self.env, seconds + 30))

    def hey(self, shape: Shape) -> dict[str, Any]:
        cmd = [self.tools["hey"], "-z", f"{self.duration}s", "-c", str(CONNECTIONS), "-q", str(RATE_PER_CONNECTION),
               "-host", shape.host, shape.url]
        return parse_hey(run_tool(cmd, self.env, self.duration + 30))

    def paced_wrk(self, shape: Shape) -> dict[str, Any]:
        cmd = [self.tools["wrk"], "-t1", f"-c{CONNECTIONS}", f"-d{self.paced:g}s", "--latency", "-s", str(self.pace_script),
               "-H", f"Host: {shape.host}", shape.url]
        return parse_wrk(run_tool(cmd, self.env, self.paced + 30))

    def h2load(self, shape: Shape, seconds: float) -> dict[str, Any]:
        cmd = [self.tools["h2load"], "-t1", f"-c{H2_CONNECTIONS}", f"-m{H2_STREAMS}", "-D", f"{seconds:g}",
               "-H", f":authority: {HOST_HEADER}-h2", shape.url]
        return parse_h2load(run_tool(cmd, self.env, seconds + 30))

    def h2_round(self, shape: Shape, rnd: int) -> None:
        r = self.measured(shape, lambda: self.h2load(shape, self.duration))
        log(f"  {shape.name:<9} round {rnd}: h2load {r['rps']:>9.0f} req/s  mean {fmt(r['mean_ms'])} ms{noise(r)}")
        if r["failed"] or r["errors"] or r["non_2xx"]:
            log(f"  WARNING {shape.name}: " + json.dumps({k: r[k] for k in ("failed", "errors", "non_2xx")}))
        shape.runs.append({"round": rnd, "h2load": r})

    def grpc_load(self, shape: Shape, seconds: float) -> dict[str, Any]:
        cmd = [str(PYTHON), str(GRPC_LOAD), "load", str(shape.port), f"{HOST_HEADER}-grpc", f"{seconds:g}",
               str(GRPC_CONCURRENCY), str(GRPC_MESSAGE)]
        out = run_tool(cmd, self.env, seconds + 30)
        try:
            res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"cannot read the gRPC load tool's output:\n{out}") from None
        res["requests"] = res["calls"]
        return res

    def grpc_round(self, shape: Shape, rnd: int) -> None:
        r = self.measured(shape, lambda: self.grpc_load(shape, self.duration))
        log(f"  {shape.name:<11} round {rnd}: grpc {r['rps']:>7.0f} calls/s  p50 {fmt(r['p50_ms'])} ms  "
            f"p99 {fmt(r['p99_ms'])} ms{noise(r)}")
        if r["errors"]:
            log(f"  WARNING {shape.name}: {r['errors']} failed calls")
        shape.runs.append({"round": rnd, "grpc": r})

    def warm_up(self, shape: Shape) -> None:
        self.wrk(shape, 1)
        self.procs.check_alive()

    def one_round(self, shape: Shape, rnd: int) -> None:
        run: dict[str, Any] = {"round": rnd}
        run["wrk"] = self.measured(shape, lambda: self.wrk(shape, self.duration))
        log(f"  {shape.name:<6} round {rnd}: wrk {run['wrk']['rps']:>9.0f} req/s{noise(run['wrk'])}")
        run["hey"] = self.measured(shape, lambda: self.hey(shape))
        h = run["hey"]
        log(f"  {shape.name:<6} round {rnd}: hey {h['rps']:>6.0f} req/s  p50 {fmt(h['p50_ms'])} ms  p99 {fmt(h['p99_ms'])} ms{noise(h)}")
        if self.paced > 0:
            run["paced"] = self.measured(shape, lambda: self.paced_wrk(shape))
            pz = run["paced"]
            log(f"  {shape.name:<6} round {rnd}: paced {pz['rps']:>4.0f} req/s  p50 {fmt(pz.get('p50_ms'), 3)} ms  "
                f"p99 {fmt(pz.get('p99_ms'), 3)} ms{noise(pz)}")
        for kind in ("wrk", "hey", "paced"):
            r = run.get(kind)
            if r and (r.get("non_2xx") or r.get("non_200") or r.get("socket_errors") or r.get("errors")):
                log(f"  WARNING {shape.name} {kind}: errors or non-200 responses: "
                    + json.dumps({k: r.get(k) for k in ('non_2xx', 'non_200', 'socket_errors', 'errors', 'status_codes')}))
        shape.runs.append(run)


# ----------------------------------------------------------------------------- report


def noise(r: dict[str, Any]) -> str:
    return f"   [other processes: {r['other_cpu_s']:.1f} CPU-s in {r['wall_s']:.0f} s]"


def fmt(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 4) if vals else None


def summarise(shapes: dict[str, Shape]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, s in shapes.items():
        m: dict[str, Any] = {
            "rps": med([r["wrk"]["rps"] for r in s.runs]),
            "p50_ms": med([r["hey"]["p50_ms"] for r in s.runs]),
            "p99_ms": med([r["hey"]["p99_ms"] for r in s.runs]),
            "rate_rps": med([r["hey"]["rps"] for r in s.runs]),
        }
        if all("paced" in r for r in s.runs):
            m["paced_p50_ms"] = med([r["paced"].get("p50_ms") for r in s.runs])
            m["paced_p99_ms"] = med([r["paced"].get("p99_ms") for r in s.runs])
            m["paced_rps"] = med([r["paced"]["rps"] for r in s.runs])
        m["cpu_s_max"] = {p.name: med([r["wrk"]["cpu_s"][p.name] for r in s.runs]) for p in s.proxies}
        m["cpu_s_500"] = {p.name: med([r["hey"]["cpu_s"][p.name] for r in s.runs]) for p in s.proxies}
        m["cpu_s_app_max"] = med([r["wrk"]["cpu_s"]["app"] for r in s.runs])
        m["cpu_us_per_request_max"] = {p.name: med([r["wrk"]["cpu_us_per_request"][p.name] for r in s.runs]) for p in s.proxies}
        m["cpu_us_per_request_500"] = {p.name: med([r["hey"]["cpu_us_per_request"][p.name] for r in s.runs]) for p in s.proxies}
        user = sum(r["wrk"]["cpu_user_s"][p.name] for r in s.runs for p in s.proxies)
        total = sum(r["wrk"]["cpu_s"][p.name] for r in s.runs for p in s.proxies)
        m["proxy_user_share_max"] = round(user / total, 3) if total else None
        out[name] = m
    return out


def target_checks(med_: dict[str, Any], rss: dict[str, float]) -> list[dict[str, Any]]:
    d, m, n = med_["direct"], med_["mesh"], med_["nginx"]
    tput = ratio(m["rps"], n["rps"])
    add50 = diff(m["p50_ms"], d["p50_ms"])
    add99 = diff(m["p99_ms"], d["p99_ms"])
    mesh_rss = [v for k, v in rss.items() if k.startswith("mesh")]
    worst = max(mesh_rss) if mesh_rss else None

    def check(name: str, value: float | None, ok: bool, target: str, shown: str) -> dict[str, Any]:
        return {"target": name, "value": value, "goal": target, "shown": shown,
                "result": "?" if value is None else ("PASS" if ok else "MISS")}

    T = TARGETS
    cpu = max(m["cpu_us_per_request_max"].values(), default=None)
    return [
        check("mesh throughput vs nginx", tput, tput is not None and tput >= T["throughput_vs_nginx_min"],
              f">= {T['throughput_vs_nginx_min']:.0%}", pct(tput)),
        check("CPU per request per proxy", cpu, cpu is not None and cpu <= T["cpu_us_per_request_max"],
              f"<= {T['cpu_us_per_request_max']:g} us", f"{fmt(cpu, 0)} us"),
        check("added latency p50 @500 rps", add50, add50 is not None and add50 <= T["added_p50_ms_max"],
              f"<= {T['added_p50_ms_max']:g} ms", f"{fmt(add50)} ms"),
        check("added latency p99 @500 rps", add99, add99 is not None and add99 <= T["added_p99_ms_max"],
              f"<= {T['added_p99_ms_max']:g} ms", f"{fmt(add99)} ms"),
        check("peak RSS per mesh proxy", worst, worst is not None and worst <= T["rss_mb_max"],
              f"<= {T['rss_mb_max']:g} MB", f"{fmt(worst, 1)} MB"),
    ]


def h2_target_checks(med_: dict[str, Any]) -> list[dict[str, Any]]:
    m, n = med_["mesh-h2"], med_["nginx-h2"]
    tput = ratio(m["rps"], n["rps"])
    cpu = max(m["cpu_us_per_request"].values(), default=None)
    T = TARGETS
    return [
        {"target": "HTTP/2 mesh throughput vs nginx", "value": tput, "goal": f">= {T['h2_throughput_vs_nginx_min']:.0%}",
         "shown": pct(tput), "result": "?" if tput is None else ("PASS" if tput >= T["h2_throughput_vs_nginx_min"] else "MISS")},
        {"target": "HTTP/2 CPU per request per proxy", "value": cpu, "goal": f"<= {T['h2_cpu_us_per_request_max']:g} us",
         "shown": f"{fmt(cpu, 0)} us",
         "result": "?" if cpu is None else ("PASS" if cpu <= T["h2_cpu_us_per_request_max"] else "MISS")},
    ]


def render(meta: dict[str, Any], med_: dict[str, Any], rss: dict[str, float], checks: list[dict[str, Any]],
           shapes: dict[str, Shape]) -> str:
    lines = []
    lines.append(f"mesh benchmark  {meta['date']}  {meta['machine']['nproc']} CPUs  {meta['machine']['cpu_model']}")
    lines.append(f"loads: wrk -t1 -c{CONNECTIONS} -d{meta['duration_s']}s (max throughput); "
                 f"hey -z {meta['duration_s']}s -c {CONNECTIONS} -q {RATE_PER_CONNECTION} (~{CONNECTIONS * RATE_PER_CONNECTION} req/s, latency)"
                 + (f"; wrk + exponential think time -d{meta['paced_s']:g}s (~500 req/s, spread-out arrivals)" if meta["paced_s"] else ""))
    lines.append(f"order: {' '.join(meta['order'])}; figures are medians of {meta['rounds']} rounds")
    lines.append("nginx: worker_processes 1 per nginx (one process per proxy, like mesh); TLS 1.3 + client certificate between "
                 "nginx #1 and #2; upstream keepalive on both hops")
    lines.append("CPU s and RSS are per proxy process: mesh = the outbound (client) and inbound (web) proxy; nginx = worker of #1 and #2; "
                 "mesh-2w = the same with --workers 2 (CPU: both workers of a proxy; RSS: one worker)")
    lines.append("")
    paced = bool(meta["paced_s"])
    hdr = ["shape", "req/s (wrk)", "p50 ms", "p99 ms"]
    if paced:
        hdr += ["paced p50", "paced p99"]
    hdr += ["CPU s @max (out/in)", "CPU s @500 (out/in)", "peak RSS MB (out/in)"]
    rows = [hdr]
    for name, s in shapes.items():
        m = med_[name]
        row = [name, f"{m['rps']:.0f}", fmt(m["p50_ms"]), fmt(m["p99_ms"])]
        if paced:
            row += [fmt(m.get("paced_p50_ms"), 3), fmt(m.get("paced_p99_ms"), 3)]
        if s.proxies:
            row += [" / ".join(fmt(m["cpu_s_max"][p.name]) for p in s.proxies),
                    " / ".join(fmt(m["cpu_s_500"][p.name]) for p in s.proxies),
                    " / ".join(fmt(rss[p.name], 1) for p in s.proxies)]
        else:
            row += ["-", "-", "-"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(hdr))]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    d, m, n = med_["direct"], med_["mesh"], med_["nginx"]
    lines.append(f"mesh/nginx throughput: {pct(ratio(m['rps'], n['rps']))}   mesh/direct: {pct(ratio(m['rps'], d['rps']))}   "
                 f"nginx/direct: {pct(ratio(n['rps'], d['rps']))}")
    w2 = med_["mesh-2w"]
    lines.append(f"mesh with --workers 2 (each proxy): {w2['rps']:.0f} req/s, {fmt(ratio(w2['rps'], m['rps']))}x one worker, "
                 f"{pct(ratio(w2['rps'], n['rps']))} of nginx (wrk, both proxies and the app share {os.cpu_count()} CPUs)")
    for who, x in (("mesh", m), ("nginx", n)):
        s = (f"{who} added latency over direct @~500 req/s (hey): p50 {fmt(diff(x['p50_ms'], d['p50_ms']))} ms, "
             f"p99 {fmt(diff(x['p99_ms'], d['p99_ms']))} ms")
        if paced:
            s += (f"; paced: p50 {fmt(diff(x.get('paced_p50_ms'), d.get('paced_p50_ms')), 3)} ms, "
                  f"p99 {fmt(diff(x.get('paced_p99_ms'), d.get('paced_p99_ms')), 3)} ms")
        lines.append(s)
    for name in ("mesh", "mesh-2w", "nginx"):
        x = med_[name]
        per = ", ".join(f"{k} {fmt(v, 0)} us" for k, v in x["cpu_us_per_request_max"].items())
        lines.append(f"{name} CPU per request at max load: {per}; user-space share of proxy CPU {fmt((x['proxy_user_share_max'] or 0) * 100, 0)}%")
    for name in TELEMETRY_SHAPES:
        if name in med_:
            lines.append(telemetry_cost(name, med_[name], m, shapes[name], shapes["mesh"]))
    others = [r[k]["other_cpu_s"] / r[k]["wall_s"] for s in shapes.values() for r in s.runs for k in ("wrk", "hey", "paced") if k in r]
    if others:
        lines.append(f"noise: processes outside the benchmark used {statistics.mean(others):.2f} CPUs on average "
                     f"(max {max(others):.2f}) of {os.cpu_count()} during the runs")
        if statistics.mean(others) > 0.1:
            lines.append("WARNING: other processes competed for the CPUs; the figures are pessimistic. Re-run on a quiet machine.")
    for name, sh in shapes.items():
        bad = sum((r[k].get("non_2xx") or 0) + (r[k].get("non_200") or 0) + (r[k].get("socket_errors") or 0)
                  + (r[k].get("errors") or 0) for r in sh.runs for k in ("wrk", "hey", "paced") if k in r)
        if bad:
            lines.append(f"WARNING: {name}: {bad} failed or non-200 requests across the loads (details in the JSON)")
    lines.append("")
    lines.append("targets (reported, not enforced):")
    for c in checks:
        lines.append(f"  {c['result']:<4}  {c['target']:<28} {c['shown']:>10}   (target {c['goal']})")
    a50 = diff(m.get("paced_p50_ms"), d.get("paced_p50_ms"))
    a99 = diff(m.get("paced_p99_ms"), d.get("paced_p99_ms"))
    if paced and a50 is not None and a99 is not None:
        lines.append(f"  (info: with spread-out arrivals the mesh adds p50 {a50:.3f} ms, p99 {a99:.3f} ms: "
                     f"{'PASS' if a50 <= TARGETS['added_p50_ms_max'] else 'MISS'} / {'PASS' if a99 <= TARGETS['added_p99_ms_max'] else 'MISS'})")
    return "\n".join(lines)


def telemetry_cost(name: str, x: dict[str, Any], mesh: dict[str, Any], shape: Shape, mesh_shape: Shape) -> str:
    """What a telemetry pair costs over the plain mesh pair: CPU per request (out/in) and throughput."""
    per = " / ".join(
        f"{fmt(x['cpu_us_per_request_max'][p.name], 0)} us ({diff(x['cpu_us_per_request_max'][p.name], mesh['cpu_us_per_request_max'][q.name]) or 0:+.0f})"
        for p, q in zip(shape.proxies, mesh_shape.proxies, strict=True)
    )
    return (f"{name}: CPU per request at max load (out / in, vs mesh) {per}; throughput {pct(ratio(x['rps'], mesh['rps']))} of mesh; "
            f"p50/p99 @~500 req/s {fmt(x['p50_ms'])}/{fmt(x['p99_ms'])} ms (mesh {fmt(mesh['p50_ms'])}/{fmt(mesh['p99_ms'])})")


def summarise_h2(shapes: dict[str, Shape]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, s in shapes.items():
        out[name] = {
            "rps": med([r["h2load"]["rps"] for r in s.runs]),
            "mean_ms": med([r["h2load"]["mean_ms"] for r in s.runs]),
            "cpu_s": {p.name: med([r["h2load"]["cpu_s"][p.name] for r in s.runs]) for p in s.proxies},
            "cpu_us_per_request": {p.name: med([r["h2load"]["cpu_us_per_request"][p.name] for r in s.runs])
                                   for p in s.proxies},
            "failed": sum(r["h2load"]["failed"] + r["h2load"]["errors"] + r["h2load"]["non_2xx"] for r in s.runs),
        }
    return out


def render_h2(med_: dict[str, Any], shapes: dict[str, Shape]) -> str:
    lines = [f"HTTP/2: h2load -t1 -c{H2_CONNECTIONS} -m{H2_STREAMS} (h2c to the first hop and to the app; "
             "ALPN h2 over mTLS between the proxies; nginx: grpc_pass)"]
    rows = [["shape", "req/s (h2load)", "mean ms", "CPU s (out/in)", "CPU us/req (out/in)"]]
    for name, s in shapes.items():
        m = med_[name]
        rows.append([name, f"{m['rps']:.0f}", fmt(m["mean_ms"]),
                     " / ".join(fmt(m["cpu_s"][p.name]) for p in s.proxies) or "-",
                     " / ".join(fmt(m["cpu_us_per_request"][p.name], 0) for p in s.proxies) or "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    d, m, n = (med_[k] for k in ("direct-h2", "mesh-h2", "nginx-h2"))
    lines.append(f"HTTP/2 mesh/nginx throughput: {pct(ratio(m['rps'], n['rps']))}   mesh/direct: {pct(ratio(m['rps'], d['rps']))}"
                 f"   nginx/direct: {pct(ratio(n['rps'], d['rps']))}")
    for name, x in med_.items():
        if x["failed"]:
            lines.append(f"WARNING: {name}: {x['failed']} failed, errored or non-2xx HTTP/2 requests (details in the JSON)")
    lines.append("targets (reported, not enforced):")
    for c in h2_target_checks(med_):
        lines.append(f"  {c['result']:<4}  {c['target']:<34} {c['shown']:>10}   (target {c['goal']})")
    return "\n".join(lines)


def summarise_grpc(shapes: dict[str, Shape]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, s in shapes.items():
        out[name] = {
            "rps": med([r["grpc"]["rps"] for r in s.runs]),
            "p50_ms": med([r["grpc"]["p50_ms"] for r in s.runs]),
            "p99_ms": med([r["grpc"]["p99_ms"] for r in s.runs]),
            "cpu_s": {p.name: med([r["grpc"]["cpu_s"][p.name] for r in s.runs]) for p in s.proxies},
            "cpu_us_per_request": {p.name: med([r["grpc"]["cpu_us_per_request"][p.name] for r in s.runs])
                                   for p in s.proxies},
            "errors": sum(r["grpc"]["errors"] for r in s.runs),
        }
    return out


def grpc_target_check(med_: dict[str, Any]) -> dict[str, Any]:
    value = ratio(med_["mesh-grpc"]["rps"], med_["direct-grpc"]["rps"])
    goal = TARGETS["grpc_vs_direct_min"]
    return {"target": "gRPC mesh calls/s vs direct", "value": value, "goal": f">= {goal:.0%}", "shown": pct(value),
            "result": "?" if value is None else ("PASS" if value >= goal else "MISS")}


def render_grpc(med_: dict[str, Any], shapes: dict[str, Shape]) -> str:
    lines = [f"gRPC: grpcio client, unary calls of {GRPC_MESSAGE} bytes, {GRPC_CONCURRENCY} in flight on one channel "
             "(h2c to the first hop and to the app; ALPN h2 over mTLS between the proxies)"]
    rows = [["shape", "calls/s", "p50 ms", "p99 ms", "CPU s (out/in)", "CPU us/call (out/in)"]]
    for name, s in shapes.items():
        m = med_[name]
        rows.append([name, f"{m['rps']:.0f}", fmt(m["p50_ms"]), fmt(m["p99_ms"]),
                     " / ".join(fmt(m["cpu_s"][p.name]) for p in s.proxies) or "-",
                     " / ".join(fmt(m["cpu_us_per_request"][p.name], 0) for p in s.proxies) or "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for name, x in med_.items():
        if x["errors"]:
            lines.append(f"WARNING: {name}: {x['errors']} failed calls (details in the JSON)")
    c = grpc_target_check(med_)
    lines.append("targets (reported, not enforced):")
    lines.append(f"  {c['result']:<4}  {c['target']:<34} {c['shown']:>10}   (target {c['goal']})")
    return "\n".join(lines)


def verify_h2(shape: str, tools: dict[str, str], port: int, env: dict[str, str]) -> None:
    out = run_tool([tools["h2load"], "-n", "20", "-c", "1", "-m", "4", "-H", f":authority: {HOST_HEADER}-h2",
                    f"http://127.0.0.1:{port}/"], env, 30)
    r = parse_h2load(out)
    if r["requests"] != 20 or r["non_2xx"]:
        raise BenchError(f"{shape}: h2load -n 20 against 127.0.0.1:{port} did not get 20 x 2xx:\n{out}")


# ----------------------------------------------------------------------------- the edge row

EDGE_READY = re.compile(r"proxy (\S+) ready: admin [\d.]+:\d+, admin-mtls [\d.]+:\d+, listen https ([\d.]+):(\d+)")


def edge_certificate(directory: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for `web` (the operator's own certificate at the edge)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "edge.pem", directory / "edge.key"
    run_tool(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={HOST_HEADER}",
              "-addext", f"subjectAltName=DNS:{HOST_HEADER}"], env, 30)
    return cert, key


def start_edge_gateway(procs: Processes, cert: Path, key: Path, endpoints: Path, log_path: Path,
                       env: dict[str, str]) -> tuple[Proc, int]:
    argv = ["gateway", "--name", "edge", "--to", HOST_HEADER, "--listen", "127.0.0.1:0", "--tls-cert", str(cert),
            "--tls-key", str(key), "--endpoints", str(endpoints), "--no-zeroconf", "--client-connections", "0"]
    p, m = launch_mesh(procs, "mesh gateway (edge)", argv, "edge", EDGE_READY, log_path, env)
    return p, int(m.group(3))


def nginx_edge_conf(port: int, peer_port: int, cert: Path, key: Path, client_dir: Path) -> str:
    """nginx terminating TLS (HTTP/1.1 and HTTP/2 by ALPN) in front of nginx #2, over mTLS as nginx #1 does."""
    return f"""\
  upstream peer_edge {{ server 127.0.0.1:{peer_port}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_session_cache shared:EDGE:1m;
    keepalive_requests 100000;
    location / {{
      proxy_pass https://peer_edge;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;{peer_mtls("proxy", client_dir)}
    }}
  }}"""


def verify_https(shape: str, port: int) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the edge certificate is self-signed
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": HOST_HEADER})
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
    except OSError as e:
        raise BenchError(f"{shape}: GET https://127.0.0.1:{port}/ failed: {e}") from None
    finally:
        conn.close()
    if status != 200 or body != b"hello\n":
        raise BenchError(f"{shape}: GET https://127.0.0.1:{port}/ answered {status} {body[:200]!r}; expected 200 'hello'")


def edge_round(bench: Bench, shape: Shape, rnd: int) -> None:
    run: dict[str, Any] = {"round": rnd, "wrk": bench.measured(shape, lambda: bench.wrk(shape, bench.duration))}
    log(f"  {shape.name:<10} round {rnd}: wrk (HTTP/1.1 over TLS) {run['wrk']['rps']:>8.0f} req/s{noise(run['wrk'])}")
    if "h2load" in bench.tools:
        def h2() -> dict[str, Any]:
            cmd = [bench.tools["h2load"], "-t1", f"-c{H2_CONNECTIONS}", f"-m{H2_STREAMS}", "-D", f"{bench.duration:g}",
                   "-H", f":authority: {HOST_HEADER}", shape.url]
            return parse_h2load(run_tool(cmd, bench.env, bench.duration + 30))

        run["h2load"] = bench.measured(shape, h2)
        log(f"  {shape.name:<10} round {rnd}: h2load (HTTP/2 over TLS) {run['h2load']['rps']:>7.0f} req/s{noise(run['h2load'])}")
    shape.runs.append(run)


def summarise_edge(shapes: dict[str, Shape]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, s in shapes.items():
        m: dict[str, Any] = {}
        for load in ("wrk", "h2load"):
            runs = [r[load] for r in s.runs if load in r]
            if not runs:
                continue
            m[load] = {
                "rps": med([r["rps"] for r in runs]),
                "cpu_us_per_request": {p.name: med([r["cpu_us_per_request"][p.name] for r in runs]) for p in s.proxies},
                "failed": sum((r.get("non_2xx") or 0) + (r.get("socket_errors") or 0) + (r.get("failed") or 0)
                              + (r.get("errors") or 0) for r in runs),
            }
        out[name] = m
    return out


def render_edge(med_: dict[str, Any], shapes: dict[str, Shape]) -> str:
    lines = ["HTTPS at the edge: client --TLS--> mesh gateway | nginx (edge) --mTLS--> mesh inbound | nginx #2 --> app; "
             f"wrk -t1 -c{CONNECTIONS} (HTTP/1.1 over TLS), h2load -t1 -c{H2_CONNECTIONS} -m{H2_STREAMS} (ALPN h2; "
             "HTTP/1.1 on to the app)"]
    rows = [["shape", "req/s HTTP/1.1", "CPU us/req (edge/in)", "req/s HTTP/2", "CPU us/req (edge/in)"]]
    for name, s in shapes.items():
        m = med_[name]
        row = [name]
        for load in ("wrk", "h2load"):
            x = m.get(load)
            row += [f"{x['rps']:.0f}", " / ".join(fmt(x["cpu_us_per_request"][p.name], 0) for p in s.proxies)] if x else ["-", "-"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    m, n = med_["mesh-edge"], med_["nginx-edge"]
    for load, what in (("wrk", "HTTP/1.1"), ("h2load", "HTTP/2")):
        if load in m and load in n:
            lines.append(f"edge {what} mesh/nginx throughput: {pct(ratio(m[load]['rps'], n[load]['rps']))}")
    for name, x in med_.items():
        bad = sum(v["failed"] for v in x.values())
        if bad:
            lines.append(f"WARNING: {name}: {bad} failed or non-2xx requests at the edge (details in the JSON)")
    return "\n".join(lines)


def source_state() -> dict[str, Any]:
    """Which code was measured: HEAD, and a digest of mesh/ as it is on disk (it may be uncommitted)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((ROOT / "mesh").rglob("*.py")):
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "mesh"], capture_output=True, text=True)
    return {"git_head": head.stdout.strip() or None, "mesh_dirty_files": len(dirty.stdout.splitlines()),
            "mesh_sources_sha256": h.hexdigest()[:16]}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, metavar="SECONDS", help="length of each load run (default 10)")
    ap.add_argument("--quick", action="store_true", help="3 s runs")
    ap.add_argument("--out", type=Path, metavar="FILE", help="JSON results file (default bench-results/bench-<timestamp>.json)")
    ap.add_argument("--no-paced", action="store_true", help="skip the paced (exponential think time) latency run")
    ap.add_argument("--only", choices=("http1", "http2", "grpc", "edge"), help="run one row's loads (default: all)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, certificates, logs)")
    ap.add_argument("--access-log", action="store_true", help="also a mesh pair with access logs on (shape mesh+log)")
    ap.add_argument("--trace", action="store_true", help="also a mesh pair exporting spans to an OTLP sink (shape mesh+trace)")
    args = ap.parse_args(argv)
    duration = 3 if args.quick else args.duration
    if duration < 1:
        ap.error("--duration must be at least 1")
    paced = 0.0 if args.no_paced else max(2.0, round(duration * 0.4))
    rounds = 2

    try:
        tools = check_tools()
        if args.only == "http2" and "h2load" not in tools:
            raise BenchError("--only http2 needs h2load (apt-get install nghttp2-client)")
    except BenchError as e:
        log(f"error: {e}")
        return 2
    started = dt.datetime.now().astimezone()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "bench-results" / f"bench-{stamp}.json"
    shape_count = 4 + args.access_log + args.trace  # direct, mesh, mesh-2w, nginx, and the telemetry pairs
    estimate = (10 + (args.only in (None, "http1")) * (shape_count * 1.5 + rounds * shape_count * (2 * duration + paced + 0.5))
                + ("h2load" in tools and args.only in (None, "http2")) * (3 + rounds * 3 * duration)
                + (args.only in (None, "grpc")) * (2 + rounds * 2 * duration))
    estimate += (args.only in (None, "edge")) * (5 + rounds * 2 * duration * (1 + ("h2load" in tools)))  # the edge row
    log(f"{rounds} rounds x {shape_count} shapes, {duration}s per load; about {estimate:.0f}s in all")

    def on_signal(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    source = source_state()  # before the proxies start: the code they load
    tmp = Path(tempfile.mkdtemp(prefix="mesh-bench-"))
    procs = Processes()
    env = load_env()
    mesh_env = dict(env, MESH_HOME=str(tmp / "home"))
    failed = False
    try:
        # --- the app
        h2 = "h2load" in tools
        grpc = args.only in (None, "grpc")
        app_port, app_h2_port = free_port(), free_port()
        app_h2_server = f"""
  server {{
    listen 127.0.0.1:{app_h2_port} http2;
    keepalive_requests 10000000;  # nginx ends an HTTP/2 connection after 1000 requests by default
    location / {{ return 200 "hello\\n"; }}
  }}""" if h2 else ""
        app = start_nginx(procs, tools, "app (nginx)", tmp / "app", f"""\
  server {{
    listen 127.0.0.1:{app_port};
    location / {{ return 200 "hello\\n"; }}
  }}{app_h2_server}""", app_port, env)
        verify_200("direct", app_port)
        if h2:
            wait_port(app_h2_port, app.alive, "app (nginx, HTTP/2)")
            verify_h2("direct-h2", tools, app_h2_port, env)
        if grpc:
            app_grpc_port = free_port()
            app_grpc = procs.start("app (grpc)", "grpc", [str(PYTHON), str(GRPC_LOAD), "serve", str(app_grpc_port)],
                                   tmp / "grpc-app.log", env)
            wait_port(app_grpc_port, app_grpc.alive, "app (grpc echo server)")

        # --- certificates
        log("CA and certificates (mesh ca init / mesh ca issue)")
        # A trust domain of its own: proxies that discover peers by zeroconf on loopback
        # ignore other meshes' services (other trust domains) on a shared machine.
        trust_domain = f"bench-{os.getpid()}-{secrets.token_hex(3)}.test"
        run_mesh(["ca", "init", "--trust-domain", trust_domain], mesh_env)
        certs = tmp / "certs"
        run_mesh(["ca", "issue", "nginx-client", "--out", str(certs / "client")], mesh_env)
        run_mesh(["ca", "issue", "web", "--out", str(certs / "web")], mesh_env)

        # --- mesh pair
        log("starting mesh proxies")
        web, web_ports = start_mesh(procs, "mesh inbound (web)", [
            "--service", "web", "--app", f"127.0.0.1:{app_port}", "--inbound", "127.0.0.1:0",
            "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--drain-timeout", "1s"], tmp / "mesh-web.log", mesh_env)
        endpoints = tmp / "endpoints.toml"
        entries = [("web", web_ports["inbound"])]
        if h2:  # its own sidecar: the inbound proxy speaks HTTP/2 (h2c) to an app when its callers do
            web_h2, web_h2_ports = start_mesh(procs, "mesh inbound (web-h2)", [
                "--service", f"{HOST_HEADER}-h2", "--app", f"127.0.0.1:{app_h2_port}", "--inbound", "127.0.0.1:0",
                "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--drain-timeout", "1s"], tmp / "mesh-web-h2.log",
                mesh_env)
            web_h2.name = "mesh inbound h2"
            entries.append((f"{HOST_HEADER}-h2", web_h2_ports["inbound"]))
        if grpc:  # and one in front of the grpcio server
            web_grpc, web_grpc_ports = start_mesh(procs, "mesh inbound (web-grpc)", [
                "--service", f"{HOST_HEADER}-grpc", "--app", f"127.0.0.1:{app_grpc_port}", "--inbound", "127.0.0.1:0",
                "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--drain-timeout", "1s"], tmp / "mesh-web-grpc.log",
                mesh_env)
            web_grpc.name = "mesh inbound grpc"
            entries.append((f"{HOST_HEADER}-grpc", web_grpc_ports["inbound"]))
        endpoints.write_text("".join(f'[[endpoint]]\nservice = "{svc}"\naddress = "127.0.0.1:{port}"\n\n'
                                     for svc, port in entries))
        client, client_ports = start_mesh(procs, "mesh outbound (client)", [
            "--service", "client", "--app", "127.0.0.1:1", "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0",
            "--admin", "127.0.0.1:0", "--endpoints", str(endpoints), "--drain-timeout", "1s"], tmp / "mesh-client.log", mesh_env)
        client.name, web.name = "mesh outbound", "mesh inbound"
        verify_200("mesh", client_ports["outbound"])
        # The same pair, each proxy with --workers 2 (SO_REUSEPORT): how the mesh uses a second CPU.
        # A service name of its own: with zeroconf on, a second `web` would be found by the mesh
        # pair's client too, which would then split its requests between both pairs.
        web2, web2_ports = start_mesh(procs, "mesh-2w inbound (web)", [
            "--service", WORKERS_SERVICE, "--app", f"127.0.0.1:{app_port}", "--inbound", "127.0.0.1:0",
            "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--drain-timeout", "1s"], tmp / "mesh-2w-web.log",
            mesh_env, workers=2)
        endpoints2 = tmp / "endpoints-2w.toml"
        endpoints2.write_text(f'[[endpoint]]\nservice = "{WORKERS_SERVICE}"\naddress = "127.0.0.1:{web2_ports["inbound"]}"\n')
        client2, client2_ports = start_mesh(procs, "mesh-2w outbound (client)", [
            "--service", "client", "--app", "127.0.0.1:1", "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0",
            "--admin", "127.0.0.1:0", "--endpoints", str(endpoints2), "--drain-timeout", "1s"], tmp / "mesh-2w-client.log",
            mesh_env, workers=2)
        client2.name, web2.name = "mesh-2w outbound", "mesh-2w inbound"
        verify_200("mesh-2w", client2_ports["outbound"], host=WORKERS_SERVICE)
        if h2:
            verify_h2("mesh-h2", tools, client_ports["outbound"], mesh_env)

        # --- nginx pair
        log("starting nginx pair")
        n2_port, n1_port, n2_h2_port, n1_h2_port = free_port(), free_port(), free_port(), free_port()
        web_c = certs / "web"
        cl_c = certs / "client"
        server_tls = f"""
    ssl_protocols TLSv1.3;
    ssl_certificate {web_c}/cert.pem;
    ssl_certificate_key {web_c}/key.pem;
    ssl_client_certificate {web_c}/bundle.pem;
    ssl_verify_client on;
    ssl_verify_depth 3;
    ssl_session_cache shared:SSL:1m;"""
        # HTTP/2 between the nginx pair: grpc_pass is nginx's one HTTP/2 upstream module.
        n2_h2 = f"""
  upstream app_h2 {{ server 127.0.0.1:{app_h2_port}; keepalive {H2_UPSTREAM_KEEPALIVE}; }}
  server {{
    listen 127.0.0.1:{n2_h2_port} ssl http2;{server_tls}
    keepalive_requests 10000000;
    location / {{ grpc_pass grpc://app_h2; }}
  }}""" if h2 else ""
        n1_h2 = f"""
  upstream peer_h2 {{ server 127.0.0.1:{n2_h2_port}; keepalive {H2_UPSTREAM_KEEPALIVE}; }}
  server {{
    listen 127.0.0.1:{n1_h2_port} http2;
    keepalive_requests 10000000;
    location / {{
      grpc_pass grpcs://peer_h2;{peer_mtls("grpc", cl_c)}
    }}
  }}""" if h2 else ""
        n2 = start_nginx(procs, tools, "nginx #2 (inbound)", tmp / "nginx2", f"""\
  upstream app {{ server 127.0.0.1:{app_port}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{n2_port} ssl;{server_tls}
    keepalive_requests 100000;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}{n2_h2}""", n2_port, env)
        verify = verify_nginx_mtls(n2_port, certs / "client")
        n1 = start_nginx(procs, tools, "nginx #1 (outbound)", tmp / "nginx1", f"""\
  upstream peer {{ server 127.0.0.1:{n2_port}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{n1_port};
    keepalive_requests 100000;
    location / {{
      proxy_pass https://peer;
      proxy_http_version 1.1;
      proxy_set_header Connection "";{peer_mtls("proxy", cl_c)}
    }}
  }}{n1_h2}""", n1_port, env)
        n1.name, n2.name = "nginx #1", "nginx #2"
        verify_200("nginx", n1_port)
        if h2:
            wait_port(n1_h2_port, n1.alive, "nginx #1 (HTTP/2)")
            verify_h2("nginx-h2", tools, n1_h2_port, env)

        shapes = {
            "direct": Shape("direct", app_port, []),
            "mesh": Shape("mesh", client_ports["outbound"], [client, web]),
            "mesh-2w": Shape("mesh-2w", client2_ports["outbound"], [client2, web2], host=WORKERS_SERVICE),  # both proxies with --workers 2
        }
        # Mesh pairs with telemetry on, each serving a service of its own (zeroconf never mixes them).
        for name, (option, flags) in TELEMETRY_SHAPES.items():
            if not getattr(args, option):
                continue
            service = f"{HOST_HEADER}-{name.split('+')[1]}"
            log(f"starting the {name} pair")
            sink = f"http://127.0.0.1:{app_port}"  # nginx answers the OTLP POSTs 200: a sink

            def pair_flags(proxy_service: str) -> list[str]:
                return [f.format(dir=tmp, sink=sink, service=proxy_service) for f in flags]  # noqa: B023

            t_web, t_web_ports = start_mesh(procs, f"{name} inbound", [
                "--service", service, "--app", f"127.0.0.1:{app_port}", "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0",
                "--admin", "127.0.0.1:0", "--drain-timeout", "1s", *pair_flags(service)], tmp / f"{service}.log", mesh_env)
            t_endpoints = tmp / f"endpoints-{service}.toml"
            t_endpoints.write_text(f'[[endpoint]]\nservice = "{service}"\naddress = "127.0.0.1:{t_web_ports["inbound"]}"\n')
            t_client, t_client_ports = start_mesh(procs, f"{name} outbound", [
                "--service", f"client-{service}", "--app", "127.0.0.1:1", "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0",
                "--admin", "127.0.0.1:0", "--endpoints", str(t_endpoints), "--drain-timeout", "1s",
                *pair_flags(f"client-{service}")], tmp / f"client-{service}.log", mesh_env)
            t_client.name, t_web.name = f"{name} outbound", f"{name} inbound"
            verify_200(name, t_client_ports["outbound"], service)
            shapes[name] = Shape(name, t_client_ports["outbound"], [t_client, t_web], host=service)
        shapes["nginx"] = Shape("nginx", n1_port, [n1, n2])
        pace_script = tmp / "pace.lua"
        pace_script.write_text(PACE_LUA % round(1000 / RATE_PER_CONNECTION))
        bench = Bench(tools, procs, app, duration, paced, env, pace_script)

        run_http1, run_http2, run_edge = (args.only in (None, row) for row in ("http1", "http2", "edge"))
        if run_http1:
            log("warm-up (1 s wrk per shape, not counted)")
            for s in shapes.values():
                bench.warm_up(s)
        order = []
        for rnd in range(1, rounds + 1) if run_http1 else ():
            for name, shape in shapes.items():
                order.append(name)
                bench.one_round(shape, rnd)
        # Peak RSS for the HTTP/1 target is read before the HTTP/2 loads (the outbound proxy serves both).
        http1_every = list(shapes.values())
        rss_http1 = {p.name: proc_status_kb(pid, "VmHWM") / 1024 for s in http1_every for p in s.proxies for pid in p.measured_pids}
        h2_shapes: dict[str, Shape] = {}
        if h2 and run_http2:
            h2_shapes = {
                "direct-h2": Shape("direct-h2", app_h2_port, []),
                "mesh-h2": Shape("mesh-h2", client_ports["outbound"], [client, web_h2]),
                "nginx-h2": Shape("nginx-h2", n1_h2_port, [n1, n2]),
            }
            log("HTTP/2: warm-up (1 s h2load per shape, not counted)")
            for s in h2_shapes.values():
                bench.h2load(s, 1)
            for rnd in range(1, rounds + 1):
                for name, s in h2_shapes.items():
                    order.append(name)
                    bench.h2_round(s, rnd)
        grpc_shapes: dict[str, Shape] = {}
        if grpc:
            grpc_shapes = {
                "direct-grpc": Shape("direct-grpc", app_grpc_port, []),
                "mesh-grpc": Shape("mesh-grpc", client_ports["outbound"], [client, web_grpc]),
            }
            bench.other_apps.append(app_grpc)
            log("gRPC: warm-up (1 s per shape, not counted)")
            for s in grpc_shapes.values():
                bench.grpc_load(s, 1)
            for rnd in range(1, rounds + 1):
                for name, s in grpc_shapes.items():
                    order.append(name)
                    bench.grpc_round(s, rnd)

        edge_shapes: dict[str, Shape] = {}
        if run_edge:
            log("the edge: a mesh gateway and an nginx terminating TLS, the same certificate")
            edge_cert, edge_key = edge_certificate(tmp / "edge", env)
            gateway, gateway_port = start_edge_gateway(procs, edge_cert, edge_key, endpoints, tmp / "mesh-gateway.log", mesh_env)
            gateway.name = "mesh gateway"
            verify_https("mesh-edge", gateway_port)
            ne_port = free_port()
            ne = start_nginx(procs, tools, "nginx (edge)", tmp / "nginx-edge",
                             nginx_edge_conf(ne_port, n2_port, edge_cert, edge_key, cl_c), ne_port, env)
            ne.name = "nginx edge"
            verify_https("nginx-edge", ne_port)
            edge_shapes = {
                "mesh-edge": Shape("mesh-edge", gateway_port, [gateway, web], scheme="https"),
                "nginx-edge": Shape("nginx-edge", ne_port, [ne, n2], scheme="https"),
            }
            log("edge: warm-up (1 s wrk per shape, not counted)")
            for s in edge_shapes.values():
                bench.warm_up(s)
            for rnd in range(1, rounds + 1):
                for name, s in edge_shapes.items():
                    order.append(name)
                    edge_round(bench, s, rnd)

        every_shape = [*shapes.values(), *h2_shapes.values(), *grpc_shapes.values(), *edge_shapes.values()]
        rss = {p.name: proc_status_kb(pid, "VmHWM") / 1024 for s in every_shape for p in s.proxies for pid in p.measured_pids}
        rss_now = {p.name: proc_status_kb(pid, "VmRSS") / 1024 for s in every_shape for p in s.proxies for pid in p.measured_pids}
        medians = summarise(shapes) if run_http1 else None
        edge_medians = summarise_edge(edge_shapes) if edge_shapes else None
        h2_medians = summarise_h2(h2_shapes) if h2_shapes else None
        grpc_medians = summarise_grpc(grpc_shapes) if grpc_shapes else None
        checks = target_checks(medians, rss_http1) if medians is not None else []
        meta = {
            "date": started.isoformat(timespec="seconds"),
            "machine": {"nproc": os.cpu_count(), "cpu_model": cpu_model(), "kernel": platform.release(),
                        "python": platform.python_version()},
            "tools": {"nginx": tool_version([tools["nginx"], "-v"]), "wrk": tool_version([tools["wrk"], "-v"]),
                      "h2load": tool_version([tools["h2load"], "--version"]) if h2 else None,
                      "hey": "hey (Debian package)", "mesh": tool_version([str(MESH), "version"])},
            "duration_s": duration, "paced_s": paced, "rounds": rounds, "order": order,
            "connections": CONNECTIONS, "hey_rate_per_connection": RATE_PER_CONNECTION,
            "nginx_worker_processes": 1,
            "trust_domain": trust_domain,
            "source": source,
        }
        tables = [render(meta, medians, rss_http1, checks, shapes)] if medians is not None else []
        if h2_medians is not None:
            tables.append(render_h2(h2_medians, h2_shapes))
        if grpc_medians is not None:
            tables.append(render_grpc(grpc_medians, grpc_shapes))
        if edge_medians is not None:
            tables.append(render_edge(edge_medians, edge_shapes))
        table = "\n\n".join(tables)
        print(table, flush=True)
        result = {
            "meta": meta,
            "nginx_tls_check": verify,
            "medians": medians,
            "peak_rss_mb": {k: round(v, 1) for k, v in rss.items()},
            "peak_rss_mb_after_http1": {k: round(v, 1) for k, v in rss_http1.items()},
            "rss_at_end_mb": {k: round(v, 1) for k, v in rss_now.items()},
            "ratios": medians and {
                "mesh_over_nginx_rps": ratio(medians["mesh"]["rps"], medians["nginx"]["rps"]),
                "mesh_added_p50_ms": diff(medians["mesh"]["p50_ms"], medians["direct"]["p50_ms"]),
                "mesh_added_p99_ms": diff(medians["mesh"]["p99_ms"], medians["direct"]["p99_ms"]),
                "nginx_added_p50_ms": diff(medians["nginx"]["p50_ms"], medians["direct"]["p50_ms"]),
                "nginx_added_p99_ms": diff(medians["nginx"]["p99_ms"], medians["direct"]["p99_ms"]),
            },
            "targets": checks,
            "http2": h2_medians and {
                "medians": h2_medians,
                "mesh_over_nginx_rps": ratio(h2_medians["mesh-h2"]["rps"], h2_medians["nginx-h2"]["rps"]),
                "targets": h2_target_checks(h2_medians),
                "connections": H2_CONNECTIONS, "streams_per_connection": H2_STREAMS,
            },
            "grpc": grpc_medians and {
                "medians": grpc_medians,
                "mesh_over_direct_rps": ratio(grpc_medians["mesh-grpc"]["rps"], grpc_medians["direct-grpc"]["rps"]),
                "target": grpc_target_check(grpc_medians),
                "concurrency": GRPC_CONCURRENCY, "message_bytes": GRPC_MESSAGE,
            },
            "edge": edge_medians,
            "runs": {name: s.runs for name, s in [*shapes.items(), *h2_shapes.items(), *grpc_shapes.items(), *edge_shapes.items()]},
            "mesh_log_bytes": {p.name: p.log.stat().st_size for p in procs.procs if p.kind == "mesh"},
            "table": table,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nresults: {out}")
        return 0
    except BenchError as e:
        log(f"error: {e}")
        failed = True
        return 1
    except (KeyboardInterrupt, Interrupted) as e:
        log(f"interrupted ({e or 'SIGINT'}); stopping everything")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        if failed:
            for p in procs.procs:
                log(f"log of {p.name} ({p.log}):\n{tail(p.log, 8)}")
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
