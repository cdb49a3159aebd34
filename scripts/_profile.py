"""Where a proxy's time goes, for ``scripts/bench_ab --profile DIR``: system calls per request
(``strace -c``) and where its samples fall (``py-spy record --native``), per proxy of a pair.

Two extra rounds of the load per variant, one under each tool (both slow the proxy down, so
their rounds are not counted in the A/B figures). The raw outputs stay in DIR; the summary
groups py-spy's leaf frames (where the CPU was when sampled) by component.
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)?\s*(\w+)\s*$")
LEAF_FILE = re.compile(r"\(([^()]*?)(?::\d+)?\)$")

# Leaf frames by component, first match wins: a Python frame's file, or a native frame's library
# or C source. A Python frame as leaf means the interpreter was running that function's bytecode.
SYSTEM_CALLS = re.compile(r"^libc\.so")  # a leaf in libc: inside send/recv/epoll (the kernel's work)
COMPONENTS: list[tuple[str, re.Pattern[str]]] = [
    ("the HTTP/2 codec (mesh/proxy/protocol/http2, hpack)", re.compile(r"(^|/)(mesh/proxy/protocol/http2|h2|hpack|hyperframe)/")),
    ("mesh (the rest)", re.compile(r"(^|/)mesh/")),
    ("trio, outcome (scheduler, epoll, cancel scopes)", re.compile(r"(^|/)(trio|outcome|sniffio)/|<attrs generated")),
    ("httptools (llhttp)", re.compile(r"^(llhttp|parser|api|http)\.c$|(^|/)httptools/")),
    ("OpenSSL (libssl, libcrypto, _ssl, ssl.py)", re.compile(r"libssl|libcrypto|^_ssl\.c|(^|/)ssl\.py$")),
    ("other Python (stdlib)", re.compile(r"\.py$|^<frozen |^<string>$")),
    ("CPython runtime (interpreter, objects, C modules)", re.compile(r".")),
]


def syscalls_per_request(path: Path, requests: int) -> dict[str, tuple[float, float]]:
    """strace -c's table: per system call, (calls, errors) per request."""
    rows: dict[str, tuple[float, float]] = {}
    for line in path.read_text(errors="replace").splitlines():
        match = STRACE_ROW.match(line)
        if match and match.group(3) != "total":
            calls, errors = int(match.group(1)), int(match.group(2) or 0)
            rows[match.group(3)] = (calls / requests, errors / requests)
    return rows


def components(path: Path) -> tuple[int, float, dict[str, float]]:
    """py-spy's raw (collapsed) stacks: the samples, the share inside system calls, and each
    component's share of the others (the user-space samples)."""
    counts: collections.Counter[str] = collections.Counter()
    total = in_calls = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        match = LEAF_FILE.search(leaf)
        where = match.group(1) if match else leaf
        total += int(n)
        if SYSTEM_CALLS.search(where):
            in_calls += int(n)
            continue
        counts[next(name for name, pattern in COMPONENTS if pattern.search(where))] += int(n)
    user = total - in_calls
    return total, in_calls / max(total, 1), {name: counts[name] / max(user, 1) for name, _ in COMPONENTS}


def profile(
    name: str, pids: list[int], run_load: Callable[[], dict[str, object]], out_dir: Path
) -> list[str]:
    """Two rounds of ``run_load`` with the proxies ``pids`` (outbound, inbound) under strace, then
    py-spy; the report's lines."""
    missing = [tool for tool in ("strace", "py-spy") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"bench_ab --profile needs {' and '.join(missing)} (apt-get install strace; pip install py-spy)")
    out_dir.mkdir(parents=True, exist_ok=True)
    sides = ("out", "in")
    traces = [out_dir / f"{name}-{side}.strace" for side in sides]
    tracers = [
        subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", str(path)], stderr=subprocess.DEVNULL)
        for pid, path in zip(pids, traces, strict=True)
    ]
    time.sleep(0.5)  # attached
    traced = run_load()
    for tracer in tracers:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
    lines = [f"profile {name}: system calls per request (strace -c, {traced['requests']} requests)"]
    for side, path in zip(sides, traces, strict=True):
        rows = syscalls_per_request(path, max(int(traced["requests"]), 1))  # type: ignore[call-overload]
        busy = sorted(rows.items(), key=lambda item: -item[1][0])
        shown = [f"{call} {n:.2f}" + (f" ({errors:.2f} failed)" if errors >= 0.01 else "") for call, (n, errors) in busy
                 if n >= 0.01]
        lines.append(f"  {side:>3}: {sum(n for n, _ in rows.values()):.2f} = " + ", ".join(shown))

    raws = [out_dir / f"{name}-{side}.raw" for side in sides]
    samplers = [
        subprocess.Popen(["py-spy", "record", "--native", "-r", "100", "-d", "600", "-f", "raw", "-o", str(path),
                          "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for pid, path in zip(pids, raws, strict=True)
    ]
    time.sleep(0.5)
    run_load()
    for sampler in samplers:
        sampler.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
        sampler.wait(30)
    shares = [components(path) for path in raws]
    lines.append(f"profile {name}: py-spy --native, leaf frames, out / in ({shares[0][0]} / {shares[1][0]} samples)")
    lines.append(f"  {'inside system calls (wall time: preemption included)':<52} {shares[0][1]:6.1%} / {shares[1][1]:6.1%}")
    lines.append("  the user-space samples, by component:")
    for component, _ in COMPONENTS:
        lines.append(f"    {component:<50} {shares[0][2][component]:6.1%} / {shares[1][2][component]:6.1%}")
    lines.append(f"  raw: {out_dir}/{name}-{{out,in}}.{{strace,raw}} (py-spy raw stacks: flamegraph.pl input)")
    return lines
