"""Several hosts: network namespaces on one bridge, each with its own MESH_HOME (root only).

Every request here crosses the bridge between two namespaces (tests/integration/netns.py);
zeroconf runs on a namespace's bridge interface or its loopback, never on the machine's.
How to run a mesh over several hosts: docs/cli.md, "Several hosts".
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.integration import netns
from tests.integration.conftest import APPS, READY, Cluster, ProxyInfo, port_of

pytestmark = netns.marks(timeout=90)

MESH = [sys.executable, "-m", "mesh"]
T = TypeVar("T")


@pytest.fixture
def network(tmp_path: Path) -> Iterator[netns.Network]:
    net = netns.Network(tmp_path)
    try:
        yield net
    finally:
        net.close()


def eventually(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last  # type: ignore[return-value]
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def app_command(name: str) -> list[str]:
    """The test app on the port `mesh inject` hands it in $PORT."""
    return ["sh", "-c", f'exec {shlex.quote(sys.executable)} {shlex.quote(str(APPS))} http "$PORT" {name}']


def inject(host: netns.Host, name: str, *flags: str) -> ProxyInfo:
    """`mesh inject --name NAME FLAGS -- app` on ``host``, once the app is ready (advertised)."""
    argv = [*MESH, "inject", "--name", name, "--health", "/", *flags, "--", *app_command(name)]
    process = host.spawn(f"inject-{name}", argv)
    ready = process.wait_for(READY, timeout=20)
    process.wait_for("app is ready", timeout=20)
    return ProxyInfo(process, port_of(ready["inbound"]), port_of(ready["outbound"]), port_of(ready["admin"]))


def outbound(proxy: ProxyInfo) -> str:
    return f"http://127.0.0.1:{proxy.outbound}"


def config(host: netns.Host, proxy: ProxyInfo) -> dict:
    response = host.http(f"http://127.0.0.1:{proxy.admin}/config")
    assert response.status == 200, response
    return response.json()


def endpoints(host: netns.Host, proxy: ProxyInfo, service: str) -> list[str]:
    return sorted(e["address"] for e in config(host, proxy)["endpoints"].get(service, []))


def inbound_requests(host: netns.Host, proxy: ProxyInfo) -> float:
    from mesh.telemetry import parse_prometheus_text

    text = host.http(f"http://127.0.0.1:{proxy.admin}/metrics").body
    samples = parse_prometheus_text(text)
    return sum(s.value for s in samples if s.name == "request_total" and s.labels_dict.get("direction") == "inbound")


def issue(ca_host: netns.Host, name: str, out: Path) -> list[str]:
    """Credentials from ``ca_host``'s CA, copied to another host (no controller involved)."""
    result = ca_host.mesh("ca", "issue", name, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return ["--cert", f"{out}/cert.pem", "--key", f"{out}/key.pem", "--bundle", f"{out}/bundle.pem"]


BROWSE = """
    import json, sys, trio
    from mesh.discovery import ZeroconfRegistry, find_controller
    interface, trust_domain, service = sys.argv[1:4]
    async def main():
        registry = ZeroconfRegistry(interfaces=(interface,), trust_domain=trust_domain)
        async with trio.open_nursery() as nursery:
            await nursery.start(registry.run)
            with trio.move_on_after(5):
                while not registry.endpoints(service):
                    await trio.sleep(0.05)
            controller = await find_controller((interface,), timeout=3, trust_domain=trust_domain)
            nursery.cancel_scope.cancel()
        print(json.dumps({
            "endpoints": sorted(e.address for e in registry.endpoints(service)),
            "controller": controller and f"{controller.host}:{controller.port}",
        }))
    trio.run(main)
"""


def browse(host: netns.Host, trust_domain: str, service: str) -> dict:
    """What zeroconf on ``host``'s bridge interface shows of ``service`` and of a controller
    (records of ``trust_domain`` only): {"endpoints": [...], "controller": "HOST:PORT" | None}."""
    script = host.tmp / "browse.py"
    script.write_text(textwrap.dedent(BROWSE))
    seen = host.run([sys.executable, str(script), host.address, trust_domain, service], timeout=20)
    assert seen.returncode == 0, seen.stderr
    return json.loads(seen.stdout)


def test_mesh_up_config_serves_other_hosts(network: netns.Network) -> None:
    """Host A: `mesh up mesh.toml` alone, whose [discovery] interfaces names A's bridge address, with
    the controller on a wildcard --listen. The join line says A's address (not 0.0.0.0), web (run by
    `mesh up`) listens and advertises there; host B joins with that line and its client, behind
    `mesh inject`, calls web by name across the bridge."""
    a, b = network.add_host("a"), network.add_host("b")
    a.init_ca()
    mesh_toml = a.tmp / "mesh.toml"
    mesh_toml.write_text(
        textwrap.dedent(
            f"""
            [mesh]
            trust_domain = "{a.trust_domain}"

            [discovery]
            interfaces = ["{a.address}"]

            [[service]]
            name = "web"
            command = {json.dumps(app_command("web"))}
            health = "/"
            """
        )
    )
    up = a.mesh("up", str(mesh_toml), "--detach", "--listen", "0.0.0.0:0", "-o", "json", timeout=60)
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    controller = a.adopt("mesh", info["pid"])
    port = port_of(info["controller"])
    assert info["controller"] == f"{a.address}:{port}"  # dialable from B, where 0.0.0.0 is not
    assert info["services_address"] == a.address and info["zeroconf_interfaces"] == [a.address]
    # A's own proxies and CLI dial loopback; the other hosts the address in the join line.
    recorded = json.loads((a.home / "controller.json").read_text())
    assert (recorded["address"], recorded["advertise"]) == (f"127.0.0.1:{port}", info["controller"])

    # web's sidecar was started with A's address for its inbound and zeroconf there; its admin stays on loopback.
    web_log = a.home / "run" / "web.log"
    ready = eventually(
        lambda: web_log.exists() and next(filter(None, map(READY.search, web_log.read_text().splitlines())), None),
        20,
        "web's sidecar ready",
    )
    assert ready["inbound"].startswith(f"{a.address}:") and ready["admin"].startswith("127.0.0.1:"), ready[0]
    web_inbound = port_of(ready["inbound"])
    eventually(lambda: "app is ready" in web_log.read_text(), 20, "web ready")

    # B runs exactly the line A printed.
    join = shlex.split(info["join"])
    assert join[:3] == ["mesh", "join", f"{a.address}:{port}"]
    joined = b.mesh(*join[1:], "-o", "json")
    assert joined.returncode == 0, joined.stderr
    b.trust_domain = a.trust_domain
    client = inject(b, "client")
    response = eventually(
        lambda: (r := b.http("http://web/headers", proxy=outbound(client))).status == 200 and r,
        10,
        "B → web run by `mesh up` on A",
    )
    assert response.json()["mesh-client-id"] == a.spiffe("client")
    assert endpoints(b, client, "web") == [f"{a.address}:{web_inbound}"]
    peers = a.run(["ss", "-Htn", "state", "established", f"( sport = :{web_inbound} )"]).stdout
    assert f"{b.address}:" in peers, peers

    # zeroconf on the bridge shows web and the controller at A's address, never a loopback or wildcard.
    seen = browse(b, a.trust_domain, "web")
    assert seen == {"endpoints": [f"{a.address}:{web_inbound}"], "controller": f"{a.address}:{port}"}, seen
    # Nothing is advertised on loopback: not A's web, and not B's client (joined: on B's address).
    warned = [line for line in (web_log.read_text() + controller.log()).splitlines() if "cannot reach it" in line]
    assert warned == [], warned
    assert config(b, client)["listeners"]["inbound"] == f"{b.address}:{client.inbound}"

    # The controller reads web's metrics over mTLS at the address web registered.
    for _ in range(3):
        assert b.http("http://web/", proxy=outbound(client)).status == 200
    stats = json.loads(a.mesh("stat", "web", "-o", "json").stdout)
    web_row = next(row for row in stats["rows"] if row["service"] == "web")
    assert stats["unreachable"] == [] and web_row["reachable"] == 1 and web_row["requests"] >= 4, stats


def test_zeroconf_across_the_bridge_and_withdrawal(network: netns.Network) -> None:
    """No controller at all: B's proxy learns web's endpoint on A by zeroconf over the bridge,
    and stops routing to it when web stops (goodbye), or when its proxy dies without one (TTL)."""
    a, b = network.add_host("a"), network.add_host("b")
    a.init_ca()
    b.trust_domain = a.trust_domain
    creds = issue(a, "client", b.tmp / "client-creds")
    client = b.proxy("client", b.app("http", "client"), extra=[*creds, "--interface", b.address])
    assert config(b, client)["controller"] is None

    # A wildcard inbound, advertised as A's bridge address, zeroconf on the bridge interface only.
    web = inject(a, "web", "--inbound", "0.0.0.0:0", "--advertise", a.address, "--interface", a.address)
    started = time.monotonic()
    response = eventually(
        lambda: (r := b.http("http://web/headers", proxy=outbound(client))).status == 200 and r,
        5,
        "web found by zeroconf",
    )
    found_after = time.monotonic() - started
    assert found_after < 5
    assert response.json()["mesh-client-id"] == a.spiffe("client")
    assert endpoints(b, client, "web") == [f"{a.address}:{web.inbound}"]

    # web stops (SIGTERM to `mesh inject`): it withdraws first, the goodbye crosses the bridge.
    stopping = time.monotonic()
    assert web.process.terminate() == 128 + signal.SIGTERM  # the app's status, as a shell reports it
    eventually(lambda: not endpoints(b, client, "web"), 3, "web withdrawn at B")
    gone = b.http("http://web/", proxy=outbound(client))
    assert gone.status == 503 and gone.headers.get("x-mesh-error"), gone
    assert time.monotonic() - stopping < 5

    # A web whose proxy dies without a goodbye (SIGKILL, as if host A were lost).
    web2 = a.proxy("web", a.app("http", "web2"), extra=["--inbound", f"{a.address}:0", "--interface", a.address])
    eventually(
        lambda: b.http("http://web/", proxy=outbound(client)).headers.get("x-app") == "web2", 5, "web2 found"
    )
    os.killpg(web2.process.popen.pid, signal.SIGKILL)
    killed = time.monotonic()
    answers = []

    def unrouted() -> bool:
        answer = b.http("http://web/", proxy=outbound(client), timeout=3)
        answers.append((answer.status, answer.headers.get("x-mesh-error")))
        return not endpoints(b, client, "web")

    eventually(unrouted, 15, "web2 expired at B", interval=0.5)
    expired_after = time.monotonic() - killed
    # Until the records expire every answer is the mesh's own error, never a hang or a bare failure:
    # the first call finds nothing listening, the next ones a fast 503, but for a probe each time the
    # endpoint's time aside is up (1 s, then 2, 4, 8): no controller here says goodbye for the dead
    # proxy, so only the record's TTL takes it out of discovery.
    assert all(status in (502, 503) and reason for status, reason in answers), answers
    assert answers[1] == (503, "no-healthy-endpoints"), answers
    assert sum(1 for status, _ in answers if status == 502) <= 5, answers
    assert expired_after < 15, expired_after


TLS_CLIENT = """
    import socket, ssl, sys
    host, port, cert, key, bundle, alpn = sys.argv[1], int(sys.argv[2]), *sys.argv[3:7]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.load_verify_locations(bundle)   # the mesh's bundle is public (GET /v1/bundle)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols([alpn])
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"GET / HTTP/1.1\\r\\nHost: web\\r\\n\\r\\n")
                data = tls.recv(65536)
    except (ssl.SSLError, OSError) as exc:
        print("refused:", exc)
    else:
        print("answered:" if data else "refused: closed without an answer", data[:200])
"""


def tls_client(host: Cluster, address: str, port: int, creds: list[str], alpn: str) -> str:
    """What a TLS client run on ``host`` with ``creds`` (PEM paths: cert, key, bundle) gets from
    ``address:port`` with ``alpn``: "answered: ..." or "refused: ..."."""
    script = host.tmp / "tls-client.py"
    script.write_text(textwrap.dedent(TLS_CLIENT))
    tried = host.run([sys.executable, str(script), address, str(port), *creds, alpn], timeout=20)
    assert tried.returncode == 0, tried.stderr
    return tried.stdout


def test_foreign_host_is_refused_and_its_records_ignored(network: netns.Network) -> None:
    """Host C has a CA of its own (another trust domain) and never joined: A's inbound refuses it,
    and the web C advertises on the same bridge never becomes an endpoint at B."""
    a, b, c = network.add_host("a"), network.add_host("b"), network.add_host("c")
    a.init_ca()
    c.init_ca()
    assert c.trust_domain != a.trust_domain
    b.trust_domain = a.trust_domain
    web_a = a.proxy("web", a.app("http", "web-a"), extra=["--inbound", f"{a.address}:0", "--interface", a.address])
    web_c = c.proxy("web", c.app("http", "web-c"), extra=["--inbound", f"{c.address}:0", "--interface", c.address])
    creds = issue(a, "client", b.tmp / "creds")
    client = b.proxy("client", b.app("http", "client"), extra=[*creds, "--interface", b.address])

    eventually(lambda: b.http("http://web/", proxy=outbound(client)).status == 200, 5, "B → web on A")
    # C's records reach B (a browser of C's trust domain in B finds them) ...
    assert browse(b, c.trust_domain, "web")["endpoints"] == [f"{c.address}:{web_c.inbound}"]
    # ... but B's mesh ignores them: only A's web is an endpoint, and every call lands there.
    assert endpoints(b, client, "web") == [f"{a.address}:{web_a.inbound}"]
    # B's client listens on loopback yet advertises on the bridge: useless to other hosts, and said so.
    client.process.wait_for("127.0.0.1 is advertised on .*other hosts cannot reach it", timeout=5)
    assert "cannot reach it" not in web_a.process.log()
    for _ in range(10):
        response = b.http("http://web/", proxy=outbound(client))
        assert response.status == 200 and response.headers["x-app"] == "web-a", response

    # C calls A's inbound with a certificate of its own CA: refused in the handshake, the reason logged on A.
    served = inbound_requests(a, web_a)
    assert served >= 10
    c_creds = c.tmp / "c-client"
    assert c.mesh("ca", "issue", "client", "--out", str(c_creds)).returncode == 0
    # A's bundle: C trusts A's server, but presents a certificate of its own CA.
    creds = [f"{c_creds}/cert.pem", f"{c_creds}/key.pem", f"{a.home}/ca/bundle.pem"]
    tried = tls_client(c, a.address, web_a.inbound, creds, "http/1.1")
    assert tried.startswith("refused:"), tried
    web_a.process.wait_for("not issued by this mesh's CA", timeout=5)
    # C's own mesh, told by a static file that web is at A, gets only a mesh error back.
    endpoints_file = c.tmp / "endpoints.toml"
    endpoints_file.write_text(f'[[endpoint]]\nservice = "web"\naddress = "{a.address}:{web_a.inbound}"\n')
    c_client = c.proxy("client", c.app("http", "client-c"), endpoints=endpoints_file, extra=["--no-zeroconf"])
    refused = c.http("http://web/", proxy=outbound(c_client))
    assert refused.status == 502 and refused.headers.get("x-mesh-error"), refused
    assert inbound_requests(a, web_a) == served  # nothing of C's reached A's app


def test_the_controller_reads_proxies_on_other_hosts_over_mtls_only(network: netns.Network) -> None:
    """web runs on B with its inbound on the bridge and its admin server on loopback (the only
    choice). From A, `mesh stat`, `mesh tap` (query values redacted unless --show-query),
    `mesh top --once` and `mesh check --proxy` read it over mTLS at its inbound; B's admin port
    answers nobody on A, and a service identity gets no admin pages. (Before: the controller
    dialled B:admin_port in plain HTTP, so web was unreachable unless its admin listened on the LAN.)"""
    a, b = network.add_host("a"), network.add_host("b")
    a.init_ca()
    up = a.mesh("up", "--detach", "--listen", f"{a.address}:0", "-o", "json")
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    a.adopt("mesh", info["pid"])
    joined = b.mesh(*shlex.split(info["join"])[1:], "-o", "json")
    assert joined.returncode == 0, joined.stderr
    b.trust_domain = a.trust_domain
    web = inject(b, "web", "--inbound", f"{b.address}:0")
    client = inject(a, "client")
    eventually(lambda: a.http("http://web/", proxy=outbound(client)).status == 200, 10, "A → web on B")

    # An admin server on the LAN is refused, with the way out.
    lan_admin = b.mesh("proxy", "--service", "web", "--app", "127.0.0.1:1", "--admin", f"{b.address}:0")
    assert lan_admin.returncode == 1 and "listens on loopback only" in lan_admin.stderr, lan_admin.stderr
    # B's admin port is closed to A; it answers on B's loopback.
    assert b.http(f"http://127.0.0.1:{web.admin}/ready").status == 200
    closed = a.http(f"http://{b.address}:{web.admin}/ready", timeout=3)
    assert closed.status == 0 and "failed to connect" in closed.error.lower(), closed

    for _ in range(5):
        assert a.http("http://web/search?q=cats&token=s3cret", proxy=outbound(client)).status == 200
    stats = json.loads(a.mesh("stat", "web", "-o", "json").stdout)
    web_row = next(row for row in stats["rows"] if row["service"] == "web" and row.get("version") is None)
    assert stats["unreachable"] == [] and web_row["reachable"] == 1 and web_row["requests"] >= 5, stats

    def tap(*flags: str) -> list[dict]:
        tapping = a.spawn(f"tap{len(flags)}", [*MESH, "tap", "web", "--direction", "inbound", "--max", "2", "-o", "json", *flags])
        tapping.wait_for(f"tapping web .*{b.address}:{web.inbound}", timeout=15)
        for _ in range(4):
            a.http("http://web/search?q=cats&token=s3cret", proxy=outbound(client))
        assert tapping.popen.wait(20) == 0, tapping.log()
        return [json.loads(line) for line in tapping.log().splitlines() if line.startswith("{")]

    redacted = tap()
    assert [e["path"] for e in redacted] == ["/search?q=REDACTED&token=REDACTED"] * 2
    assert all(e["proxy"] == "web" and e["src_identity"] == a.spiffe("client") for e in redacted)
    shown = tap("--show-query")
    assert [e["path"] for e in shown] == ["/search?q=cats&token=s3cret"] * 2
    assert "taps with query-string values shown" in (a.home / "run" / "mesh.log").read_text()

    def top_sees_web() -> str | None:
        for _ in range(3):
            a.http("http://web/", proxy=outbound(client))
        top = a.mesh("top", "--once", "--seconds", "2", timeout=60)
        return top.stdout if top.returncode == 0 and "from 2 proxies" in top.stdout else None

    eventually(top_sees_web, 30, "`mesh top --once` hears both proxies", interval=0.5)

    check = a.mesh("check", "--proxy", "-o", "json", timeout=60)
    plane = next(c for c in json.loads(check.stdout)["categories"] if c["name"] == "data plane")
    web_check = next(c for c in plane["checks"] if f"{b.address}:{web.inbound}" in c["message"])
    assert web_check["status"] == "ok" and "ready" in web_check["message"], web_check

    # A service's certificate (not the controller's, not an operator's) gets no admin pages.
    creds = issue(a, "client", a.tmp / "client-creds")
    tried = tls_client(a, b.address, web.inbound, creds[1::2], "mesh-admin")
    assert tried.startswith("refused"), tried
    web.process.wait_for(f"refused admin access \\(ALPN mesh-admin\\) to {a.spiffe('client')}", timeout=5)


# ---------------------------------------------------------------------------------------------
# Three hosts as an operator runs them (docs/cli.md, "Several hosts"), plus a fourth with a mesh
# of its own. One network for all the tests below, in order: each picks up where the last left.
# Joined hosts get no address flag at all: they listen and advertise where `mesh join` recorded.


class Walk:
    """A: `mesh up --listen A:4190`; B, C: `mesh join` with the line A printed; web on B, client on
    C; D: a mesh of its own (its own CA, the same default trust domain mesh.local) with a web too."""

    def __init__(self, network: netns.Network) -> None:
        self.network = network
        self.a, self.b, self.c, self.d = (network.add_host(name) for name in "abcd")
        for host in (self.a, self.b, self.c, self.d):
            host.trust_domain = "mesh.local"  # `mesh up` on a host without a CA: the default
        up = self.a.mesh("up", "--listen", f"{self.a.address}:4190", "--detach", "-o", "json", timeout=60)
        assert up.returncode == 0, up.stderr
        self.up = json.loads(up.stdout)
        self.controller = self.a.adopt("mesh", self.up["pid"])
        self.join = shlex.split(self.up["join"])
        assert self.join[:3] == ["mesh", "join", f"{self.a.address}:4190"]
        for host in (self.b, self.c):
            joined = host.mesh(*self.join[1:], "-o", "json")
            assert joined.returncode == 0, joined.stderr
        self.web = self.injected(self.b, "web")
        self.client = self.injected(self.c, "client")
        # D: another mesh on the same LAN, the same trust domain name, another CA.
        other = self.d.mesh("up", "--listen", f"{self.d.address}:4190", "--detach", "-o", "json", timeout=60)
        assert other.returncode == 0, other.stderr
        self.d.adopt("mesh", json.loads(other.stdout)["pid"])
        self.foreign_web = self.injected(self.d, "web", app="web-d")

    @staticmethod
    def injected(host: netns.Host, name: str, app: str | None = None) -> ProxyInfo:
        """`mesh inject --name NAME -- APP`, exactly so: no address flag."""
        process = host.spawn(f"inject-{name}", [*MESH, "inject", "--name", name, "--", *app_command(app or name)])
        ready = process.wait_for(READY, timeout=30)
        process.wait_for("app is ready", timeout=30)
        return ProxyInfo(process, port_of(ready["inbound"]), port_of(ready["outbound"]), port_of(ready["admin"]))

    def call(self, path: str = "/", timeout: float = 5.0) -> netns.Response:
        """C's client calls web by name through its sidecar."""
        return self.c.http(f"http://web{path}", proxy=outbound(self.client), timeout=timeout)


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    network = netns.Network(tmp_path_factory.mktemp("walk"))
    try:
        yield Walk(network)
    finally:
        network.close()


WALK_TIMEOUT = pytest.mark.timeout(150)


@WALK_TIMEOUT
def test_web_on_a_joined_host_is_called_from_another(walk: Walk) -> None:
    b, c = walk.b, walk.c
    # Nothing was said about addresses: B's sidecar listens on the address B reaches A from; its
    # admin server stays on loopback. Each joined host has a host identity, never a CA key.
    ready = walk.web.process.wait_for(READY)
    assert ready["inbound"] == f"{b.address}:{walk.web.inbound}" and ready["admin"].startswith("127.0.0.1:")
    host = json.loads((b.home / "host.json").read_text())
    assert (host["role"], host["address"], host["name"]) == ("joined", b.address, "b")
    assert not (b.home / "ca" / "issuer.key").exists() and not (b.home / "ca" / "root.key").exists()
    assert (b.home / "host" / "cert.pem").exists() and not (b.home / "operator").exists()

    response = eventually(lambda: (r := walk.call("/headers")).status == 200 and r, 10, "C → web on B")
    assert response.json()["mesh-client-id"] == "spiffe://mesh.local/svc/client"  # the caller's verified id
    assert endpoints(c, walk.client, "web") == [f"{b.address}:{walk.web.inbound}"]
    peers = b.run(["ss", "-Htn", "state", "established", f"( sport = :{walk.web.inbound} )"]).stdout
    assert f"{c.address}:" in peers, peers  # across the bridge, from C


@WALK_TIMEOUT
def test_a_mesh_of_its_own_on_the_same_lan_is_never_listed_nor_called(walk: Walk) -> None:
    """D (its own CA, trust domain mesh.local like A's) advertises a web on the bridge. Its records
    reach C and A (a browser of any mesh sees them) but neither lists them, and no call goes there;
    nobody logs a word about it above debug (before: D's web was an endpoint of web at C, handshakes
    failed and it was ejected, with warnings)."""
    c, d = walk.c, walk.d
    both = {f"{d.address}:{walk.foreign_web.inbound}", f"{walk.b.address}:{walk.web.inbound}"}
    eventually(lambda: both <= set(browse(c, "mesh.local", "web")["endpoints"]), 40, "both webs on the bridge")  # zeroconf under load
    for _ in range(10):
        response = walk.call()
        assert response.status == 200 and response.headers["x-app"] == "web", response
    assert endpoints(c, walk.client, "web") == [f"{walk.b.address}:{walk.web.inbound}"]
    status = json.loads(walk.a.mesh("status", "-o", "json").stdout)
    assert [e["address"] for e in status["services"]["web"]] == [f"{walk.b.address}:{walk.web.inbound}"]
    assert inbound_requests(d, walk.foreign_web) == 0
    for process in (walk.client.process, walk.web.process):
        assert d.address not in process.log(), process.log()


@WALK_TIMEOUT
def test_a_joined_host_reads_the_mesh_and_cannot_change_it(walk: Walk) -> None:
    """`mesh status`, `mesh top --once` and `mesh check` on B, as its host identity: all green.
    (Before: "no operator identity", and `mesh check` advised `mesh ca init --force`.)"""
    b = walk.b
    status = b.mesh("status", "-o", "json")
    assert status.returncode == 0, status.stderr
    services = json.loads(status.stdout)["services"]
    assert sorted(services) == ["client", "web"], services

    def top_sees_both() -> str | None:
        top = b.spawn("top", [*MESH, "top", "--once", "--seconds", "3"])
        time.sleep(1)
        for _ in range(5):
            walk.call()
        if top.popen.wait(60) != 0:
            return None
        text = top.log()
        return text if "from 2 proxies" in text and re.search(r"client\s+web\s+GET\s+/", text) else None

    eventually(top_sees_both, 40, "`mesh top --once` on B hears both proxies and the calls", interval=0.5)

    check = b.mesh("check", "--proxy", timeout=90)  # --proxy: every proxy read over mTLS, as B
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{walk.c.address}:{walk.client.inbound}" in check.stdout, check.stdout
    assert "\u203c" not in check.stdout and "\u00d7" not in check.stdout, check.stdout  # no warning, no failure
    assert "ca init" not in check.stdout and "this host joined the mesh" in check.stdout, check.stdout
    assert "spiffe://mesh.local/host/b" in check.stdout

    # Reading is all a host identity may do.
    fault = b.mesh("fault", "web", "--abort", "503", "--for", "1m")
    assert fault.returncode == 1, fault.stdout
    assert "is a host identity: it may read the mesh, not change it" in fault.stderr, fault.stderr
    assert "mesh operator grant" in fault.stderr


@WALK_TIMEOUT
def test_an_operator_grants_another_host_operator_rights(walk: Walk) -> None:
    """`mesh operator grant NAME` on A prints a `mesh join … --operator GRANT` line; C runs it and
    may then change the mesh (`mesh fault`); the grant works once."""
    a, c = walk.a, walk.c
    granted = a.mesh("operator", "grant", "ops-c", "-o", "json")
    assert granted.returncode == 0, granted.stderr
    line = shlex.split(json.loads(granted.stdout)["join"])
    assert line[:3] == walk.join[:3] and line[-2] == "--operator"
    joined = c.mesh(*line[1:], "-o", "json")
    assert joined.returncode == 0, joined.stderr
    assert json.loads(joined.stdout)["operator"] == "spiffe://mesh.local/operator/ops-c"
    again = walk.b.mesh(*line[1:])
    assert again.returncode == 1 and "unknown, already used or expired" in again.stderr, again.stderr

    fault = c.mesh("fault", "web", "--abort", "503", "--for", "1m")
    assert fault.returncode == 0, fault.stderr
    eventually(lambda: walk.call().headers.get("x-mesh-error") == "fault-injected", 5, "the fault in force at C")
    assert c.mesh("fault", "web", "--clear").returncode == 0
    eventually(lambda: walk.call().status == 200, 5, "the fault cleared")


@WALK_TIMEOUT
def test_a_gateway_is_seen_by_stat_and_edges_and_is_never_an_endpoint(walk: Walk) -> None:
    a, c = walk.a, walk.c
    gateway = a.spawn("gateway", [*MESH, "gateway", "--to", "web"])
    ready = gateway.wait_for(r"proxy gateway ready: (.*)$", timeout=30)
    # On A's address (recorded by `mesh up --listen`): its edge and its admin pages over mTLS.
    assert f"listen http {a.address}:9080" in ready[1] and f"admin-mtls {a.address}:" in ready[1], ready[0]
    for _ in range(5):
        eventually(lambda: c.http(f"http://{a.address}:9080/").status == 200, 10, "outside → A's gateway → web")

    def stat_sees_the_gateway() -> dict | None:
        stats = json.loads(a.mesh("stat", "-o", "json").stdout)
        row = next((r for r in stats["rows"] if r["service"] == "gateway"), None)
        return stats if row and row["reachable"] == 1 else None

    stats = eventually(stat_sees_the_gateway, 15, "`mesh stat` lists the gateway", interval=0.5)
    assert stats["unreachable"] == [], stats
    edges = json.loads(a.mesh("edges", "-o", "json").stdout)
    edge = next(e for e in edges["edges"] if (e["src"], e["dst"]) == ("gateway", "web"))
    assert edge["total_requests"] >= 5 and edge["mtls"], edge
    # Never an endpoint: nobody gets the gateway in a snapshot.
    assert "gateway" not in config(c, walk.client)["endpoints"]


@WALK_TIMEOUT
def test_status_hosts_lists_every_host_of_the_mesh(walk: Walk) -> None:
    hosts = eventually(
        lambda: (h := json.loads(walk.c.mesh("status", "--hosts", "-o", "json").stdout)["hosts"])
        and len(h) == 3
        and h,
        15,
        "three hosts",
    )
    by_address = {h["address"]: h for h in hosts}
    a, b, c = (by_address[h.address] for h in (walk.a, walk.b, walk.c))
    assert walk.d.address not in by_address
    assert "controller" in a["roles"] and a["this"] and "gateway" in a["gateways"]
    assert b["roles"] == ["joined"] and b["services"] == ["web"] and b["name"] == "b"
    assert c["roles"] == ["joined", "operator"] and c["services"] == ["client"] and c["name"] == "c"
    for host in (a, b, c):
        assert host["version"] and host["skew_seconds"] is not None and abs(host["skew_seconds"]) < 2, host
        assert time.time() - host["last_seen"] < 30, host
    table = walk.c.mesh("status", "--hosts")
    assert table.returncode == 0 and walk.b.address in table.stdout and "web" in table.stdout, table.stdout


@WALK_TIMEOUT
def test_restarting_the_controller_leaves_no_error_in_any_proxy_log(walk: Walk) -> None:
    a = walk.a
    down = a.mesh("down", timeout=60)
    assert down.returncode == 0, down.stderr
    walk.controller.popen.wait(30)
    for process in (walk.web.process, walk.client.process):
        process.wait_for("lost the controller at", timeout=10)
    assert walk.call().status == 200  # the data plane does not need the controller
    up = a.mesh("up", "--listen", f"{a.address}:4190", "--detach", "-o", "json", timeout=60)
    assert up.returncode == 0, up.stderr
    walk.controller = a.adopt("mesh", json.loads(up.stdout)["pid"])

    def watching() -> bool:  # every proxy back on a watch (their registrations outlived the restart)
        status = json.loads(a.mesh("status", "-o", "json").stdout)
        entries = [e for es in status["services"].values() for e in es]
        return sorted(status["services"]) == ["client", "gateway", "web"] and all(e["watching"] for e in entries)

    eventually(watching, 30, "every proxy watching the controller again", interval=0.3)
    logs = {p.name: p.log() for p in (*walk.b.processes, *walk.c.processes, *walk.a.processes) if p.name != "mesh"}
    for name, text in logs.items():
        assert " ERROR " not in text and "Traceback" not in text, f"{name}:\n{text}"
    # Every line of every long-running process: UTC time and component first.
    line = next(text for text in logs["inject-web"].splitlines() if "ready:" in text)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[mesh inject web\] INFO ", line), line


@WALK_TIMEOUT
def test_a_killed_service_is_out_of_every_callers_endpoint_set_within_3s(walk: Walk) -> None:
    """kill -9 of web's process group on B (app and sidecar): within 3 s C's calls get a clear 503,
    never a hang, and web is out of C's endpoints (before: ~28 s of 502s, until its lease ran out)."""
    assert walk.call().status == 200
    os.killpg(walk.web.process.popen.pid, signal.SIGKILL)
    killed = time.monotonic()
    answers = []

    def gone() -> bool:
        response = walk.call(timeout=2)
        listed = endpoints(walk.c, walk.client, "web")
        answers.append((round(time.monotonic() - killed, 2), response.status, response.headers.get("x-mesh-error"), listed))
        return response.status == 503 and not listed

    try:
        eventually(gone, 3, "web gone from C", interval=0.1)
    except AssertionError:
        raise AssertionError(f"{answers}\n{walk.controller.log()}\n{walk.client.process.log()}") from None
    assert all(status in (502, 503) and reason for _, status, reason, _ in answers), answers
    assert answers[-1][1] == 503, answers
    status = json.loads(walk.a.mesh("status", "-o", "json").stdout)
    assert "web" not in status["services"], status["services"]
