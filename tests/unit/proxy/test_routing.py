"""OutboundRouter / InboundRouter decisions, split_authority, mesh_service_name."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from mesh.discovery import Endpoint
from mesh.net import ALPN_HTTP1, ALPN_TCP
from mesh.proxy._balancer import Balancer
from mesh.proxy._exchange import Forward, Reject, UpstreamKey
from mesh.proxy._routing import InboundRouter, OutboundRouter, mesh_service_name, split_authority
from mesh.proxy.protocol.http1 import Framing, RequestHead, RequestReader

TD = "mesh.test"
OWN = {("127.0.0.1", 4140), ("127.0.0.1", 4143), ("127.0.0.1", 9990)}

ENDPOINTS = {
    "web": (Endpoint("web", "10.0.0.1", 4143),),
    "api": (
        Endpoint("api", "10.0.0.2", 4143, identity="spiffe://mesh.test/ns/prod/api"),
        Endpoint("api", "10.0.0.3", 4143, identity="spiffe://mesh.test/ns/prod/api"),
    ),
    "v6": (Endpoint("v6", "fd00::1", 4143),),
}


class Clock:
    now = 50.0

    def __call__(self) -> float:
        return self.now


def make_router(endpoints: dict | None = None, own: set | None = None, fixed: str | None = None) -> OutboundRouter:
    table = ENDPOINTS if endpoints is None else endpoints
    return OutboundRouter(
        lambda service: table.get(service, ()),
        Balancer(random.Random(5), Clock()),
        TD,
        7.5,
        own_addresses=OWN if own is None else own,
        fixed_service=fixed,
    )


def head(method: bytes, target: bytes, *headers: tuple[bytes, bytes]) -> RequestHead:
    return RequestHead(method, target, list(headers), b"1.1", True, Framing.NONE, None, method == b"CONNECT")


def parsed(raw: bytes) -> RequestHead:
    event = RequestReader().feed(raw)[0]
    assert isinstance(event, RequestHead)
    return event


def forward(decision: Forward | Reject) -> Forward:
    assert isinstance(decision, Forward), decision
    return decision


def reject(decision: Forward | Reject) -> Reject:
    assert isinstance(decision, Reject), decision
    return decision


# --------------------------------------------------------------------------
# Outbound: mesh services


def test_absolute_form_to_a_service() -> None:
    decision = forward(make_router().route(parsed(b"GET http://web/x?y HTTP/1.1\r\nHost: web\r\n\r\n")))
    assert decision.key == UpstreamKey("10.0.0.1", 4143, ALPN_HTTP1, f"spiffe://{TD}/svc/web")
    assert decision.peer_service == "web"
    assert decision.target == b"/x?y"  # origin-form towards the peer
    assert decision.endpoint == "10.0.0.1:4143"
    assert decision.timeout == 7.5
    assert not decision.tunnel


def test_absolute_form_url_host_wins_over_host_header() -> None:
    decision = forward(make_router().route(parsed(b"GET http://web/p HTTP/1.1\r\nHost: api\r\n\r\n")))
    assert decision.peer_service == "web"


@pytest.mark.parametrize(
    "target, path",
    [
        (b"http://web.mesh:8080/", b"/"),
        (b"http://web.mesh", b"/"),
        (b"http://WEB.MESH/a/b", b"/a/b"),
        (b"http://web:81/q?a=1&b=2", b"/q?a=1&b=2"),
        (b"http://web/x#fragment", b"/x"),
    ],
)
def test_absolute_form_variants(target: bytes, path: bytes) -> None:
    decision = forward(make_router().route(head(b"GET", target)))
    assert decision.peer_service == "web"
    assert decision.target == path
    assert decision.key.alpn == ALPN_HTTP1


@pytest.mark.parametrize("host", [b"web", b"web:8080", b"web.mesh", b"WEB.mesh:80", b" web "])
def test_origin_form_uses_host(host: bytes) -> None:
    decision = forward(make_router().route(head(b"GET", b"/p?q", (b"Host", host))))
    assert decision.peer_service == "web"
    assert decision.target == b"/p?q"


def test_connect_to_a_service_is_an_mtls_tcp_tunnel() -> None:
    decision = forward(make_router().route(parsed(b"CONNECT web:443 HTTP/1.1\r\nHost: web:443\r\n\r\n")))
    assert decision.tunnel
    assert decision.key == UpstreamKey("10.0.0.1", 4143, ALPN_TCP, f"spiffe://{TD}/svc/web")
    assert decision.peer_service == "web"


def test_endpoint_identity_wins_over_the_default() -> None:
    decision = forward(make_router().route(head(b"GET", b"http://api/")))
    assert decision.key.identity == "spiffe://mesh.test/ns/prod/api"
    assert decision.key.host in ("10.0.0.2", "10.0.0.3")


def test_requests_spread_over_endpoints_and_feed_the_balancer() -> None:
    router = make_router()
    seen = set()
    for _ in range(40):
        decision = forward(router.route(head(b"GET", b"/", (b"Host", b"api"))))
        seen.add(decision.key.host)
        router.finished(decision, Clock.now, True)
    assert seen == {"10.0.0.2", "10.0.0.3"}
    # route() counts the request as outstanding until finished() is called.
    balancer = router._balancer  # noqa: SLF001 - checking the feedback loop
    decision = forward(router.route(head(b"GET", b"/", (b"Host", b"api"))))
    assert balancer.load(decision.endpoint).pending == 1  # type: ignore[arg-type]
    router.finished(decision, Clock.now, True)
    assert balancer.load(decision.endpoint).pending == 0  # type: ignore[arg-type]


def test_ipv6_endpoint_key() -> None:
    decision = forward(make_router().route(head(b"GET", b"/", (b"Host", b"v6"))))
    assert decision.key.host == "fd00::1"
    assert decision.endpoint == "[fd00::1]:4143"


def test_fixed_service_ignores_host() -> None:
    router = make_router(fixed="web")
    decision = forward(router.route(head(b"GET", b"/x", (b"Host", b"example.com"))))
    assert decision.peer_service == "web"
    decision = forward(router.route(head(b"GET", b"/x")))  # no Host at all
    assert decision.peer_service == "web"
    empty = reject(make_router(fixed="nothing").route(head(b"GET", b"/x", (b"Host", b"example.com"))))
    assert (empty.status, empty.reason) == (503, "no-endpoints")


# --------------------------------------------------------------------------
# Outbound: refusals


def test_https_absolute_form_is_refused() -> None:
    decision = reject(make_router().route(head(b"GET", b"https://web/x")))
    assert decision.status == 400 and decision.reason == "bad-request"


@pytest.mark.parametrize("target", [b"http://web/", b"/"])
def test_unknown_single_label_service_is_503(target: bytes) -> None:
    decision = reject(make_router().route(head(b"GET", target.replace(b"web", b"reviews"), (b"Host", b"reviews"))))
    assert (decision.status, decision.reason) == (503, "no-endpoints")
    assert decision.peer_service == "reviews"
    assert "reviews" in decision.message


def test_unknown_mesh_suffixed_service_is_503_not_egress() -> None:
    decision = reject(make_router().route(head(b"GET", b"http://reviews.mesh/")))
    assert (decision.status, decision.peer_service) == (503, "reviews")


def test_an_endpoint_that_refuses_connections_is_set_aside_even_alone() -> None:
    """A lone endpoint whose process died: its first caller finds nothing listening (the I/O loop
    asks for a failover: there is none), the next ones get a fast 503, not a 502 each; once its
    time aside is up (1 s, doubling while it keeps failing) a request tries it again."""
    router = make_router()
    clock = Clock()
    router.policy.outliers._clock = clock
    first = forward(router.route(head(b"GET", b"http://web/")))
    assert router.failover_to(first) is None  # alone: nowhere else to go
    refused = reject(router.route(head(b"GET", b"http://web/")))
    assert (refused.status, refused.reason) == (503, "no-healthy-endpoints")
    clock.now += 1.1
    again = forward(router.route(head(b"GET", b"http://web/")))  # tried again
    assert router.failover_to(again) is None
    clock.now += 1.1
    assert reject(router.route(head(b"GET", b"http://web/"))).reason == "no-healthy-endpoints"  # 2 s now
    clock.now += 1.0
    served = forward(router.route(head(b"GET", b"http://web/")))
    router.finished(served, clock.now, True)  # back: a success resets its record
    assert forward(router.route(head(b"GET", b"http://web/")))


def test_a_refusing_endpoint_among_others_is_skipped_at_once() -> None:
    router = make_router()
    first = forward(router.route(head(b"GET", b"http://api/")))
    other = forward(router.failover_to(first))
    assert other.endpoint != first.endpoint
    for _ in range(20):  # nobody is sent to the dead one meanwhile
        assert forward(router.route(head(b"GET", b"http://api/"))).endpoint == other.endpoint


@pytest.mark.parametrize(
    "request_head",
    [
        head(b"GET", b"/"),  # no Host
        head(b"GET", b"/", (b"Host", b"")),
        head(b"GET", b"/", (b"Host", b"web:0")),
        head(b"GET", b"/", (b"Host", b"web:99999")),
        head(b"GET", b"/", (b"Host", b"web:http")),
        head(b"GET", b"/", (b"Host", b"[::1")),
        head(b"CONNECT", b":443"),
    ],
    ids=["no-host", "empty-host", "port-0", "port-too-big", "port-name", "bad-ipv6", "connect-no-host"],
)
def test_no_valid_host_is_400(request_head: RequestHead) -> None:
    decision = reject(make_router().route(request_head))
    assert (decision.status, decision.reason) == (400, "bad-request")


def test_unparseable_absolute_url_is_400() -> None:
    decision = reject(make_router().route(head(b"GET", b"http://")))
    assert decision.status == 400


@pytest.mark.parametrize("host", [b"web:\xb2", b"web:\xb9\xb2\xb3", b"[::1]:\xb2"])
def test_non_ascii_digit_port_is_400_not_a_crash(host: bytes) -> None:
    # BUG: str.isdigit() accepts '²' (a Latin-1 byte, allowed in header values),
    # then int() raises ValueError out of route().
    decision = reject(make_router().route(head(b"GET", b"/", (b"Host", host))))
    assert decision.status == 400


def test_absolute_form_port_zero_is_refused() -> None:
    # BUG: "http://example.com:0/" parses with port 0, which is falsy, so the port
    # is silently dropped and the request goes to port 80.
    decision = make_router().route(head(b"GET", b"http://example.com:0/"))
    assert isinstance(decision, Reject) and decision.status == 400, decision


# --------------------------------------------------------------------------
# Outbound: egress and loops


@pytest.mark.parametrize(
    "request_head, host, port, path",
    [
        (head(b"GET", b"http://example.com/a?b"), "example.com", 80, b"/a?b"),
        (head(b"GET", b"http://Example.COM:8080/"), "example.com", 8080, b"/"),
        (head(b"GET", b"/z", (b"Host", b"api.github.com")), "api.github.com", 80, b"/z"),
        (head(b"GET", b"http://10.1.2.3:81/"), "10.1.2.3", 81, b"/"),
        (head(b"GET", b"/", (b"Host", b"[2001:db8::1]:8080")), "2001:db8::1", 8080, b"/"),
        (head(b"GET", b"http://localhost:3000/"), "localhost", 3000, b"/"),
        (head(b"GET", b"http://127.0.0.1:9999/"), "127.0.0.1", 9999, b"/"),
    ],
)
def test_egress_for_hosts_that_are_not_services(request_head: RequestHead, host: str, port: int, path: bytes) -> None:
    decision = forward(make_router().route(request_head))
    assert decision.peer_service == "egress"
    assert decision.key == UpstreamKey(host, port, None, None)  # plain TCP, no identity
    assert decision.target == path
    assert decision.endpoint is None  # nothing for the balancer
    assert not decision.tunnel


def test_connect_egress_tunnel() -> None:
    decision = forward(make_router().route(head(b"CONNECT", b"example.com:443", (b"Host", b"example.com:443"))))
    assert decision.tunnel and decision.peer_service == "egress"
    assert decision.key == UpstreamKey("example.com", 443, None, None)
    decision = forward(make_router().route(head(b"CONNECT", b"example.com")))
    assert decision.key.port == 443  # CONNECT's default port


def test_ipv6_absolute_form_egress() -> None:
    # BUG: httptools gives the URL host without brackets ("::1"), the router glues
    # ":8080" to it and split_authority cannot read "::1:8080" → 400.
    decision = forward(make_router().route(head(b"GET", b"http://[::1]:8080/x")))
    assert decision.key == UpstreamKey("::1", 8080, None, None)
    assert decision.target == b"/x"


@pytest.mark.parametrize(
    "request_head",
    [
        head(b"GET", b"http://127.0.0.1:4140/"),
        head(b"GET", b"http://localhost:4140/"),
        head(b"GET", b"http://LOCALHOST:4143/x"),
        head(b"GET", b"/", (b"Host", b"127.0.0.1:9990")),
        head(b"CONNECT", b"localhost:4140"),
    ],
)
def test_requests_to_the_proxy_itself_are_loops(request_head: RequestHead) -> None:
    decision = reject(make_router().route(request_head))
    assert (decision.status, decision.reason) == (400, "loop")


def test_same_host_other_port_is_not_a_loop() -> None:
    decision = forward(make_router().route(head(b"GET", b"http://127.0.0.1:4141/")))
    assert decision.peer_service == "egress"


def test_dotted_name_with_endpoints_is_a_service() -> None:
    table = {"db.internal": (Endpoint("db-internal", "10.9.9.9", 4143),)}
    decision = forward(make_router(table).route(head(b"GET", b"http://db.internal/")))
    assert decision.peer_service == "db.internal"
    assert decision.key.alpn == ALPN_HTTP1


# --------------------------------------------------------------------------
# Outbound: headers added


def test_request_id_added_when_absent() -> None:
    router = make_router()
    first = forward(router.route(head(b"GET", b"/", (b"Host", b"web"))))
    second = forward(router.route(head(b"GET", b"http://example.com/")))
    for decision in (first, second):
        assert len(decision.add_headers) == 1
        name, value = decision.add_headers[0]
        assert name == b"x-request-id"
        assert len(value) >= 16 and value.isascii()
    assert first.add_headers[0][1] != second.add_headers[0][1]  # unique per request


@pytest.mark.parametrize("name", [b"x-request-id", b"X-Request-ID", b"X-REQUEST-ID"])
def test_request_id_kept_when_present(name: bytes) -> None:
    decision = forward(make_router().route(head(b"GET", b"/", (b"Host", b"web"), (name, b"abc"))))
    assert decision.add_headers == []


# --------------------------------------------------------------------------
# split_authority / mesh_service_name


@pytest.mark.parametrize(
    "authority, expected",
    [
        (b"web", ("web", 80)),
        (b"web:8080", ("web", 8080)),
        (b"WeB.Mesh:1", ("web.mesh", 1)),
        (b"web:65535", ("web", 65535)),
        (b"web:0080", ("web", 80)),
        (b"  web:81  ", ("web", 81)),
        (b"[::1]:80", ("::1", 80)),
        (b"[::1]", ("::1", 80)),
        (b"[2001:DB8::1]:443", ("2001:db8::1", 443)),
        (b"10.0.0.1:9", ("10.0.0.1", 9)),
    ],
)
def test_split_authority_valid(authority: bytes, expected: tuple[str, int]) -> None:
    assert split_authority(authority, 80) == expected


@pytest.mark.parametrize(
    "authority",
    [
        b"",
        b"   ",
        b":80",
        b"web:0",
        b"web:65536",
        b"web:-1",
        b"web:+80",
        b"web: 80",
        b"web:8 0",
        b"web:80:81",
        b"web:0x50",
        b"[::1",
        b"[::1]x",
        b"[::1]80",
        b"[]:80",
        b"::1",
        b"web:\xb2",
        b"web:\xb9",
    ],
)
def test_split_authority_invalid(authority: bytes) -> None:
    # BUG for b"web:\xb2" / b"web:\xb9": ValueError instead of None.
    assert split_authority(authority, 80) is None


def test_split_authority_default_port() -> None:
    assert split_authority(b"web", 443) == ("web", 443)
    assert split_authority(b"[fe80::1]", 443) == ("fe80::1", 443)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=24))
def test_split_authority_never_raises(authority: bytes) -> None:
    result = split_authority(authority, 80)
    if result is not None:
        host, port = result
        assert host and 0 < port < 65536
        assert host == host.lower()


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["web", "a-b", "x1", "example.com", "10.0.0.1", "::1", "fe80::2"]),
    st.integers(1, 65535),
)
def test_split_authority_round_trip(host: str, port: int) -> None:
    text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert split_authority(text.encode(), 1) == (host, port)


@pytest.mark.parametrize(
    "host, expected",
    [
        ("web", ("web", True)),
        ("web.mesh", ("web", True)),
        ("a-b.mesh", ("a-b", True)),
        ("mesh", ("mesh", True)),
        ("localhost", ("localhost", False)),
        ("example.com", ("example.com", False)),
        ("10.0.0.1", ("10.0.0.1", False)),
        ("::1", ("::1", False)),
        ("2001:db8::1", ("2001:db8::1", False)),
    ],
)
def test_mesh_service_name(host: str, expected: tuple[str, bool]) -> None:
    assert mesh_service_name(host) == expected


# --------------------------------------------------------------------------
# Inbound


APP = UpstreamKey("127.0.0.1", 8080, None, None)
CALLER = "spiffe://mesh.test/svc/frontend"


def inbound() -> InboundRouter:
    return InboundRouter(APP, CALLER, "frontend", 4.0)


@pytest.mark.parametrize(
    "target, expected",
    [
        (b"http://web/x?y=1", b"/x?y=1"),
        (b"http://web.mesh:8080", b"/"),
        (b"https://web/secure", b"/secure"),
        (b"/already/origin?form", b"/already/origin?form"),
        (b"*", b"*"),
    ],
)
def test_inbound_target_becomes_origin_form(target: bytes, expected: bytes) -> None:
    decision = forward(inbound().route(head(b"GET", target)))
    assert decision.target == expected
    assert decision.key == APP
    assert decision.peer_service == "frontend"
    assert decision.timeout == 4.0


def test_inbound_replaces_client_id_with_the_callers() -> None:
    forged = head(b"GET", b"/", (b"Host", b"web"), (b"Mesh-Client-Id", b"spiffe://evil/svc/admin"))
    decision = forward(inbound().route(forged))
    assert decision.add_headers == [(b"mesh-client-id", CALLER.encode())]
    # The proxy compares lower-cased names against drop_headers.
    assert b"mesh-client-id" in decision.drop_headers
    assert all(name == name.lower() for name in decision.drop_headers)
    # Applied the way the proxy applies it, exactly one id remains: the caller's.
    kept = [(k, v) for k, v in forged.headers if k.lower() not in decision.drop_headers] + decision.add_headers
    assert [v for k, v in kept if k.lower() == b"mesh-client-id"] == [CALLER.encode()]
    assert (b"Host", b"web") in kept


def test_inbound_refuses_connect_from_peers() -> None:
    # Callers' proxies carry CONNECT tunnels as opaque mesh-tcp streams (policed, detected); an HTTP
    # CONNECT from a peer would be a raw pipe to the app.
    decision = inbound().route(head(b"CONNECT", b"web:443"))
    assert isinstance(decision, Reject) and decision.status == 405


def test_the_edge_carries_no_connect_tunnels() -> None:
    router = OutboundRouter(lambda service: (), Balancer(), "mesh.local", 5.0, fixed_service="web", tunnels=False)
    decision = router.route(head(b"CONNECT", b"web:443"))
    assert isinstance(decision, Reject) and decision.status == 405


def test_inbound_bad_absolute_target_is_400_not_a_crash() -> None:
    # BUG: llhttp accepts the request line "GET http:// HTTP/1.1", and
    # InboundRouter.route lets httptools.HttpParserInvalidURLError escape
    # (OutboundRouter turns the same target into Reject 400).
    request_head = parsed(b"GET http:// HTTP/1.1\r\nHost: web\r\n\r\n")
    decision = inbound().route(request_head)
    assert isinstance(decision, Reject) and decision.status == 400
