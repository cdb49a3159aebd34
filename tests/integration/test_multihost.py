"""Several hosts: network namespaces on one bridge, each with its own MESH_HOME (root only).

Every request here crosses the bridge between two namespaces (tests/integration/netns.py);
zeroconf runs on a namespace's bridge interface or its loopback, never on the machine's.
How to run a mesh over several hosts: docs/cli.md, "Several hosts".
"""

from __future__ import annotations

import collections
import json
import os
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
from tests.integration.conftest import APPS, READY, ProxyInfo, port_of

_why = netns.unavailable()
pytestmark = [pytest.mark.skipif(_why is not None, reason=_why or ""), pytest.mark.timeout(90)]

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


def test_joined_host_calls_a_service_on_the_controller_host(network: netns.Network) -> None:
    """Host A: `mesh up` and web behind `mesh inject`; host B: `mesh join` with the line A printed,
    then a client behind its sidecar calls web by name, over mTLS, across the bridge."""
    a, b = network.add_host("a"), network.add_host("b")
    a.init_ca()
    up = a.mesh("up", "--detach", "--listen", f"{a.address}:0", "-o", "json")
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    controller = a.adopt("mesh", info["pid"])
    assert info["controller"].startswith(f"{a.address}:")

    # B runs exactly the line A printed; it gets A's bundle and token, never a CA key.
    join = shlex.split(info["join"])
    assert join[:3] == ["mesh", "join", info["controller"]]
    joined = b.mesh(*join[1:], "-o", "json")
    assert joined.returncode == 0, joined.stderr
    assert json.loads(joined.stdout)["trust_domain"] == a.trust_domain
    assert not (b.home / "ca" / "issuer.key").exists() and not (b.home / "ca" / "root.key").exists()
    b.trust_domain = a.trust_domain

    # web's inbound listens on A's bridge address, so that is what it registers with the controller.
    web = inject(a, "web", "--inbound", f"{a.address}:0")
    client = inject(b, "client")
    assert config(b, client)["identity"] == b.spiffe("client")  # signed by A's controller

    started = time.monotonic()
    response = eventually(
        lambda: (r := b.http("http://web/headers", proxy=outbound(client))).status == 200 and r,
        10,
        "B → web on A",
    )
    assert time.monotonic() - started < 10
    assert response.json()["mesh-client-id"] == a.spiffe("client")  # the caller's verified identity, seen on A
    assert endpoints(b, client, "web") == [f"{a.address}:{web.inbound}"]
    # The connection really came from B across the bridge: A's inbound has B as its TCP peer.
    peers = a.run(["ss", "-Htn", "state", "established", f"( sport = :{web.inbound} )"]).stdout
    assert f"{b.address}:" in peers, peers

    # A's controller sees the proxy of B under its identity. B's client only calls out and was left
    # on loopback: its registration is kept (B may call it) and A says that no other host can reach it.
    status = json.loads(a.mesh("status", "-o", "json").stdout)
    assert [e["identity"] for e in status["services"]["client"]] == [a.spiffe("client")]
    controller.wait_for(rf"registered the loopback address 127\.0\.0\.1:{client.inbound} from {b.address}:", 5)
    assert controller.log().count("registered the loopback address") == 1  # web, on A's address, is fine
    # Plain HTTP straight at A's inbound from B gets nothing: only mTLS is spoken there.
    assert b.http(f"http://{a.address}:{web.inbound}/headers", timeout=3).status == 0


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
    # Nothing of A's is advertised on loopback (B's client is: it only calls out, as above).
    warned = [line for line in (web_log.read_text() + controller.log()).splitlines() if "cannot reach it" in line]
    assert all(f"from {b.address}" in line for line in warned), warned

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
        return answer.status == 503

    eventually(unrouted, 15, "web2 expired at B", interval=0.5)
    expired_after = time.monotonic() - killed
    assert not endpoints(b, client, "web")
    # Until the records expire every answer is the mesh's own error, never a hang or a bare failure.
    assert all(status in (502, 503) and reason for status, reason in answers), answers
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


def tls_client(host: netns.Host, address: str, port: int, creds: list[str], alpn: str) -> str:
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


def test_a_foreign_ca_with_the_same_trust_domain_name_is_never_served(network: netns.Network) -> None:
    """Two meshes that both kept a trust domain name (say the default mesh.local) on one LAN: mDNS
    cannot tell their records apart, so B lists C's web too, but the handshake checks the CA and
    no call ever reaches C: the ones sent there fail as the mesh's own 502 (x-mesh-error)."""
    a, b, c = network.add_host("a"), network.add_host("b"), network.add_host("c")
    a.init_ca()
    c.trust_domain = b.trust_domain = a.trust_domain
    c.init_ca()  # same name, another root
    web_a = a.proxy("web", a.app("http", "web-a"), extra=["--inbound", f"{a.address}:0", "--interface", a.address])
    web_c = c.proxy("web", c.app("http", "web-c"), extra=["--inbound", f"{c.address}:0", "--interface", c.address])
    creds = issue(a, "client", b.tmp / "creds")
    client = b.proxy("client", b.app("http", "client"), extra=[*creds, "--interface", b.address])
    both = sorted([f"{a.address}:{web_a.inbound}", f"{c.address}:{web_c.inbound}"])
    eventually(lambda: endpoints(b, client, "web") == both, 5, "both records at B")

    answers = collections.Counter()
    for _ in range(30):
        response = b.http("http://web/", proxy=outbound(client))
        answers[(response.status, response.headers.get("x-app"), response.headers.get("x-mesh-error"))] += 1
    assert answers[(200, "web-a", None)] > 0, answers
    refused = [key for key in answers if key != (200, "web-a", None)]
    assert all(status == 502 and app is None and reason for status, app, reason in refused), answers
    client.process.wait_for(rf"handshake with {c.address}:{web_c.inbound} failed: .*not issued by this mesh's CA", 5)
    assert inbound_requests(c, web_c) == 0


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
