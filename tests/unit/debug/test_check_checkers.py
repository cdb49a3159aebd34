"""The real checkers of `mesh check` on fake inputs: a tmp MESH_HOME with a real CA, loose
permissions, an expiring issuer, a dead controller, fake proxies' admin servers.

Nothing here starts a controller or touches zeroconf (that is the integration test's job);
where a checker would, the input is faked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mesh import __version__
from mesh.debug.check import (
    CheckContext,
    Report,
    Status,
    _checks_host as host_checks,
    _probes as probes,
    build_categories,
    run_checks,
)
from mesh.home import MeshHome, atomic_write
from mesh.identity import (
    CertificateAuthority,
    cert_to_pem,
    generate_key,
    key_to_pem,
    load_certificate,
    operator_identity,
    service_identity,
)
from mesh.identity._certs import make_issuer

TD = "check.test"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(ctx: CheckContext, *names: str) -> Report:
    """Run the named categories of `mesh check` (all of them when none are named), retries without waiting."""
    clock = FakeClock()
    categories = build_categories(ctx.home, pre=ctx.pre, proxy=ctx.proxy, context=ctx)
    chosen = [c for c in categories if not names or c.name in names]
    return run_checks(chosen, clock=clock, sleep=clock.sleep)


def outcomes(report: Report, category: str) -> list[tuple[str, str, str | None]]:
    found = next(c for c in report.categories if c.name == category)
    return [(o.status.value, o.message, o.hint) for o in found.checks]


def only(report: Report, category: str, status: Status) -> list[str]:
    return [message for s, message, _ in outcomes(report, category) if s == status.value]


@pytest.fixture
def home(tmp_path: Path) -> MeshHome:
    home = MeshHome(tmp_path / "mesh")
    CertificateAuthority.init(home, trust_domain=TD)
    os.chmod(home.root, 0o700)
    return home


@pytest.fixture
def ca(home: MeshHome) -> CertificateAuthority:
    return CertificateAuthority.load(home)


def write_operator(home: MeshHome, ca: CertificateAuthority, **kw: Any) -> None:
    kw.setdefault("ttl", timedelta(days=365))  # what the controller gives the operator
    ca.issue(operator_identity(TD, "ada"), **kw).write(home.operator_dir)


# -- environment -----------------------------------------------------------------------


def test_pre_on_a_missing_home_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    monkeypatch.setattr(host_checks, "DEFAULT_CONTROLLER_ADDRESS", ("127.0.0.1", port))
    monkeypatch.setattr(host_checks.shutil, "which", lambda name: str(Path(sys.executable).parent / name))
    report = run(CheckContext(MeshHome(tmp_path / "nothing" / "here"), pre=True))
    assert [c.name for c in report.categories] == ["environment"]
    assert report.success
    results = outcomes(report, "environment")
    assert [s for s, _, _ in results] == ["ok"] * 5, results
    assert "does not exist yet; `mesh up` can create it" in results[2][1]
    assert f"127.0.0.1:{port} is free" in results[3][1]


def test_pre_sees_the_controller_port_taken(home: MeshHome) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        atomic_write(home.controller_json, json.dumps({"address": f"127.0.0.1:{port}", "trust_domain": TD}))
        report = run(CheckContext(home, pre=True), "environment")
    failed = only(report, "environment", Status.FAIL)
    assert failed == [f"the controller's address 127.0.0.1:{port} is in use"]
    assert not report.success


def test_a_group_readable_home_warns_with_the_chmod(home: MeshHome) -> None:
    os.chmod(home.root, 0o755)
    report = run(CheckContext(home), "environment")
    (status, message, hint), = [r for r in outcomes(report, "environment") if "MESH_HOME" in r[1]]
    assert status == "warn"
    assert message.startswith(f"MESH_HOME {home.root} is readable by group and others (mode 0755)")
    assert hint == f"chmod 700 {home.root}"
    assert report.success  # a warning is not a failure


def test_a_missing_home_fails_and_skips_what_needs_it(tmp_path: Path) -> None:
    report = run(CheckContext(MeshHome(tmp_path / "missing")))
    assert only(report, "environment", Status.FAIL) == [f"MESH_HOME {tmp_path / 'missing'} does not exist"]
    for category in ("ca", "control plane", "discovery", "policy"):
        assert outcomes(report, category) == [("skipped", "MESH_HOME is not usable", None)]


def test_dependencies_that_do_not_import_fail(home: MeshHome, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probes, "DEPENDENCIES", ("trio", "surely_not_a_module_xyz"))
    report = run(CheckContext(home), "environment", "ca")
    failed = only(report, "environment", Status.FAIL)
    assert len(failed) == 1 and "cannot import surely_not_a_module_xyz" in failed[0]
    assert outcomes(report, "ca") == [("skipped", "mesh's dependencies do not import", None)]


def test_import_dependencies_reports_versions() -> None:
    versions, errors = probes.import_dependencies()
    assert errors == {}
    assert set(versions) == {"trio", "h2", "httptools", "zeroconf", "cryptography", "rich", "typer"}


# -- ca --------------------------------------------------------------------------------


def test_a_fresh_ca_passes(home: MeshHome, ca: CertificateAuthority) -> None:
    write_operator(home, ca)
    report = run(CheckContext(home), "environment", "ca")
    assert report.success
    assert all(s == "ok" for s, _, _ in outcomes(report, "ca")), outcomes(report, "ca")
    messages = [m for _, m, _ in outcomes(report, "ca")]
    assert messages[0] == f"root and issuer of trust domain {TD} load from {home.ca_dir}"
    assert messages[5] == "ca/bundle.pem holds the root (1 trust anchor)"


def test_no_ca_fails_once_and_skips_the_rest(home: MeshHome) -> None:
    for path in (home.root_cert, home.root_key, home.issuer_cert, home.issuer_key, home.bundle):
        path.unlink()
    report = run(CheckContext(home), "ca")
    results = outcomes(report, "ca")
    assert results[0] == ("fail", f"no CA in {home.ca_dir}", "`mesh up` creates one (or `mesh ca init`)")
    assert {r[0] for r in results[1:]} == {"skipped"} and len(results) == 6


def test_loose_key_files_warn_with_the_chmod(home: MeshHome, ca: CertificateAuthority) -> None:
    os.chmod(home.issuer_key, 0o644)
    os.chmod(home.ca_dir, 0o755)
    report = run(CheckContext(home), "ca")
    (message,) = only(report, "ca", Status.WARN)
    assert "ca/ is 0755" in message and "ca/issuer.key is 0644" in message
    (hint,) = [h for s, _, h in outcomes(report, "ca") if s == "warn"]
    assert hint == f"chmod 600 {home.issuer_key}; chmod 700 {home.ca_dir}"


def test_an_issuer_that_expires_within_60_days_warns(home: MeshHome, ca: CertificateAuthority) -> None:
    root_key = serialization.load_pem_private_key(home.root_key.read_bytes(), password=None)
    key = generate_key()
    issuer = make_issuer(key, ca.root_cert, root_key, lifetime=timedelta(days=30), label="short")  # type: ignore[arg-type]
    atomic_write(home.issuer_key, key_to_pem(key), mode=0o600)
    atomic_write(home.issuer_cert, cert_to_pem(issuer))
    report = run(CheckContext(home), "ca")
    (warning,) = [r for r in outcomes(report, "ca") if r[0] == "warn"]
    assert warning[1].startswith("issuer certificate expires in 29d 23h")
    assert "mesh ca rotate" in (warning[2] or "")
    assert report.success


def test_a_ca_past_its_issuer_fails(home: MeshHome, ca: CertificateAuthority) -> None:
    later = ca.issuer_not_after + timedelta(days=10)
    report = run(CheckContext(home, now=lambda: later), "ca")
    failed = only(report, "ca", Status.FAIL)
    assert any(m.startswith("issuer certificate expired 10d ago") for m in failed), failed
    assert any(m.startswith("the issuer's chain to the root does not verify") for m in failed), failed
    assert only(report, "ca", Status.OK)[1].startswith("root certificate is valid")


def test_an_issuer_of_another_ca_does_not_chain(home: MeshHome, tmp_path: Path) -> None:
    other = MeshHome(tmp_path / "other")
    CertificateAuthority.init(other, trust_domain=TD)
    for name in ("issuer.pem", "issuer.key"):
        (home.ca_dir / name).write_bytes((other.ca_dir / name).read_bytes())
    report = run(CheckContext(home), "ca")
    (failed,) = only(report, "ca", Status.FAIL)
    assert failed.startswith("the issuer's chain to the root does not verify")
    assert "same name, different key" in failed


def test_a_bundle_without_the_root_fails(home: MeshHome, tmp_path: Path) -> None:
    other = MeshHome(tmp_path / "other")
    CertificateAuthority.init(other, trust_domain=TD)
    home.bundle.write_bytes(other.bundle.read_bytes())
    report = run(CheckContext(home), "ca")
    (failed,) = only(report, "ca", Status.FAIL)
    assert failed.startswith("ca/bundle.pem (1 trust anchor) does not hold the root sha256:")


def test_an_issuer_key_of_another_issuer_fails_to_load(home: MeshHome, tmp_path: Path) -> None:
    home.issuer_key.write_bytes(key_to_pem(generate_key()))
    report = run(CheckContext(home), "ca")
    assert outcomes(report, "ca")[0][:2] == ("fail", f"{home.issuer_key} does not belong to {home.issuer_cert}")


# -- control plane ---------------------------------------------------------------------


def test_no_controller_json_fails_with_how_to_start(home: MeshHome) -> None:
    report = run(CheckContext(home), "control plane", "policy")
    results = outcomes(report, "control plane")
    assert results[0][0] == "fail" and "no controller.json" in results[0][1]
    assert "mesh up --detach" in (results[0][2] or "")
    assert {r[1] for r in results[1:]} == {"no controller is recorded in MESH_HOME"}
    assert outcomes(report, "policy") == [("skipped", "no controller is recorded in MESH_HOME", None)]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.process
def test_a_dead_controller_fails_with_a_hint(home: MeshHome, ca: CertificateAuthority) -> None:
    write_operator(home, ca)
    port, pid = closed_port(), dead_pid()
    record = {
        "address": f"127.0.0.1:{port}",
        "trust_domain": TD,
        "bundle": "ca/bundle.pem",
        "identity": f"spiffe://{TD}/svc/mesh-controller",
        "pid": pid,
    }
    atomic_write(home.controller_json, json.dumps(record))
    report = run(CheckContext(home, proxy=True), "control plane", "data plane", "policy")
    results = outcomes(report, "control plane")
    assert [r[0] for r in results] == ["ok", "fail", "skipped", "skipped", "skipped", "skipped", "skipped"]
    status, message, hint = results[1]
    assert message == (
        f"cannot connect to the controller at 127.0.0.1:{port}: connection refused; "
        f"its process (pid {pid}) is gone"
    )
    assert hint is not None and hint.startswith("start it with `mesh up --detach`; if it was killed")
    assert str(home.run_dir / "controller.log") in hint
    assert outcomes(report, "data plane") == [("skipped", "the controller is not reachable", None)]
    assert not report.success


@contextmanager
def refusing_server() -> Iterator[int]:
    """A TCP port that accepts connections and closes them at once (no TLS): fails fast."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_an_expired_operator_certificate_fails_and_blocks_the_api_checks(home: MeshHome, ca: CertificateAuthority) -> None:
    write_operator(home, ca, ttl=timedelta(hours=1), not_before=datetime.now(UTC) - timedelta(hours=3))
    with refusing_server() as port:
        atomic_write(home.controller_json, json.dumps({"address": f"127.0.0.1:{port}", "trust_domain": TD}))
        report = run(CheckContext(home), "control plane")
    results = outcomes(report, "control plane")
    assert [r[0] for r in results[:3]] == ["ok", "ok", "fail"]
    assert results[2][1].startswith(f"operator certificate spiffe://{TD}/operator/ada expired 2h ago")
    assert "move" in (results[2][2] or "") and "operator" in (results[2][2] or "")
    assert results[3] == ("skipped", "the CLI has no valid identity", None)


def test_a_host_without_an_operator_identity(home: MeshHome) -> None:
    with refusing_server() as port:
        atomic_write(home.controller_json, json.dumps({"address": f"127.0.0.1:{port}", "trust_domain": TD}))
        report = run(CheckContext(home), "control plane")
    results = outcomes(report, "control plane")
    assert results[2][0] == "fail" and results[2][1].startswith(f"no operator identity in {home.operator_dir}")
    assert "controller's host" in (results[2][2] or "")


def joined_home(tmp_path: Path, ca: CertificateAuthority, ttl: timedelta = timedelta(days=365)) -> MeshHome:
    """A MESH_HOME as `mesh join` leaves it: the bundle, a host identity, host.json; no CA."""
    from mesh.home import HostRecord, write_host_record
    from mesh.identity import host_identity

    joined = MeshHome(tmp_path / "joined")
    joined.ensure_dir(joined.ca_dir)
    atomic_write(joined.bundle, ca.bundle_pem)
    ca.issue(host_identity(TD, "b"), ttl=ttl).write(joined.host_dir)
    write_host_record(joined, HostRecord(role="joined", address="10.0.0.2", bind="10.0.0.2", name="b", controller="10.0.0.1:4190"))
    return joined


def test_a_joined_host_checks_what_a_joined_host_has(tmp_path: Path, ca: CertificateAuthority) -> None:
    """Before: "the CA in … is incomplete: root.pem, issuer.pem, issuer.key missing", and the hint
    `mesh ca init --force`, which would have made a second, foreign CA on this host."""
    joined = joined_home(tmp_path, ca)
    report = run(CheckContext(joined), "ca")
    results = outcomes(report, "ca")
    assert [r[0] for r in results] == ["ok", "ok", "ok"], results
    assert f"this host joined the mesh at 10.0.0.1:4190 (trust domain {TD})" in results[0][1]
    assert not any("ca init" in (m + (h or "")) for _, m, h in results)
    # Its CLI talks to the controller with its host identity.
    with refusing_server() as port:
        atomic_write(joined.controller_json, json.dumps({"address": f"127.0.0.1:{port}", "trust_domain": TD}))
        report = run(CheckContext(joined), "control plane")
    results = outcomes(report, "control plane")
    assert results[2][0] == "ok" and results[2][1].startswith(f"host certificate spiffe://{TD}/host/b"), results[2]
    # No bundle: join again, never create a CA.
    joined.bundle.unlink()
    results = outcomes(run(CheckContext(joined), "ca"), "ca")
    assert results[0][0] == "fail" and "mesh join" in (results[0][2] or "") and "ca init" not in (results[0][2] or "")


def test_a_joined_host_without_its_identity_is_told_to_join_again(tmp_path: Path, ca: CertificateAuthority) -> None:
    joined = joined_home(tmp_path, ca)
    for name in ("cert.pem", "key.pem"):
        (joined.host_dir / name).unlink()
    with refusing_server() as port:
        atomic_write(joined.controller_json, json.dumps({"address": f"127.0.0.1:{port}", "trust_domain": TD}))
        results = outcomes(run(CheckContext(joined), "control plane"), "control plane")
    assert results[2][0] == "fail" and "mesh join" in (results[2][2] or ""), results[2]


def test_an_operator_certificate_close_to_expiry_warns(home: MeshHome, ca: CertificateAuthority) -> None:
    write_operator(home, ca, ttl=timedelta(days=10))
    with refusing_server() as port:
        atomic_write(home.controller_json, json.dumps({"address": f"127.0.0.1:{port}", "trust_domain": TD}))
        report = run(CheckContext(home), "control plane")
    results = outcomes(report, "control plane")
    assert results[2][0] == "warn" and "expires in 9d 23h" in results[2][1]
    assert results[3][0] == "fail"  # still tried: a warning blocks nothing
    assert "TLS handshake failed" in results[3][1] or "closed" in results[3][1], results[3]


# -- discovery -------------------------------------------------------------------------


def test_zeroconf_that_does_not_work_fails_and_skips_the_controller_record(
    home: MeshHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mesh.discovery

    monkeypatch.setattr(mesh.discovery, "zeroconf_works", lambda interfaces, timeout: (False, "nobody saw the probe"))
    report = run(CheckContext(home), "discovery")
    assert outcomes(report, "discovery")[0][:2] == ("fail", "zeroconf does not work: nobody saw the probe")
    assert outcomes(report, "discovery")[1] == ("skipped", "zeroconf does not work here", None)


def test_static_discovery_does_not_use_zeroconf(home: MeshHome) -> None:
    ctx = CheckContext(home)
    ctx.health = {"version": __version__}
    ctx._config = (2, {"discovery": {"mode": "static", "interfaces": ["127.0.0.1"]}})
    ctx.controller = type("C", (), {"identity": f"spiffe://{TD}/svc/mesh-controller", "port": 1})()
    report = run(ctx, "discovery")
    assert [r[:2] for r in outcomes(report, "discovery")] == [
        ("ok", "discovery mode is 'static': zeroconf is not used"),
        ("ok", "discovery mode is 'static': the controller is not looked up by mDNS"),
    ]


# -- data plane ------------------------------------------------------------------------


class FakeProxy:
    """A proxy's inbound listener as `mesh check` reads it: mTLS (ALPN mesh-admin) with the
    certificate of ``creds``, answering /ready and /config with what the test says."""

    def __init__(self, creds: Any, ready: int, config: dict[str, Any]) -> None:
        from mesh.identity import server_context

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # one connection for both pages, as the real proxy keeps it

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/ready":
                    body, status = b"ready\n", proxy.ready
                elif self.path == "/config":
                    body, status = json.dumps(proxy.config).encode(), 200
                else:
                    body, status = b"not found\n", 404
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.ready = ready
        self.config = config
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = server_context(creds, alpn=("mesh-admin",)).wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxies() -> Iterator[list[FakeProxy]]:
    started: list[FakeProxy] = []
    yield started
    for proxy in started:
        proxy.close()


def proxy_context(home: MeshHome, ca: CertificateAuthority, services: dict[str, Any], state_version: int = 5) -> CheckContext:
    write_operator(home, ca)
    ctx = CheckContext(home, proxy=True)
    ctx.status = {"controller": {"state_version": state_version, "config_version": 1}, "services": services, "watches": []}
    return ctx


def test_each_proxy_gets_one_line(home: MeshHome, ca: CertificateAuthority, proxies: list[FakeProxy]) -> None:
    """Read over mTLS at each proxy's inbound listener (its admin server is on its host's loopback)."""
    leaf = ca.issue(service_identity(TD, "web"))
    config = {
        "version": __version__,
        "certificate_expiry": leaf.not_after.isoformat(),
        "controller": {"connected": True, "snapshot_version": 5, "config_version": 1},
    }
    healthy = FakeProxy(leaf, 200, config)
    draining = FakeProxy(leaf, 503, {**config, "controller": {"connected": True, "snapshot_version": 3}})
    impostor = FakeProxy(ca.issue(service_identity(TD, "db")), 200, config)
    proxies += [healthy, draining, impostor]

    def entry(instance: str, inbound: int, admin: int | None) -> dict[str, Any]:
        return {
            "address": f"127.0.0.1:{inbound}",
            "identity": f"spiffe://{TD}/svc/web",
            "admin_port": admin,
            "instance": instance,
            "mesh_version": __version__,
            "watching": True,
            "acked_version": 5 if instance == "web-1" else 3,
        }

    services = {
        "web": [
            entry("web-1", healthy.port, 4191),
            entry("web-2", draining.port, 4192),
            entry("web-3", closed_port(), 4193),
            entry("web-4", impostor.port, 4194),
        ],
        "static": [{"address": "127.0.0.1:4004", "admin_port": None, "instance": "zeroconf:127.0.0.1:4004"}],
    }
    report = run(proxy_context(home, ca, services), "data plane")
    results = outcomes(report, "data plane")
    assert len(results) == 5
    static, *web = results
    lines = {r[1].split(" (")[1].split(")")[0]: r for r in web}  # by instance
    assert static[0] == "warn" and "no admin port known" in static[1]
    assert lines["web-1"][:2] == (
        "ok",
        f"web 127.0.0.1:{healthy.port} (web-1): ready, certificate 23h 59m left, config current (v5), mesh {__version__}",
    )
    assert lines["web-2"][0] == "fail"
    assert "GET /ready answered 503" in lines["web-2"][1] and "config at snapshot 3, the controller is at 5" in lines["web-2"][1]
    assert "curl http://127.0.0.1:4192/config" in (lines["web-2"][2] or "")
    assert lines["web-3"][0] == "fail" and "nothing answers at its inbound listener" in lines["web-3"][1]
    assert "(connection refused)" in lines["web-3"][1]
    assert lines["web-4"][0] == "fail"
    assert f"its inbound presents spiffe://{TD}/svc/db, but it registered as spiffe://{TD}/svc/web" in lines["web-4"][1]


def test_no_proxies_warns(home: MeshHome, ca: CertificateAuthority) -> None:
    report = run(proxy_context(home, ca, {}), "data plane")
    ((status, message, hint),) = outcomes(report, "data plane")
    assert (status, message) == ("warn", "no proxies are registered with the controller")
    assert "mesh proxy --service" in (hint or "")


@contextmanager
def one_connection(answer: Callable[[socket.socket], None]) -> Iterator[int]:
    """A server on 127.0.0.1 that hands its first connection to ``answer``; its port."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def accept() -> None:
            conn, _ = server.accept()
            with conn:
                answer(conn)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield server.getsockname()[1]
        thread.join(5)


def operator_admin_context(home: MeshHome, ca: CertificateAuthority) -> Any:
    from mesh.identity import client_context, load_credentials

    write_operator(home, ca)
    creds = load_credentials(home.operator_dir / "cert.pem", home.operator_dir / "key.pem", home.bundle)
    return client_context(creds, alpn=("mesh-admin",))


def test_admin_probe_against_a_server_that_is_not_mesh(home: MeshHome, ca: CertificateAuthority) -> None:
    # A plain TCP server: the handshake fails and says so, it does not hang.
    context = operator_admin_context(home, ca)
    with one_connection(lambda conn: conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")) as port:
        with pytest.raises(OSError):
            probes.AdminPages("127.0.0.1", port, context, 2.0)


def test_admin_probe_against_a_mesh_server_without_admin_pages(home: MeshHome, ca: CertificateAuthority) -> None:
    """mTLS works, ALPN mesh-admin is not offered (a proxy of an older mesh): said so."""
    from mesh.identity import server_context

    context = operator_admin_context(home, ca)
    server_ctx = server_context(ca.issue(service_identity(TD, "web")), alpn=("http/1.1",))

    def answer(conn: socket.socket) -> None:
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ValueError):
            pass

    with one_connection(answer) as port:
        with pytest.raises(probes.NoAdminPages, match="does not serve its admin pages over mTLS"):
            probes.AdminPages("127.0.0.1", port, context, 2.0)


# -- policy ----------------------------------------------------------------------------


def test_policy_warns_about_a_service_without_endpoints(home: MeshHome, ca: CertificateAuthority) -> None:
    ctx = proxy_context(home, ca, {"web": [{"address": "127.0.0.1:1"}], "ghost": []})
    ctx._config = (3, {"route": [{"service": "web"}], "policy": [{"service": "ratings"}, {"service": "ghost"}]})
    report = run(ctx, "policy")
    ((status, message, hint),) = outcomes(report, "policy")
    assert status == "warn"
    assert message == "config v3: 2 entries name services with no endpoints: policy[0] -> ratings, policy[1] -> ghost"
    assert hint and "mesh status" in hint


def test_file_modes_skip_missing_files(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("")
    os.chmod(tmp_path / "a", 0o640)
    found = probes.file_modes([tmp_path / "a", tmp_path / "missing"])
    assert [(f.path.name, f.mode) for f in found] == [("a", 0o640)]


def test_certificate_times_reads_identity_and_validity(ca: CertificateAuthority) -> None:
    leaf = ca.issue(service_identity(TD, "web"))
    der = load_certificate(leaf.cert_chain_pem).public_bytes(serialization.Encoding.DER)
    identity, not_before, not_after = probes.certificate_times(der)
    assert identity == f"spiffe://{TD}/svc/web"
    assert not_after == leaf.not_after
    assert isinstance(x509.load_der_x509_certificate(der), x509.Certificate)
    assert not_after - not_before == timedelta(hours=24, minutes=1)


# -- gateway ---------------------------------------------------------------------------


def test_gateways_without_tls_are_one_green_line(home: MeshHome) -> None:
    ctx = CheckContext(home)
    ctx._config = (2, {"gateway": [{"listen": "127.0.0.1:9080", "to": "web"}]})
    assert outcomes(run(ctx, "gateway"), "gateway") == [("ok", "no [[gateway]] of the applied config serves TLS", None)]


def test_gateway_certificates_warn_under_30_days_and_fail_when_broken(home: MeshHome, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.edge_certs import ThrowawayCA

    throwaway = ThrowawayCA.create()
    start = datetime(2030, 1, 1, tzinfo=UTC)
    fine = throwaway.issue(tmp_path, "fine", ["fine.example"], not_before=start, days=90)
    soon = throwaway.issue(tmp_path, "soon", ["soon.example"], not_before=start, days=40)
    _, other_key = throwaway.issue(tmp_path, "other", ["other.example"], not_before=start)
    ctx = CheckContext(home, now=lambda: start + timedelta(days=20))
    tls = [
        {"cert": str(fine[0]), "key": str(fine[1])},
        {"cert": str(soon[0]), "key": str(soon[1])},
        {"cert": str(fine[0]), "key": str(other_key)},
        {"cert": str(tmp_path / "gone.pem"), "key": str(fine[1])},
    ]
    ctx._config = (4, {"gateway": [{"listen": "127.0.0.1:0", "to": "web"}, {"listen": "0.0.0.0:443", "to": "web", "tls": tls}]})
    report = run(ctx, "gateway")
    (ok, warn, mismatch, missing) = outcomes(report, "gateway")
    assert ok == ("ok", f"gateway[1].tls[0]: the certificate for fine.example ({fine[0]}) is valid for 70d more (until 2030-04-01)", None)
    assert warn[0] == "warn"
    assert warn[1] == f"gateway[1].tls[1]: the certificate for soon.example ({soon[0]}) expires in 20d (on 2030-02-10T00:00:00Z)"
    assert warn[2] and "no restart" in warn[2]
    assert mismatch[:2] == ("fail", f"gateway[1].tls[2]: the key in {other_key} does not belong to the certificate in {fine[0]}")
    assert missing[:2] == ("fail", f"gateway[1].tls[3]: certificate file {tmp_path / 'gone.pem'} does not exist")
    descriptions = [o.description for c in report.categories for o in c.checks]
    assert descriptions[0] == "gateway[1].tls[0] is valid (warn under 30 days left)"
