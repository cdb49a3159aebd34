"""`[[gateway]]` with TLS, routes, forwarding trust and client limits: parsing, errors, paths, and the
`mesh gateway` command line `mesh up` makes of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mesh.config import (
    ClientLimitsConfig,
    GatewayConfig,
    GatewayRoute,
    GatewayTLS,
    load_config,
    load_config_text,
    parse_config,
)
from mesh.home import MeshHome
from mesh.inject._fleet import units_from_config

from .conftest import error_of, errors_of

FULL = """\
[[gateway]]
listen = "0.0.0.0:443"
to = "web"
routes = [
  { host = "Shop.Example", path_prefix = "/api", to = "api" },
  { host = "*.blog.example", to = "blog" },
  { host = "*", path_prefix = "/static", to = "cdn" },
]
tls = [ { cert = "certs/shop.pem", key = "certs/shop.key" }, { cert = "/etc/blog.pem", key = "/etc/blog.key" } ]
http_redirect = "0.0.0.0:80"
trust_forwarded = ["10.0.0.0/8", "2001:db8::/32"]
client_limits = { connections = 50, requests_per_second = 20, burst = 40 }
"""


def test_every_key_parses() -> None:
    gateway = load_config_text(FULL, "mesh.toml").gateways[0]
    assert gateway == GatewayConfig(
        listen="0.0.0.0:443",
        to="web",
        routes=(
            GatewayRoute(to="api", host="shop.example", path_prefix="/api"),  # host names are case-insensitive
            GatewayRoute(to="blog", host="*.blog.example"),
            GatewayRoute(to="cdn", path_prefix="/static"),  # "*" is any host
        ),
        tls=(GatewayTLS("certs/shop.pem", "certs/shop.key"), GatewayTLS("/etc/blog.pem", "/etc/blog.key")),
        http_redirect="0.0.0.0:80",
        trust_forwarded=("10.0.0.0/8", "2001:db8::/32"),
        client_limits=ClientLimitsConfig(50, 20.0, 40),
    )
    # As data (what travels to the controller) it reads back the same.
    config = load_config_text(FULL, "mesh.toml")
    assert parse_config(config.to_dict()) == config


def test_a_gateway_of_listen_and_to_reads_as_it_was_written() -> None:
    config = load_config_text('[[gateway]]\nlisten = "127.0.0.1:9080"\nto = "web"\n', "mesh.toml")
    assert config.to_dict()["gateway"] == [{"listen": "127.0.0.1:9080", "to": "web"}]


def test_routes_alone_are_enough() -> None:
    config = load_config_text('[[gateway]]\nlisten = "127.0.0.1:0"\nroutes = [ { host = "a.example", to = "a" } ]\n')
    assert config.gateways[0].to is None


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        (
            'listen = "127.0.0.1:0"\nroutes = [ { host = "shop example", to = "a" } ]',
            'gateway[0].routes[0].host: expected a host name like "shop.example", "*.shop.example" (one label or more), '
            'or "*" (any host), found "shop example"',
        ),
        (
            'listen = "127.0.0.1:0"\nroutes = [ { host = "a.example", path_prefix = "api", to = "a" } ]',
            'gateway[0].routes[0].path_prefix: expected a path starting with "/", found "api"',
        ),
        (
            'listen = "127.0.0.1:0"\nroutes = [ { host = "a.example" } ]',
            "gateway[0].routes[0].to: expected a service name (lowercase letters, digits and '-', 1–63 characters, "
            "starting and ending with a letter or digit), found nothing",
        ),
        ('listen = "127.0.0.1:0"\nroutes = []', "gateway[0].routes: expected a list of { host, path_prefix, to } tables, found []"),
        (
            'listen = "127.0.0.1:0"\nto = "a"\ntls = [ { cert = "a.pem" } ]',
            "gateway[0].tls[0].key: expected a path to the PEM key file of that certificate, found nothing",
        ),
        (
            'listen = "127.0.0.1:0"\nto = "a"\nhttp_redirect = "127.0.0.1:80"',
            "gateway[0].tls: expected certificates to serve HTTPS with (http_redirect sends clients to HTTPS), found nothing",
        ),
        (
            'listen = "127.0.0.1:443"\nto = "a"\ntls = [ { cert = "a", key = "b" } ]\nhttp_redirect = "127.0.0.1:443"',
            'gateway[0].http_redirect: expected an address other than listen, found "127.0.0.1:443"',
        ),
        (
            'listen = "127.0.0.1:0"\nto = "a"\ntrust_forwarded = ["10.0.0.1/8"]',
            'gateway[0].trust_forwarded[0]: expected a network like "10.0.0.0/8", found "10.0.0.1/8"',
        ),
        (
            'listen = "127.0.0.1:0"\nto = "a"\nclient_limits = { connections = -1 }',
            "gateway[0].client_limits.connections: expected an integer ≥ 0, found -1",
        ),
        (
            'listen = "127.0.0.1:0"\nto = "a"\nclient_limits = { rps = 1 }',
            "gateway[0].client_limits.rps: unknown key (known keys: connections, requests_per_second, burst)",
        ),
    ],
)
def test_bad_gateway_keys_say_where_and_what(toml: str, line: str) -> None:
    assert error_of("[[gateway]]\n" + toml) == f"mesh.toml: {line}"


def test_a_redirect_address_may_not_be_another_gateways_listener() -> None:
    text = (
        '[[gateway]]\nlisten = "127.0.0.1:80"\nto = "a"\n'
        '[[gateway]]\nlisten = "127.0.0.1:443"\nto = "b"\ntls = [ { cert = "c", key = "k" } ]\nhttp_redirect = "127.0.0.1:80"\n'
    )
    assert errors_of(text) == [
        'mesh.toml: gateway[1].http_redirect: expected an address no other gateway listens on, '
        'found "127.0.0.1:80" again (first at gateway[0])'
    ]


def test_tls_files_are_taken_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "mesh.toml"
    path.write_text(FULL)
    gateway = load_config(path).gateways[0]
    assert gateway.tls[0] == GatewayTLS(str(tmp_path / "conf" / "certs/shop.pem"), str(tmp_path / "conf" / "certs/shop.key"))
    assert gateway.tls[1] == GatewayTLS("/etc/blog.pem", "/etc/blog.key")  # absolute paths stay
    assert all(os.path.isabs(p.cert) for p in gateway.tls)


def test_mesh_up_runs_the_gateway_with_every_key(tmp_path: Path) -> None:
    config = load_config_text(FULL, "mesh.toml")
    (unit,) = units_from_config(MeshHome(tmp_path / "home"), config)
    argv = list(unit.argv[unit.argv.index("gateway") :])
    assert argv == [
        "gateway", "--listen", "0.0.0.0:443", "--to", "web",
        "--route", "shop.example/api=api", "--route", "*.blog.example=blog", "--route", "*/static=cdn",
        "--tls-cert", "certs/shop.pem", "--tls-key", "certs/shop.key",
        "--tls-cert", "/etc/blog.pem", "--tls-key", "/etc/blog.key",
        "--http-redirect", "0.0.0.0:80",
        "--trust-forwarded", "10.0.0.0/8", "--trust-forwarded", "2001:db8::/32",
        "--client-connections", "50", "--client-rps", "20", "--client-burst", "40",
    ]  # fmt: skip
