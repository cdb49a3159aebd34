"""The gateway's decisions without sockets: routes by host and path, forwarding headers and whom
to believe, per-client limits in bounded memory, the redirect's location, the EdgeRouter."""

from __future__ import annotations

import ipaddress
import random
import re

import pytest

from mesh.discovery import Endpoint
from mesh.proxy._balancer import Balancer
from mesh.proxy._edge import (
    MAX_TRACKED_CLIENTS,
    ClientLimits,
    EdgeClient,
    EdgeRoute,
    EdgeRouter,
    EdgeRoutes,
    LimitSettings,
    TrustedNetworks,
    client_key,
    forwarding_headers,
    parse_ip,
    parse_route,
    redirect_location,
    request_host_and_path,
    retry_after,
)
from mesh.proxy._exchange import Forward, Reason, Reject, mesh_error_response
from mesh.proxy._routing import OutboundRouter
from mesh.proxy.protocol.http1 import Framing, RequestHead

TD = "edge.test"


def head(target: bytes = b"/", *headers: tuple[bytes, bytes], method: bytes = b"GET", version: bytes = b"1.1") -> RequestHead:
    return RequestHead(method, target, list(headers), version, True, Framing.NONE, None, method == b"CONNECT")


def host(name: bytes, target: bytes = b"/", *headers: tuple[bytes, bytes], **kw: bytes) -> RequestHead:
    return head(target, (b"Host", name), *headers, **kw)


# -- routes -----------------------------------------------------------------------------------


def test_parse_route_takes_host_prefix_and_service() -> None:
    assert parse_route("shop.example/api=api") == EdgeRoute("api", "shop.example", "/api")
    assert parse_route("Shop.Example=web") == EdgeRoute("web", "shop.example", None)
    assert parse_route("*.blog.example=blog") == EdgeRoute("blog", "*.blog.example", None)
    assert parse_route("*/static=cdn") == EdgeRoute("cdn", None, "/static")
    assert parse_route("a.example/q=1=svc") == EdgeRoute("svc", "a.example", "/q=1")  # the service follows the last "="
    for route in ("shop.example/api=api", "*.blog.example=blog", "*/static=cdn"):
        assert parse_route(route).describe() == route


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("shop.example", "expected HOST[/PREFIX]=SERVICE"),
        ("=web", "expected HOST[/PREFIX]=SERVICE"),
        ("shop example=web", "is not a host to route"),
        ("*shop.example=web", "is not a host to route"),
        ("shop.example=Web", "is not a service name"),
        ("shop.example/a b=web", "is not a path prefix"),
    ],
)
def test_parse_route_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_route(text)


def test_first_matching_route_wins() -> None:
    routes = EdgeRoutes(
        [
            EdgeRoute("api", "shop.example", "/api"),
            EdgeRoute("web", "shop.example"),
            EdgeRoute("blog", "*.blog.example"),
            EdgeRoute("fallback"),
        ]
    )
    assert routes.match("shop.example", b"/api/cart").service == "api"
    assert routes.match("shop.example", b"/apiary").service == "api"  # a string prefix, as [[route]] match has
    assert routes.match("shop.example", b"/").service == "web"
    assert routes.match("www.blog.example", b"/").service == "blog"
    assert routes.match("a.b.blog.example", b"/").service == "blog"
    assert routes.match("blog.example", b"/").service == "fallback"  # *.blog.example is below it only
    assert routes.match("", b"/").service == "fallback"
    assert EdgeRoutes([EdgeRoute("web", "shop.example")]).match("other.example", b"/") is None
    assert routes.services == ("api", "web", "blog", "fallback")


def test_the_host_of_a_request() -> None:
    assert request_host_and_path(host(b"Shop.Example:8443", b"/a?b=1")) == ("shop.example", b"/a?b=1")
    assert request_host_and_path(host(b"shop.example.", b"/")) == ("shop.example", b"/")
    assert request_host_and_path(host(b"[::1]:80")) == ("::1", b"/")
    # The absolute form wins over Host (RFC 9112 3.2.2).
    assert request_host_and_path(host(b"other", b"https://shop.example/x?y")) == ("shop.example", b"/x?y")
    assert request_host_and_path(head(b"/")) == ("", b"/")  # HTTP/1.0 without Host
    assert request_host_and_path(host(b"a:b")) is None


# -- who the client is, and what the app is told ------------------------------------------------


def client(peer: str, trusted: tuple[str, ...] = (), scheme: bytes = b"https") -> EdgeClient:
    address = parse_ip(peer)
    assert address is not None
    return EdgeClient.of(address, scheme, TrustedNetworks(trusted))


def test_parse_ip_reads_what_peers_and_forwarders_write() -> None:
    assert parse_ip("203.0.113.9") == ipaddress.ip_address("203.0.113.9")
    assert parse_ip(" 203.0.113.9:5555 ") == ipaddress.ip_address("203.0.113.9")
    assert parse_ip("[2001:db8::1]:443") == ipaddress.ip_address("2001:db8::1")
    assert parse_ip("::ffff:192.0.2.1") == ipaddress.ip_address("192.0.2.1")  # v4-mapped is the v4 client
    assert parse_ip("unknown") is None


def test_an_untrusted_peers_forwarding_headers_are_replaced() -> None:
    request = host(
        b"shop.example",
        b"/",
        (b"X-Forwarded-For", b"6.6.6.6"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"evil.example"),
        (b"Forwarded", b"for=6.6.6.6"),
        (b"X-Real-IP", b"6.6.6.6"),
    )
    add, drop = forwarding_headers(client("203.0.113.9"), request, b"shop.example")
    assert add == [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"shop.example")]
    assert {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"} <= drop
    assert client("203.0.113.9").address(request) == ipaddress.ip_address("203.0.113.9")


def test_a_trusted_peers_chain_is_kept_and_extended() -> None:
    lb = client("10.0.0.5", ("10.0.0.0/8",), scheme=b"http")
    request = host(b"shop.example", b"/", (b"X-Forwarded-For", b"198.51.100.7, 10.0.0.9"), (b"X-Forwarded-Proto", b"https"))
    add, drop = forwarding_headers(lb, request, b"shop.example")
    assert add == [(b"x-forwarded-for", b"198.51.100.7, 10.0.0.9, 10.0.0.5"), (b"x-forwarded-host", b"shop.example")]
    assert drop == frozenset({b"x-forwarded-for"})  # its Proto (the client came over https) is kept
    # The client is the last address that is not one of ours, walking from the right.
    assert lb.address(request) == ipaddress.ip_address("198.51.100.7")
    assert lb.address(host(b"a")) == ipaddress.ip_address("10.0.0.5")  # nothing forwarded: the peer
    garbled = host(b"a", b"/", (b"X-Forwarded-For", b"198.51.100.7, unknown, 10.0.0.9"))
    assert lb.address(garbled) == ipaddress.ip_address("10.0.0.9")  # the hop that wrote "unknown"


def test_ipv6_clients_count_per_64() -> None:
    assert client_key(ipaddress.ip_address("2001:db8:1:2:3:4:5:6")) == "2001:db8:1:2::/64"
    assert client_key(ipaddress.ip_address("192.0.2.1")) == "192.0.2.1"


# -- limits -------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_connections_per_client() -> None:
    limits = ClientLimits(LimitSettings(connections=2))
    assert limits.connection_opened("a") and limits.connection_opened("a")
    assert not limits.connection_opened("a")  # a third is refused (and not counted)
    assert limits.connection_opened("b")
    limits.connection_closed("a")
    assert limits.connection_opened("a")
    for key in ("a", "a", "b"):
        limits.connection_closed(key)
    assert limits.tracked == 0  # nothing kept for clients with nothing open


def test_request_rate_per_client_with_retry_after() -> None:
    clock = Clock()
    limits = ClientLimits(LimitSettings(requests_per_second=2, burst=3), clock=clock)
    assert [limits.request("a") for _ in range(3)] == [None, None, None]
    wait = limits.request("a")
    assert wait == pytest.approx(0.5)
    assert retry_after(wait) == b"1"
    assert limits.request("b") is None  # another client has its own bucket
    clock.now += 0.5
    assert limits.request("a") is None
    assert limits.request("a") is not None
    assert ClientLimits(LimitSettings(requests_per_second=0)).request("a") is None  # no limit


def test_the_state_kept_per_client_is_bounded() -> None:
    clock = Clock()
    limits = ClientLimits(LimitSettings(requests_per_second=1, burst=1), max_clients=100, clock=clock)
    for i in range(10_000):
        limits.request(f"10.0.{i // 256}.{i % 256}")
    assert limits.tracked == 100
    # The most recent clients are the ones remembered: their empty buckets still refuse.
    assert limits.request("10.0.39.15") is not None
    assert MAX_TRACKED_CLIENTS <= 20_000


def test_default_burst_is_a_seconds_worth() -> None:
    assert LimitSettings(requests_per_second=10).bucket_size == 10
    assert LimitSettings(requests_per_second=0.5).bucket_size == 1


# -- the router of one connection ------------------------------------------------------------------


ENDPOINTS = {
    "web": (Endpoint("web", "10.0.0.1", 4143),),
    "api": (Endpoint("api", "10.0.0.2", 4143),),
    "grpc": (Endpoint("grpc", "10.0.0.3", 4143, protocol="grpc"),),
}


def edge_router(peer: str = "203.0.113.9", limits: LimitSettings = LimitSettings(), **kw: object) -> EdgeRouter:
    mesh = OutboundRouter(lambda s: ENDPOINTS.get(s, ()), Balancer(random.Random(1)), TD, 5.0)
    routes = EdgeRoutes([EdgeRoute("api", "shop.example", "/api"), EdgeRoute("web", "shop.example"), EdgeRoute("grpc", "rpc.example")])
    return EdgeRouter(routes, mesh, client(peer, **kw), ClientLimits(limits))  # type: ignore[arg-type]


def test_routes_to_each_service_with_forwarding_headers() -> None:
    router = edge_router()
    api = router.route(host(b"shop.example", b"/api/cart", (b"X-Forwarded-For", b"6.6.6.6")))
    assert isinstance(api, Forward) and api.peer_service == "api" and api.target == b"/api/cart"
    assert (b"x-forwarded-for", b"203.0.113.9") in api.add_headers
    assert b"x-forwarded-for" in api.drop_headers
    assert any(k == b"x-request-id" for k, _ in api.add_headers)
    web = router.route(host(b"shop.example", b"/"))
    assert isinstance(web, Forward) and web.peer_service == "web"


def test_an_unknown_host_is_404_no_route() -> None:
    decision = edge_router().route(host(b"nope.example", b"/x?secret=1"))
    assert isinstance(decision, Reject) and (decision.status, decision.reason) == (404, Reason.NO_ROUTE)
    assert "secret" not in decision.message
    answer = mesh_error_response(decision.failure(), keep_alive=True)
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"x-mesh-error: no-route\r\n" in answer


def test_connect_and_bad_hosts_are_refused() -> None:
    router = edge_router()
    connect = router.route(head(b"shop.example:443", (b"Host", b"shop.example:443"), method=b"CONNECT"))
    assert isinstance(connect, Reject) and connect.status == 405
    bad = router.route(host(b"a:b"))
    assert isinstance(bad, Reject) and bad.status == 400


def test_a_service_without_endpoints_is_503() -> None:
    mesh = OutboundRouter(lambda s: (), Balancer(random.Random(1)), TD, 5.0)
    router = EdgeRouter(EdgeRoutes([EdgeRoute("web")]), mesh, client("192.0.2.1"), ClientLimits(LimitSettings()))
    decision = router.route(host(b"any"))
    assert isinstance(decision, Reject) and (decision.status, decision.reason) == (503, Reason.NO_ENDPOINTS)


def test_over_the_rate_a_client_gets_429_with_retry_after() -> None:
    router = edge_router(limits=LimitSettings(requests_per_second=1, burst=2))
    assert isinstance(router.route(host(b"shop.example")), Forward)
    assert isinstance(router.route(host(b"shop.example")), Forward)
    refused = router.route(host(b"shop.example"))
    assert isinstance(refused, Reject) and (refused.status, refused.reason) == (429, Reason.RATE_LIMITED)
    answer = mesh_error_response(refused.failure(), keep_alive=True)
    assert b"retry-after: 1\r\n" in answer and b"x-mesh-error: rate-limited\r\n" in answer
    # Behind a trusted proxy, each forwarded client has its own bucket.
    lb = edge_router(peer="10.0.0.5", limits=LimitSettings(requests_per_second=1, burst=1), trusted=("10.0.0.0/8",))
    assert isinstance(lb.route(host(b"shop.example", b"/", (b"X-Forwarded-For", b"198.51.100.1"))), Forward)
    assert isinstance(lb.route(host(b"shop.example", b"/", (b"X-Forwarded-For", b"198.51.100.2"))), Forward)
    assert isinstance(lb.route(host(b"shop.example", b"/", (b"X-Forwarded-For", b"198.51.100.1"))), Reject)


def test_http2_goes_on_as_http1_unless_grpc_or_declared() -> None:
    router = edge_router()
    h2 = router.route(host(b"shop.example", b"/", version=b"2.0"))
    assert isinstance(h2, Forward) and h2.downgrade
    h1 = router.route(host(b"shop.example", b"/"))
    assert isinstance(h1, Forward) and not h1.downgrade
    grpc_call = router.route(host(b"shop.example", b"/pkg.Svc/Call", (b"content-type", b"application/grpc"), version=b"2.0"))
    assert isinstance(grpc_call, Forward) and not grpc_call.downgrade
    declared = router.route(host(b"rpc.example", b"/", version=b"2.0"))
    assert isinstance(declared, Forward) and not declared.downgrade  # its endpoints declare grpc


# -- the redirect listener ----------------------------------------------------------------------


def test_redirect_location() -> None:
    assert redirect_location(host(b"shop.example:80", b"/a?b=1"), 443) == b"https://shop.example/a?b=1"
    assert redirect_location(host(b"shop.example", b"/"), 8443) == b"https://shop.example:8443/"
    assert redirect_location(host(b"[::1]:80", b"/"), 443) == b"https://[::1]/"
    assert redirect_location(host(b"192.0.2.1", b"/x"), 443) == b"https://192.0.2.1/x"
    assert redirect_location(host(b"x", b"http://shop.example/p"), 443) == b"https://shop.example/p"
    assert redirect_location(head(b"/"), 443) is None  # no host to send the client to
    assert redirect_location(host(b"shop.example", b"*", method=b"OPTIONS"), 443) is None
    assert redirect_location(host(b"sh<op.example"), 443) is None
