"""What every fuzz test shares: the front doors, the app's records, the logs, the budget.

A module starts one set of live processes (starting them per example would be far too slow):

    fuzzer ──plain──▶ outbound listener of proxy `client` ──mTLS──┐
    fuzzer ──plain──▶ `mesh gateway --to web` ────────────mTLS──┤
    fuzzer ──mTLS (a `mesh ca issue` certificate)────────────────┴─▶ inbound of proxy `web` ──▶ recording app

all inside a network namespace (see sandbox.py). After each example the fuzz tests check four things:

1. the door still serves a well-behaved client (a canary request reaches the app and comes back);
2. every answer was a valid response or a close (checked by the protocol modules, http1.py and http2.py);
3. nothing the mesh rejected reached the app (``Ledger``: the app's records against what was sent
   and what the mesh answered);
4. no ``Traceback`` and no ERROR line in any process's log (``LogWatch``).

A violation raises ``Finding`` (an AssertionError) with what was sent, what came back and the
log excerpt. Under `scripts/fuzz` the smallest input per kind of finding is also written to
``$MESH_FUZZ_DIR/findings/`` as a standalone reproducer (see ``Findings``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, note, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.fuzz.sandbox import NamespaceDialer
from tests.integration.conftest import Process

RECORDING_APP = Path(__file__).with_name("recording_app.py")
MARKER = re.compile(rb"(?:fz|canary)-[A-Za-z0-9]+")
EXAMPLE = re.compile(rb"fz-([0-9A-Za-z]+?x[0-9]{6})")  # the example id at the start of a marker
LOG_PROBLEM = re.compile(r"Traceback|\] ERROR ")

# ----------------------------------------------------------------------- budget and profiles
#
# CI (`./scripts/test`): derandomized, so every run tries the same inputs and a red run is
# reproduced by running it again; new inputs are explored by `scripts/fuzz`. Hypothesis ignores
# the example database when derandomized. `scripts/fuzz --minutes N` sets MESH_FUZZ_PROFILE=long
# and MESH_FUZZ_SECONDS (per test): random inputs in rounds until the time is spent, failing
# inputs kept in a DirectoryBasedExampleDatabase under MESH_FUZZ_DIR (a temporary directory).

PROFILE = os.environ.get("MESH_FUZZ_PROFILE", "ci")
FUZZ_DIR = Path(os.environ["MESH_FUZZ_DIR"]) if os.environ.get("MESH_FUZZ_DIR") else None
SECONDS_PER_TEST = float(os.environ.get("MESH_FUZZ_SECONDS", "0"))
KEEP_GOING = os.environ.get("MESH_FUZZ_KEEP_GOING") == "1"  # record findings, never fail (a survey)
ROUND_EXAMPLES = 50  # examples per hypothesis run in a long session; the time budget is checked between runs

_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile(
    "mesh-fuzz-ci",
    deadline=None,
    derandomize=True,
    suppress_health_check=_SLOW_IS_FINE,
    print_blob=True,
    report_multiple_bugs=False,
)
settings.register_profile(
    "mesh-fuzz-long",
    deadline=None,
    max_examples=ROUND_EXAMPLES,
    suppress_health_check=_SLOW_IS_FINE,
    print_blob=True,
    report_multiple_bugs=False,
    database=DirectoryBasedExampleDatabase(str(FUZZ_DIR / "examples")) if FUZZ_DIR else None,
)


def budget(ci_examples: int) -> settings:
    """The settings of a fuzz property: ``ci_examples`` derandomized examples in CI, else the long profile."""
    if PROFILE == "long":
        return settings.get_profile("mesh-fuzz-long")
    return settings(settings.get_profile("mesh-fuzz-ci"), max_examples=ci_examples)


def fuzz(property_test: Callable[..., None], *args: Any) -> None:
    """Run a hypothesis property once (CI), or in rounds until this test's share of
    `scripts/fuzz --minutes` is spent."""
    if PROFILE != "long":
        property_test(*args)
        return
    deadline = time.monotonic() + SECONDS_PER_TEST
    while time.monotonic() < deadline:
        property_test(*args)


# ----------------------------------------------------------------------- findings


class Finding(AssertionError):
    """An invariant broke. ``kind`` names which (one reproducer is kept per kind and door)."""

    def __init__(self, kind: str, message: str, origin: tuple[str, bytes] | None = None) -> None:
        super().__init__(f"[{kind}] {message}")
        self.kind = kind
        self.origin = origin  # (door, bytes sent) of the example that caused it, when known and not the current one


@dataclass(frozen=True)
class KnownIssue:
    """A proxy bug already reported, with a strict-xfail reproducer in test_reproducers.py.

    While it is open the fuzz tests count its findings instead of failing, so they stay green
    and keep looking for new ones. Fixing the bug makes the reproducer XPASS (strict: a failure);
    then remove its mark and the entry here, and the fuzz tests hold the fix from then on."""

    name: str
    reproducer: str  # the test in tests/fuzz/test_reproducers.py
    kinds: tuple[str, ...]  # Finding.kind
    pattern: str = ""  # searched in the finding's message
    doors: tuple[str, ...] = ()  # only through these doors (all when empty)
    wire: str = ""  # only when the bytes sent match this (re.match, bytes as latin-1)

    def matches(self, finding: Finding, door: str, wire: bytes) -> bool:
        return (
            finding.kind in self.kinds
            and (not self.doors or door in self.doors or door == ANY_DOOR)
            and re.search(self.pattern, str(finding), re.S) is not None
            and (not self.wire or re.match(self.wire, wire.decode("latin-1"), re.S) is not None)
        )


ANY_DOOR = "*"  # findings that surface after the last example, when nobody knows which door caused them

KNOWN_ISSUES: tuple[KnownIssue, ...] = ()


@dataclass
class Findings:
    """The smallest input seen per (test, door, kind); written out when a long session ends."""

    smallest: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    known: dict[str, int] = field(default_factory=dict)  # KnownIssue.name -> findings tolerated

    def __repr__(self) -> str:
        return f"Findings({len(self.smallest)} kept, known {self.known})"

    def count(self, test: str) -> None:
        self.examples[test] = self.examples.get(test, 0) + 1

    def verdict(self, problems: list[Finding], door: str, wire: bytes, detail: str) -> None:
        """Keep every finding of an example; raise the first that is not a known issue."""
        unknown = []
        for finding in problems:
            cause_door, cause_wire = finding.origin or (door, wire)
            issue = next((k for k in KNOWN_ISSUES if k.matches(finding, cause_door, cause_wire)), None)
            if issue is not None:
                self.known[issue.name] = self.known.get(issue.name, 0) + 1
                self.keep(test_name(), door, finding, wire, detail, known=issue.name)
            else:
                self.keep(test_name(), door, finding, wire, detail)
                unknown.append(finding)
        if unknown and not KEEP_GOING:
            if len(unknown) > 1:
                note("also: " + "\n".join(str(f) for f in unknown[1:]))
            raise unknown[0]

    def keep(self, test: str, door: str, finding: Finding, wire: bytes, detail: str, known: str | None = None) -> None:
        key = (test, door, finding.kind if known is None else f"known-{known}")
        kept = self.smallest.get(key)
        if kept is None or len(wire) < kept["size"]:
            self.smallest[key] = {
                "test": test,
                "door": door,
                "kind": finding.kind,
                "size": len(wire),
                "wire": wire,
                "message": str(finding),
                "detail": detail,
                "known": known,
            }

    def write(self, directory: Path, module: str) -> None:
        """One ``.json`` (what broke, how) and one ``.bin`` (the exact bytes) per finding."""
        out = directory / "findings"
        out.mkdir(parents=True, exist_ok=True)
        for item in self.smallest.values():
            digest = hashlib.sha256(item["wire"]).hexdigest()[:12]
            stem = f"{item['test']}-{item['door']}-{item['kind']}-{digest}"
            (out / f"{stem}.bin").write_bytes(item["wire"])
            summary = {k: v for k, v in item.items() if k != "wire"} | {"wire": item["wire"].decode("latin-1")}
            (out / f"{stem}.json").write_text(json.dumps(summary, indent=1))
        stats = directory / "stats"
        stats.mkdir(parents=True, exist_ok=True)
        for test, n in self.examples.items():
            (stats / f"{_safe(test)}.{os.getpid()}.json").write_text(json.dumps({"test": test, "examples": n}))
        (stats / f"known.{_safe(module)}.{os.getpid()}.json").write_text(json.dumps(self.known))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# ----------------------------------------------------------------------- the processes' logs


class LogWatch:
    """New lines of each process's log since the last look; ``Traceback`` or ERROR is a finding."""

    def __init__(self, processes: list[Process]) -> None:
        self.processes = processes
        self._offsets = {p.name: p.log_path.stat().st_size if p.log_path.exists() else 0 for p in processes}

    def new_text(self) -> dict[str, str]:
        fresh: dict[str, str] = {}
        for process in self.processes:
            with open(process.log_path, "rb") as log:
                log.seek(self._offsets[process.name])
                data = log.read()
            cut = data.rfind(b"\n") + 1  # whole lines only; the rest next time
            self._offsets[process.name] += cut
            if cut:
                fresh[process.name] = data[:cut].decode("utf-8", "replace")
        return fresh

    def problems(self) -> list[Finding]:
        """One finding per ERROR line or traceback (with the lines that belong to it)."""
        found = []
        fresh = self.new_text()
        settle = time.monotonic() + 0.5
        while any(LOG_PROBLEM.search(text) for text in fresh.values()) and time.monotonic() < settle:
            # A long traceback reaches the file in more than one write: wait for the rest of it.
            time.sleep(0.05)
            more = self.new_text()
            if not more:
                break
            fresh = {name: fresh.get(name, "") + more.get(name, "") for name in fresh.keys() | more.keys()}
        for name, text in fresh.items():
            for record in _log_records(text):
                if LOG_PROBLEM.search(record):
                    lines = record.splitlines()
                    excerpt = "\n".join(lines[:60] + (["    …"] + lines[-10:] if len(lines) > 70 else lines[60:]))
                    found.append(Finding("log-error", f"{name} logged a traceback or an ERROR:\n{excerpt}"))
        return found

    def alive(self) -> None:
        for process in self.processes:
            if process.popen.poll() is not None:
                raise Finding("process-died", f"{process.name} exited with {process.popen.returncode}:\n{process.log()[-4000:]}")


def _log_records(text: str) -> list[str]:
    """Log lines grouped into records: a record starts with the "[mesh …]" prefix, and a
    traceback's lines belong to the record above them."""
    records: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("[") or not records:
            records.append([])
        records[-1].append(line)
    return ["\n".join(r) for r in records]


# ----------------------------------------------------------------------- what reached the app


@dataclass
class AppRecord:
    proto: str
    event: str
    conn: int
    stream: int
    method: bytes
    target: bytes
    client_ids: list[str] = field(default_factory=list)

    @property
    def marker(self) -> bytes | None:
        found = MARKER.search(self.target)
        return found.group(0) if found else None


class Ledger:
    """What was sent, what the mesh refused, and what reached the app.

    Every request of an example carries a marker in its target (``fz-<run>x<example>r<i>``, or
    ``…s<i>`` for a request hidden in another's body). The protocol modules tell the ledger which
    markers were sent as requests (as a strict parser reads the bytes: ``sent``) and which the
    mesh refused (``refused``: answered with ``x-mesh-error`` 4xx/5xx, reset as refused, or beyond a
    GOAWAY). The app's records are then checked against both, whenever they arrive:

    - a request reached the app that was never sent as one: smuggled (a request hidden in a body,
      or a split of a header value);
    - a refused request reached the app (complete, or even its head when ``head`` is set);
    - a request reached the app without exactly one ``mesh-client-id``, the identity the mesh
      verified for the caller (``identities``): a client-set one got through.
    """

    def __init__(self, records_path: Path, identities: set[str]) -> None:
        self.path = records_path
        self.identities = identities
        self._offset = 0
        self.run = secrets.token_hex(3)
        self._example = 0
        self.sent: set[bytes] = set()
        self.sent_targets: set[bytes] = set()
        self.refused: dict[bytes, tuple[str, bool]] = {}  # marker -> (why, even the head must not arrive)
        self.origins: dict[bytes, tuple[str, bytes]] = {}  # example id -> (door, bytes sent)
        self.tunnelled: set[bytes] = set()
        self.heads: dict[bytes, AppRecord] = {}
        self.completes: dict[bytes, AppRecord] = {}

    def next_example(self) -> str:
        """The example's id; every marker of the example starts with ``fz-<run>x<id>``."""
        self._example += 1
        return f"{self.run}x{self._example:06d}"

    def note_origin(self, example: str, door: str, wire: bytes) -> None:
        """Which door got which bytes: a record that arrives late is judged with its own example."""
        self.origins[example.encode()] = (door, wire)

    def origin(self, marker: bytes | None) -> tuple[str, bytes] | None:
        found = EXAMPLE.match(marker or b"")
        return self.origins.get(found.group(1)) if found else None

    @staticmethod
    def marker(example: str, index: int, smuggled: bool = False) -> bytes:
        return f"fz-{example}{'s' if smuggled else 'r'}{index:02d}".encode()

    def canary_marker(self) -> bytes:
        self._example += 1
        return f"canary-{self.run}x{self._example:06d}".encode()

    def note_sent(self, targets: list[bytes]) -> None:
        """Targets a strict parser reads as requests in what was sent (markers and whole targets)."""
        for target in targets:
            self.sent_targets.add(target)
            for found in MARKER.finditer(target):
                self.sent.add(found.group(0))

    def read(self) -> list[AppRecord]:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self._offset += cut
        fresh = []
        for line in data[:cut].splitlines():
            raw = json.loads(line)
            fresh.append(
                AppRecord(
                    raw["proto"],
                    raw["event"],
                    raw["conn"],
                    raw["stream"],
                    raw["method"].encode("latin-1"),
                    raw["target"].encode("latin-1"),
                    raw.get("client_ids", []),
                )
            )
        return fresh

    def problems(self) -> list[Finding]:
        """The app's new records against what was sent and refused."""
        found: list[Finding] = []
        for rec in self.read():
            marker = rec.marker
            if rec.event not in ("head", "complete"):
                continue
            origin = self.origin(marker)
            tunnelled = (marker if marker is not None else rec.target) in self.tunnelled
            if rec.event == "head" and not tunnelled and (len(rec.client_ids) != 1 or rec.client_ids[0] not in self.identities):
                found.append(Finding(
                    "forged-identity",
                    f"the app received {rec.method!r} {rec.target!r} ({rec.proto}) with mesh-client-id {rec.client_ids}; "
                    f"the mesh sets exactly one, a verified caller's ({', '.join(sorted(self.identities))})",
                    origin,
                ))
            if marker is None:
                if rec.target not in self.sent_targets:
                    found.append(Finding(
                        "smuggled",
                        f"the app received {rec.method!r} {rec.target!r} ({rec.proto}), which no client sent as a request",
                    ))
                continue
            if marker.startswith(b"canary-"):
                continue
            if marker not in self.sent:
                found.append(Finding(
                    "smuggled",
                    f"the app received {rec.method!r} {rec.target!r} ({rec.proto}); a strict parser reads no request "
                    f"with marker {marker.decode()} in what the client sent (hidden in a body or a header?)",
                    origin,
                ))
            (self.heads if rec.event == "head" else self.completes)[marker] = rec
            found += self._refused_but_arrived(marker)
        return found

    def note_tunnelled(self, wire: bytes) -> None:
        """Requests sent inside a CONNECT tunnel: raw bytes to the app, their headers the client's own.
        Known by marker, or by target for those without one (``CONNECT web:80`` inside a tunnel)."""
        self.tunnelled.update(found.group(0) for found in MARKER.finditer(wire))
        self.tunnelled.update(found.group(1) for found in re.finditer(rb"(?:^|\n)[A-Za-z]+[ \t]+(\S+)", wire))

    def note_refused(self, marker: bytes, why: str, head_too: bool = False) -> list[Finding]:
        """Record a refusal; findings if the app already has the request."""
        self.refused[marker] = (why, head_too)
        return self._refused_but_arrived(marker)

    def _refused_but_arrived(self, marker: bytes) -> list[Finding]:
        why_head = self.refused.get(marker)
        if why_head is None:
            return []
        why, head_too = why_head
        rec = self.completes.get(marker) or (self.heads.get(marker) if head_too else None)
        if rec is None:
            return []
        return [Finding(
            "refused-reached-app",
            f"the mesh refused {marker.decode()} ({why}) but the app received it ({rec.event}: {rec.method!r} {rec.target!r})",
            self.origin(marker),
        )]


# ----------------------------------------------------------------------- front doors


@dataclass
class Door:
    """A listener the fuzzer attacks: plain TCP, or mTLS with the fuzzer's mesh certificate."""

    name: str
    port: int
    host: bytes  # what a well-behaved client puts in Host / :authority
    tls: Callable[[str], ssl.SSLContext] | None = None  # ALPN -> client context (inbound only)


@dataclass
class FrontDoors:
    dialer: NamespaceDialer
    doors: dict[str, Door]
    logs: LogWatch
    ledger: Ledger
    findings: Findings
    processes: list[Process]

    def connect(self, door: Door, alpn: str, timeout: float = 3.0) -> Any:
        sock = self.dialer.connect(door.port, timeout)
        if door.tls is None:
            return sock
        try:
            tls = door.tls(alpn).wrap_socket(sock, do_handshake_on_connect=False)
            tls.settimeout(timeout)
            tls.do_handshake()
        except BaseException:
            sock.close()
            raise
        return tls

    def __repr__(self) -> str:
        return f"FrontDoors({', '.join(f'{d.name}:{d.port}' for d in self.doors.values())})"

    def after_example(self, canary: Callable[[], None]) -> list[Finding]:
        """The checks every example ends with: the canary, the app's records, the logs."""
        self.logs.alive()
        found = []
        try:
            canary()
        except Finding as finding:
            found.append(finding)
        return found + self.ledger.problems() + self.logs.problems()


def client_context(cert_dir: Path) -> Callable[[str], ssl.SSLContext]:
    """TLS 1.3 client contexts with the fuzzer's mesh certificate, one per ALPN."""
    contexts: dict[str, ssl.SSLContext] = {}

    def for_alpn(alpn: str) -> ssl.SSLContext:
        if alpn not in contexts:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            ctx.check_hostname = False  # mesh certificates name a SPIFFE id, not a host
            ctx.load_verify_locations(cafile=str(cert_dir / "bundle.pem"))
            ctx.load_cert_chain(str(cert_dir / "cert.pem"), str(cert_dir / "key.pem"))
            ctx.set_alpn_protocols([alpn])
            contexts[alpn] = ctx
        return contexts[alpn]

    return for_alpn


def show(data: bytes, limit: int = 1500) -> str:
    """Bytes for a message: repr, middle cut when long."""
    if len(data) <= limit:
        return repr(data)
    return f"{data[: limit // 2]!r} …({len(data) - limit} bytes)… {data[-limit // 2 :]!r}"


def test_name() -> str:
    current = os.environ.get("PYTEST_CURRENT_TEST", "?")
    return current.split(" ")[0].split("::")[-1]


