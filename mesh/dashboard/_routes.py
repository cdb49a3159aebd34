"""What each path of the dashboard is (pure), and the files it serves.

    GET /                   the page (static/index.html)
    GET /static/NAME        a file of mesh/dashboard/static/ (only names that exist there)
    GET /api/state          every topic as one JSON object (what the page gets first)
    GET /api/events         server-sent events: each topic whenever it changes
    GET /api/tap?FILTER     server-sent events: requests, live, through the controller's /v1/tap

A later view (traces, say) is a topic or a stream here and a view in
static/dashboard.js; nothing else has to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    name: str
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Route:
    kind: str  # page | static | state | events | tap | not-found | method-not-allowed
    name: str = ""  # the static file, for page and static


def load_static() -> dict[str, StaticFile]:
    """Every file of the package's static/ directory, read once (they are small)."""
    files: dict[str, StaticFile] = {}
    for entry in resources.files("mesh.dashboard").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in CONTENT_TYPES:
            files[entry.name] = StaticFile(entry.name, entry.read_bytes(), CONTENT_TYPES[suffix])
    if "index.html" not in files:
        raise FileNotFoundError("mesh/dashboard/static/index.html is missing from this install of mesh")
    return files


API = {"/api/state": "state", "/api/events": "events", "/api/tap": "tap"}


def resolve(method: str, path: str, static: dict[str, StaticFile]) -> Route:
    """The route of ``path`` (without its query). Only GET and HEAD exist: the dashboard changes nothing."""
    if path == "/" or path == "/index.html":
        route = Route("page", "index.html")
    elif path.startswith("/static/") and path[len("/static/") :] in static:
        route = Route("static", path[len("/static/") :])
    elif path in API:
        route = Route(API[path])
    else:
        return Route("not-found")
    if method not in ("GET", "HEAD"):
        return Route("method-not-allowed")
    return route
