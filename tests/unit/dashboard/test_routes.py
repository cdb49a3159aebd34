"""Paths of the dashboard, and the files it ships."""

from __future__ import annotations

import re

import pytest

from mesh.dashboard._routes import Route, load_static, resolve


@pytest.fixture(scope="module")
def static() -> dict:
    return load_static()


def test_the_page_and_its_files_ship_in_the_package(static: dict) -> None:
    assert {"index.html", "dashboard.js", "dashboard.css", "dom.js", "graph.js", "chart.js", "icon.svg"} <= set(static)
    assert static["index.html"].content_type == "text/html; charset=utf-8"
    assert static["dashboard.js"].content_type.startswith("text/javascript")
    assert static["icon.svg"].content_type == "image/svg+xml"


def test_nothing_is_loaded_from_elsewhere(static: dict) -> None:
    # No CDN, no font service, no absolute URL in what the page loads (the SVG namespace is a name, not a request).
    for name, file in static.items():
        text = file.body.decode()
        for url in re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"')]*", text):
            assert url == "http://www.w3.org/2000/svg", f"{name} refers to {url}"
        assert "@import" not in text and "<style" not in text, name
    # Module imports are relative: served from /static/ like the rest.
    for name in ("dashboard.js", "graph.js", "chart.js"):
        assert all(path.startswith("./") for path in re.findall(r'from "([^"]+)"', static[name].body.decode()))


def test_inline_script_and_style_are_absent(static: dict) -> None:
    # The Content-Security-Policy allows only files of this origin: inline code would be refused (and logged).
    html = static["index.html"].body.decode()
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="/static/dashboard.js">']
    assert " style=" not in html and "onclick=" not in html


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("GET", "/", Route("page", "index.html")),
        ("HEAD", "/", Route("page", "index.html")),
        ("GET", "/index.html", Route("page", "index.html")),
        ("GET", "/static/dashboard.js", Route("static", "dashboard.js")),
        ("GET", "/api/state", Route("state")),
        ("GET", "/api/events", Route("events")),
        ("GET", "/api/tap", Route("tap")),
        ("POST", "/api/state", Route("method-not-allowed")),
        ("DELETE", "/", Route("method-not-allowed")),
        ("GET", "/static/missing.js", Route("not-found")),
        ("GET", "/static/../__init__.py", Route("not-found")),
        ("GET", "/static/", Route("not-found")),
        ("GET", "/static/%2e%2e/_server.py", Route("not-found")),
        ("GET", "/api/events/", Route("not-found")),
        ("GET", "/favicon.ico", Route("not-found")),
    ],
)
def test_resolve(static: dict, method: str, path: str, route: Route) -> None:
    assert resolve(method, path, static) == route
