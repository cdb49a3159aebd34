"""``reviews``: what reviewers wrote about a book, in three versions (bookinfo's reviews service).

- v1 does not call ``ratings`` and shows no stars;
- v2 calls ``ratings`` and shows black stars;
- v3 calls ``ratings`` and shows red stars.

Like bookinfo, v2 waits up to 10 s for ratings and v3 only 2.5 s, so a delay injected
into ratings shows up differently per version. When ratings fails, each review carries
``"rating": {"error": "Ratings service is currently unavailable"}`` instead of stars.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from mesh.demo._client import Reply, UpstreamError, client
from mesh.demo._server import Request, Response, json_response, not_found, only_get, serve

NAME = "reviews"
VERSIONS = ("v1", "v2", "v3")
STAR_COLORS = {"v2": "black", "v3": "red"}
RATINGS_TIMEOUT = {"v2": 10.0, "v3": 2.5}
RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"
REVIEWS = (
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
)
_REVIEWS = re.compile(r"/reviews/(\d+)")


def fetch_ratings(request: Request, book_id: str, version: str) -> tuple[dict[str, int] | None, str]:
    """Stars per reviewer from the ratings service, or (None, why it failed)."""
    try:
        reply: Reply = client().call(
            "ratings",
            f"/ratings/{book_id}",
            request.trace_headers(),
            timeout=RATINGS_TIMEOUT[version],
        )
    except UpstreamError as exc:
        return None, f"ratings: {exc.summary}"
    if not reply.ok:
        return None, f"ratings: {reply.summary}"
    try:
        ratings = reply.json()["ratings"]
        return {str(k): int(v) for k, v in ratings.items()}, ""
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, "ratings: unexpected response body"


def reviews_body(book_id: str, version: str, podname: str, ratings: dict[str, int] | None) -> dict[str, Any]:
    reviews: list[dict[str, Any]] = []
    for reviewer, text in REVIEWS:
        review: dict[str, Any] = {"reviewer": reviewer, "text": text}
        if version in STAR_COLORS:
            stars = ratings.get(reviewer) if ratings is not None else None
            if stars is None:
                review["rating"] = {"error": RATINGS_UNAVAILABLE}
            else:
                review["rating"] = {"stars": stars, "color": STAR_COLORS[version]}
        reviews.append(review)
    return {
        "id": book_id,
        "podname": podname,
        "version": version,
        "clustername": "null",
        "reviews": reviews,
    }


def make_handler(version: str, podname: str) -> Callable[[Request], Response]:
    def handle(request: Request) -> Response:
        refused = only_get(request)
        if refused:
            return refused
        if request.path == "/health":
            return json_response({"status": "Reviews is healthy", "version": version})
        match = _REVIEWS.fullmatch(request.path)
        if match:
            book_id = match.group(1)
            ratings, note = (None, "")
            if version in STAR_COLORS:
                ratings, note = fetch_ratings(request, book_id, version)
            return json_response(reviews_body(book_id, version, podname, ratings), note=note)
        if request.path.startswith("/reviews/"):
            return json_response({"error": "please provide a numeric product id"}, 400)
        return not_found(request)

    return handle


def main(port: int | None = None, version: str = "v1") -> int:
    podname = f"reviews-{version}-{os.getpid()}"
    return serve(f"{NAME}-{version}", make_handler(version, podname), port)
