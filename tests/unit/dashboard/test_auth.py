"""The dashboard's gate: Host check against DNS rebinding, then the per-run token (URL once, then cookie)."""

from __future__ import annotations

import pytest

from mesh.dashboard._auth import Allow, Gate, Login, Refuse, new_token

TOKEN = "s3cret-token_value"


@pytest.fixture
def gate() -> Gate:
    return Gate(TOKEN, 50750)


def test_url_carries_the_token_and_loopback(gate: Gate) -> None:
    assert gate.url() == f"http://127.0.0.1:50750/?token={TOKEN}"


def test_tokens_are_random_and_long() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50 and all(len(t) >= 32 for t in tokens)


def test_token_in_url_sets_an_httponly_strict_cookie_and_drops_it_from_the_url(gate: Gate) -> None:
    access = gate.decide("127.0.0.1:50750", f"/?token={TOKEN}", None)
    assert isinstance(access, Login)
    assert access.location == "/"
    assert access.set_cookie.startswith(f"mesh_dashboard_50750={TOKEN};")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert attribute in access.set_cookie
    # Other parameters stay.
    assert gate.decide("127.0.0.1:50750", f"/?a=1&token={TOKEN}&b=2", None) == Login("/?a=1&b=2", access.set_cookie)


def test_cookie_lets_in(gate: Gate) -> None:
    cookie = f"other=1; mesh_dashboard_50750={TOKEN}; theme=dark"
    assert gate.decide("127.0.0.1:50750", "/api/events", cookie) == Allow()
    assert gate.decide("localhost:50750", "/api/state", f"mesh_dashboard_50750={TOKEN}") == Allow()


def test_cookie_parsing_survives_cookies_of_other_local_apps(gate: Gate) -> None:
    # http.cookies gives up on the first cookie it dislikes; ours must still be found.
    cookie = f'weird=a"b; x=[1,2]; mesh_dashboard_50750="{TOKEN}"'
    assert gate.decide("127.0.0.1:50750", "/", cookie) == Allow()


@pytest.mark.parametrize(
    ("target", "cookie", "status"),
    [
        ("/", None, 401),
        ("/api/events", None, 401),
        ("/api/tap?service=web", None, 401),
        ("/api/state", "mesh_dashboard_50750=wrong", 403),
        ("/api/state", f"mesh_dashboard_50751={TOKEN}", 401),  # another dashboard's cookie (another port)
        ("/?token=wrong", None, 403),
        (f"/?token={TOKEN}x", None, 403),
        ("/?token=", None, 403),
        ("/static/dashboard.js", "", 401),
    ],
)
def test_refused_without_the_right_token(gate: Gate, target: str, cookie: str | None, status: int) -> None:
    access = gate.decide("127.0.0.1:50750", target, cookie)
    assert isinstance(access, Refuse) and access.status == status
    assert "mesh dashboard" in access.message  # says where the right URL is


@pytest.mark.parametrize(
    "host", [None, "", "evil.example", "evil.example:50750", "127.0.0.1", "127.0.0.1:80", "localhost:50751", "[::1]:50750", "127.0.0.2:50750"]
)
def test_foreign_host_is_refused_even_with_the_token(gate: Gate, host: str | None) -> None:
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host: evil.example.
    access = gate.decide(host, f"/?token={TOKEN}", f"mesh_dashboard_50750={TOKEN}")
    assert isinstance(access, Refuse) and access.status == 403 and "rebinding" in access.message


def test_host_is_case_insensitive(gate: Gate) -> None:
    assert gate.decide("LOCALHOST:50750", "/", f"mesh_dashboard_50750={TOKEN}") == Allow()
