from __future__ import annotations

import pytest

from mesh.discovery import Endpoint, format_address, is_valid_service_name, parse_address
from mesh.errors import DiscoveryError, MeshError


def test_endpoint_basics() -> None:
    endpoint = Endpoint("web", "127.0.0.1", 8443, labels=(("zone", "a"), ("version", "v1")))
    assert endpoint.address == "127.0.0.1:8443"
    assert endpoint.labels == (("version", "v1"), ("zone", "a"))  # sorted
    assert endpoint.label("version") == "v1"
    assert endpoint.label("missing") is None
    assert endpoint.labels_dict == {"version": "v1", "zone": "a"}
    assert endpoint.identity is None
    assert endpoint.admin_port is None
    assert endpoint.expected_identity("mesh.local") == "spiffe://mesh.local/svc/web"
    explicit = Endpoint("web", "h", 1, identity="spiffe://other/svc/x")
    assert explicit.expected_identity("mesh.local") == "spiffe://other/svc/x"


def test_endpoint_labels_order_and_mapping_do_not_matter() -> None:
    a = Endpoint("web", "h", 1, labels=(("b", "2"), ("a", "1")))
    b = Endpoint("web", "h", 1, labels={"a": "1", "b": "2"})  # type: ignore[arg-type]
    assert a == b
    assert hash(a) == hash(b)


def test_endpoint_is_frozen_with_slots() -> None:
    endpoint = Endpoint("web", "h", 1)
    with pytest.raises(AttributeError):
        endpoint.port = 2  # type: ignore[misc]
    assert not hasattr(endpoint, "__dict__")


def test_ipv6_address_in_brackets() -> None:
    assert Endpoint("web", "::1", 8443).address == "[::1]:8443"
    assert format_address("fe80::1%eth0", 80) == "[fe80::1%eth0]:80"
    assert format_address("localhost", 80) == "localhost:80"


@pytest.mark.parametrize("port", [0, 65536, -1, True, "80"])
def test_endpoint_rejects_bad_ports(port: object) -> None:
    with pytest.raises(ValueError, match="port must be an integer from 1 to 65535"):
        Endpoint("web", "h", port)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="admin_port must be"):
        Endpoint("web", "h", 1, admin_port=port)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:80", ("::1", 80)),
        ("[2001:db8::1]:65535", ("2001:db8::1", 65535)),
        ("[fe80::1%eth0]:1", ("fe80::1%eth0", 1)),
        ("localhost:80", ("localhost", 80)),
        ("web.mesh:8080", ("web.mesh", 8080)),
        ("my_host-1.example.com:443", ("my_host-1.example.com", 443)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid address '': the address is empty"),
        (" a:1", "invalid address ' a:1': blanks around the address"),
        ("localhost", "invalid address 'localhost': missing port"),
        ("localhost:", "invalid address 'localhost:': missing port"),
        (":80", "invalid address ':80': missing host"),
        ("::1:80", "invalid address '::1:80': an IPv6 address needs brackets, e.g. [::1]:8443"),
        ("[::1]", "invalid address '[::1]': missing port after ']'"),
        ("[::1:80", "invalid address '[::1:80': '[' without ']'"),
        ("[web]:80", "invalid address '[web]:80': 'web' in brackets is not an IPv6 address"),
        ("host:http", "invalid address 'host:http': port 'http' is not a number"),
        ("host:0", "invalid address 'host:0': port 0 is out of range 1-65535"),
        ("host:65536", "invalid address 'host:65536': port 65536 is out of range 1-65535"),
        ("host:-1", "invalid address 'host:-1': port '-1' is not a number"),
        ("host:٣", "invalid address 'host:٣': port '٣' is not a number"),
        ("256.1.1.1:80", "invalid address '256.1.1.1:80': '256.1.1.1' is not an IPv4 address"),
        ("a b:80", "invalid address 'a b:80': 'a b' is not a host name or IP address"),
        ("http://x:80", "invalid address 'http://x:80': a URL is not an address; drop the scheme"),
    ],
)
def test_parse_address_errors(text: str, message: str) -> None:
    with pytest.raises(DiscoveryError) as info:
        parse_address(text)
    assert str(info.value) == message
    assert (
        info.value.hint
        == "write it as host:port, e.g. 127.0.0.1:8443, localhost:8443 or [::1]:8443"
    )
    assert isinstance(info.value, MeshError)


@pytest.mark.parametrize("name", ["web", "a", "reviews-v2", "0", "a" * 63, "9lives"])
def test_valid_service_names(name: str) -> None:
    assert is_valid_service_name(name)


@pytest.mark.parametrize("name", ["", "Web", "-web", "web-", "a" * 64, "web.mesh", "web_1", "wéb"])
def test_invalid_service_names(name: str) -> None:
    assert not is_valid_service_name(name)
