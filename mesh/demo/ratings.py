"""``ratings``: the stars each reviewer gave a book, as JSON (bookinfo's ratings service)."""

from __future__ import annotations

import re

from mesh.demo._server import Request, Response, json_response, not_found, only_get, serve

NAME = "ratings"
_RATINGS = re.compile(r"/ratings/(\d+)")
RATINGS = {"Reviewer1": 5, "Reviewer2": 4}


def handle(request: Request) -> Response:
    refused = only_get(request)
    if refused:
        return refused
    if request.path == "/health":
        return json_response({"status": "Ratings is healthy"})
    match = _RATINGS.fullmatch(request.path)
    if match:
        return json_response({"id": int(match.group(1)), "ratings": dict(RATINGS)})
    if request.path.startswith("/ratings/"):
        return json_response({"error": "please provide a numeric product id"}, 400)
    return not_found(request)


def main(port: int | None = None, version: str = "v1") -> int:
    return serve(NAME, handle, port)
