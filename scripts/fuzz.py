"""`scripts/fuzz --minutes N`: the fuzz suite (tests/fuzz) with random inputs for N minutes.

The same tests as `./scripts/test` runs with a small derandomized budget; here each test gets an
equal share of the time and runs rounds of random examples (hypothesis profile "mesh-fuzz-long",
tests/fuzz/harness.py) until its share is spent. A test stops at its first finding and hypothesis
shrinks the input; with --keep-going nothing stops and the smallest input per kind of finding is
kept instead (a survey). At the end: examples run per test, findings, and where the reproducers
are: DIR/findings/*.bin (the exact bytes sent) with *.json (door, what broke, the proxy's log),
and hypothesis's example database, DIR/examples (a later run with --dir DIR replays it first).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = {"http1": "tests/fuzz/test_http1.py", "http2": "tests/fuzz/test_http2.py"}
MIN_MINUTES, MAX_MINUTES = 0.5, 24 * 60
STARTUP_SECONDS = 20  # per module: a namespace, a CA, three proxies and the app
OVERRUN_SECONDS = 300  # hypothesis shrinks a finding for up to 5 minutes; then we stop it


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help=f"time budget, {MIN_MINUTES}-{MAX_MINUTES:g} (default 10)")
    parser.add_argument("--only", choices=sorted(MODULES), help="fuzz one protocol only")
    parser.add_argument("--keep-going", action="store_true", help="never stop at a finding; keep the smallest per kind")
    parser.add_argument("--dir", type=Path, help="where findings and the example database go (default: a new temporary directory)")
    args = parser.parse_args()
    if not MIN_MINUTES <= args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes must be between {MIN_MINUTES} and {MAX_MINUTES:g}, not {args.minutes:g}")
    if os.geteuid() != 0:
        print("fuzz: the proxies run in a network namespace of their own, which needs root (sudo scripts/fuzz ...)", file=sys.stderr)
        return 2
    out = args.dir or Path(tempfile.mkdtemp(prefix="mesh-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    for old in [*(out / "stats").glob("*.json"), *(out / "findings").glob("*")]:
        old.unlink()  # a new run's figures; the example database stays
    modules = [MODULES[args.only]] if args.only else list(MODULES.values())
    tests = collect(modules)
    budget = args.minutes * 60 - STARTUP_SECONDS * len(modules)
    per_test = max(budget / len(tests), 5.0)
    print(f"fuzz: {len(tests)} tests, {per_test:.0f} s each, for {args.minutes:g} min; output in {out}", flush=True)
    env = dict(
        os.environ,
        MESH_FUZZ_PROFILE="long",
        MESH_FUZZ_SECONDS=f"{per_test:.1f}",
        MESH_FUZZ_DIR=str(out),
        MESH_FUZZ_KEEP_GOING="1" if args.keep_going else "0",
    )
    log_path = out / "pytest.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        pytest = subprocess.Popen(
            [sys.executable, "-m", "pytest", *modules, "-q", "-p", "no:cacheprovider", "-rfE",
             f"--timeout={int(per_test + OVERRUN_SECONDS + 120)}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        limit = args.minutes * 60 + OVERRUN_SECONDS
        try:
            status = pytest.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            print(f"fuzz: still running after {limit / 60:.1f} min; interrupting (teardown stops every process)", flush=True)
            pytest.send_signal(signal.SIGINT)
            try:
                status = pytest.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.kill()
                status = pytest.wait()
    report(out, time.monotonic() - started, log_path, status)
    findings = list((out / "findings").glob("*.json"))
    unknown = [f for f in findings if json.loads(f.read_text()).get("known") is None]
    return 1 if unknown or status not in (0, 5) else 0


def collect(modules: list[str]) -> list[str]:
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", *modules, "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    tests = [line for line in listed.stdout.splitlines() if "::" in line]
    if not tests:
        raise SystemExit(f"fuzz: no tests collected:\n{listed.stdout}{listed.stderr}")
    return tests


def report(out: Path, elapsed: float, log_path: Path, status: int) -> None:
    examples: dict[str, int] = {}
    known: dict[str, int] = {}
    for path in sorted((out / "stats").glob("*.json")):
        data = json.loads(path.read_text())
        if path.name.startswith("known."):
            for name, n in data.items():
                known[name] = known.get(name, 0) + n
        else:
            examples[data["test"]] = examples.get(data["test"], 0) + data["examples"]
    print(f"\nfuzzed for {elapsed / 60:.1f} min: {sum(examples.values()):,} examples in {len(examples)} tests")
    for test, n in sorted(examples.items()):
        print(f"  {n:>8,}  {test}")
    if known:
        print("known issues met (tolerated until fixed; reproducers in tests/fuzz/test_reproducers.py):")
        for name, n in sorted(known.items()):
            print(f"  {n:>8,}  {name}")
    findings = [json.loads(p.read_text()) | {"path": p} for p in sorted((out / "findings").glob("*.json"))]
    new = [f for f in findings if f.get("known") is None]
    print(f"findings: {len(new)} new" + (f", {len(findings) - len(new)} of known issues" if len(findings) > len(new) else ""))
    for item in new:
        first = item["message"].splitlines()[0]
        print(f"  {item['test']} via {item['door']}: {first[:300]}")
        print(f"      reproducer: {item['path'].with_suffix('.bin')} ({item['size']} bytes; {item['path'].name} says how it was sent)")
    print(f"pytest output: {log_path} (exit status {status})")
    print(f"hypothesis example database: {out / 'examples'} (scripts/fuzz --dir {out} replays it first)")


if __name__ == "__main__":
    sys.exit(main())
