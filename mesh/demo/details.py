"""``details``: facts about a book, as JSON (bookinfo's details service)."""

from __future__ import annotations

import re

from mesh.demo._server import Request, Response, json_response, not_found, only_get, serve

NAME = "details"
_DETAILS = re.compile(r"/details/(\d+)")


def book_details(book_id: int) -> dict[str, object]:
    return {
        "id": book_id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }


def handle(request: Request) -> Response:
    refused = only_get(request)
    if refused:
        return refused
    if request.path == "/health":
        return json_response({"status": "Details is healthy"})
    match = _DETAILS.fullmatch(request.path)
    if match:
        return json_response(book_details(int(match.group(1))))
    if request.path.startswith("/details/"):
        return json_response({"error": "please provide a numeric product id"}, 400)
    return not_found(request)


def main(port: int | None = None, version: str = "v1") -> int:
    return serve(NAME, handle, port)
