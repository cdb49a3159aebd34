from __future__ import annotations

from pathlib import Path

import pytest

from mesh.discovery import Endpoint, parse_endpoints_file, parse_endpoints_text
from mesh.errors import DiscoveryError

VALID = """\
[[endpoint]]
service = "web"
address = "127.0.0.1:8443"
labels = { version = "v1" }
identity = "spiffe://mesh.local/svc/web"

[[endpoint]]
service = "reviews"
address = "[::1]:9443"
labels = { version = "v2", zone = "rack-1" }
admin_port = 4191

[[endpoint]]
service = "web"
address = "localhost:8444"
"""

SERVICE_RULE = (
    "a service name (lowercase letters, digits and '-'; 1 to 63 characters; "
    "starting and ending with a letter or digit)"
)


def errors_of(text: str) -> list[str]:
    with pytest.raises(DiscoveryError) as info:
        parse_endpoints_text(text, "endpoints.toml")
    assert info.value.hint == "the endpoints file format is described in docs/discovery.md"
    return str(info.value).splitlines()


def test_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.toml"
    path.write_text(VALID)
    assert parse_endpoints_file(path) == {
        "web": (
            Endpoint("web", "127.0.0.1", 8443, "spiffe://mesh.local/svc/web", (("version", "v1"),)),
            Endpoint("web", "localhost", 8444),
        ),
        "reviews": (
            Endpoint("reviews", "::1", 9443, None, (("version", "v2"), ("zone", "rack-1")), 4191),
        ),
    }


def test_empty_file_has_no_endpoints() -> None:
    assert parse_endpoints_text("") == {}
    assert parse_endpoints_text("# nothing yet\n") == {}


def test_inline_array_of_tables_is_accepted() -> None:
    text = 'endpoint = [ { service = "web", address = "127.0.0.1:1" } ]'
    assert parse_endpoints_text(text) == {"web": (Endpoint("web", "127.0.0.1", 1),)}


def test_missing_keys() -> None:
    assert errors_of("[[endpoint]]\n") == [
        f"endpoints.toml: endpoint[0].service: expected {SERVICE_RULE}, found nothing (the key is missing)",
        (
            "endpoints.toml: endpoint[0].address: expected host:port, e.g. 127.0.0.1:8443, localhost:8443 "
            "or [::1]:8443, found nothing (the key is missing)"
        ),
    ]


def test_every_problem_is_reported_one_line_each() -> None:
    text = """\
[[endpoint]]
service = "web"
address = "127.0.0.1:8443"

[[endpoint]]
service = "Web"
address = "::1:8443"
weight = 3

[[endpoint]]
service = "api"
address = "127.0.0.1:0"
labels = { version = 1, "bad key" = "x", ok = "-v" }
identity = "api"
admin_port = true
"""
    assert errors_of(text) == [
        (
            "endpoints.toml: endpoint[1].weight: expected one of the keys address, admin_port, identity, "
            "labels, protocol, service, found the unknown key weight"
        ),
        f'endpoints.toml: endpoint[1].service: expected {SERVICE_RULE}, found "Web"',
        (
            'endpoints.toml: endpoint[1].address: expected host:port, found "::1:8443" '
            "(an IPv6 address needs brackets, e.g. [::1]:8443)"
        ),
        (
            'endpoints.toml: endpoint[2].address: expected host:port, found "127.0.0.1:0" '
            "(port 0 is out of range 1-65535)"
        ),
        (
            "endpoints.toml: endpoint[2].labels.version: expected a label value string (letters, digits, "
            "'-', '_' and '.'; at most 63 characters; starting and ending with a letter or digit), "
            "found the integer 1"
        ),
        (
            'endpoints.toml: endpoint[2].labels."bad key": expected a label name (letters, digits, '
            "'-', '_' and '.'; 1 to 63 characters; starting and ending with a letter or digit), "
            'found "bad key"'
        ),
        (
            "endpoints.toml: endpoint[2].labels.ok: expected a label value string (letters, digits, "
            "'-', '_' and '.'; at most 63 characters; starting and ending with a letter or digit), "
            'found "-v"'
        ),
        (
            "endpoints.toml: endpoint[2].identity: expected a SPIFFE id like spiffe://mesh.local/svc/web, "
            'found "api"'
        ),
        (
            "endpoints.toml: endpoint[2].admin_port: expected a port number from 1 to 65535, "
            "found the boolean true"
        ),
    ]


def test_unknown_top_level_keys_and_wrong_shapes() -> None:
    assert errors_of('endpoints = []\n"odd key" = 1\n') == [
        "endpoints.toml: endpoints: expected only [[endpoint]] tables, found the unknown key endpoints",
        'endpoints.toml: "odd key": expected only [[endpoint]] tables, found the unknown key "odd key"',
    ]
    assert errors_of('endpoint = "web"\n') == [
        'endpoints.toml: endpoint: expected [[endpoint]] tables, found "web"',
    ]
    assert errors_of('[endpoint]\nservice = "web"\n') == [
        "endpoints.toml: endpoint: expected [[endpoint]] tables, found a table",
    ]
    assert errors_of('[[endpoint]]\nservice = "web"\naddress = "h:1"\nlabels = "v1"\n') == [
        (
            'endpoints.toml: endpoint[0].labels: expected a table of strings, e.g. { version = "v1" }, '
            'found "v1"'
        ),
    ]
    assert errors_of('[[endpoint]]\nservice = 7\naddress = ["h:1"]\n') == [
        f"endpoints.toml: endpoint[0].service: expected {SERVICE_RULE}, found the integer 7",
        (
            "endpoints.toml: endpoint[0].address: expected host:port, e.g. 127.0.0.1:8443, "
            "localhost:8443 or [::1]:8443, found an array"
        ),
    ]


def test_duplicate_address_in_one_service() -> None:
    text = """\
[[endpoint]]
service = "web"
address = "[::1]:80"

[[endpoint]]
service = "api"
address = "[::1]:80"

[[endpoint]]
service = "web"
address = "[0::1]:80"
"""
    assert errors_of(text) == [
        (
            "endpoints.toml: endpoint[2].address: expected each address once per service, "
            'found "[0::1]:80" again for web (first at endpoint[0])'
        ),
    ]


def test_invalid_toml() -> None:
    [line] = errors_of('[[endpoint]]\nservice = "web\n')
    assert line.startswith("endpoints.toml: invalid TOML: ")
    assert "line 2" in line


def test_missing_unreadable_and_binary_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(DiscoveryError) as info:
        parse_endpoints_file(missing)
    assert str(info.value) == f"{missing}: endpoints file not found"
    assert (
        info.value.hint == "create it; the endpoints file format is described in docs/discovery.md"
    )

    with pytest.raises(DiscoveryError) as info:
        parse_endpoints_file(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, expected an endpoints file"

    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(DiscoveryError) as info:
        parse_endpoints_file(binary)
    assert str(info.value) == f"{binary}: expected UTF-8 text, found a byte that is not (offset 0)"
