"""``productpage``: the page a user sees; calls ``details`` and ``reviews`` (bookinfo's front end).

``GET /`` and ``GET /productpage`` render one self-contained HTML page (inline CSS, no
external assets). Which ``reviews`` version answered is visible on it: v1 no stars,
v2 black stars, v3 red stars, and a small ``reviews-vN`` label. A failed upstream call
(non-2xx, 3 s timeout, connection error) becomes a message in its section, e.g.
``Error fetching product reviews: 503 no-endpoints`` — the page itself is still a 200.

Signing in (``/login?user=jason``) sets a cookie; the page then sends ``end-user: jason``
to its upstreams, for header-based routing as in the bookinfo tutorials.
"""

from __future__ import annotations

import html
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from mesh.demo._client import Reply, UpstreamError, client
from mesh.demo._server import (
    Request,
    Response,
    html_response,
    json_response,
    not_found,
    only_get,
    serve,
)

NAME = "productpage"
TIMEOUT = 3.0
PRODUCTS: list[dict[str, Any]] = [
    {
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": (
            "<b>Summary:</b> The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. "
            "It is his shortest and one of his most farcical comedies, with a major part of the "
            "humour coming from slapstick and mistaken identity, in addition to puns and word play."
        ),
    }
]
_PRODUCT_API = re.compile(r"/api/v1/products/(\d+)(?:/(reviews|ratings))?")
_USER = re.compile(r"[A-Za-z0-9_.@-]{1,64}")

# Upstream calls of one page run side by side (details and reviews): module-level, bounded.
_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="upstream")


class Fetched:
    """The outcome of one upstream call: parsed JSON, or an error message for the page."""

    def __init__(self, what: str, data: Any = None, error: str = "", status: int = 200) -> None:
        self.what = what
        self.data = data
        self.error = error
        self.status = status

    @property
    def message(self) -> str:
        return f"Error fetching product {self.what}: {self.error}"


def fetch(service: str, path: str, what: str, headers: dict[str, str]) -> Fetched:
    try:
        reply: Reply = client().call(service, path, headers, timeout=TIMEOUT)
    except UpstreamError as exc:
        status = 504 if exc.summary.startswith("timed out") else 502
        return Fetched(what, error=exc.summary, status=status)
    if not reply.ok:
        return Fetched(what, error=reply.summary, status=reply.status)
    try:
        return Fetched(what, data=reply.json())
    except ValueError:
        return Fetched(what, error=f"{service} sent a body that is not JSON", status=502)


def outgoing_headers(request: Request) -> dict[str, str]:
    headers = request.trace_headers()
    user = current_user(request)
    if user and "end-user" not in headers:
        headers["end-user"] = user
    return headers


def current_user(request: Request) -> str | None:
    user = request.cookie("user")
    return user if user and _USER.fullmatch(user) else None


# -- HTML ----------------------------------------------------------------------------

_CSS = """
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#f4f5f7}
header{background:#2b3a55;color:#fff;padding:.7em 1.5em;display:flex;justify-content:space-between;align-items:center}
header a{color:#cfe0ff}
header form{margin:0}
header input{padding:.2em .4em;width:8em}
main{max-width:960px;margin:1.5em auto;padding:0 1em}
h1{margin:.2em 0 .4em}
.summary{line-height:1.5}
.columns{display:flex;gap:1.5em;flex-wrap:wrap}
section{flex:1 1 20em;background:#fff;border-radius:6px;padding:1em 1.3em;box-shadow:0 1px 3px rgba(0,0,0,.12)}
dt{font-weight:600;float:left;clear:left;width:7em}
dd{margin:0 0 .3em 7.5em}
blockquote{margin:0 0 1em;padding:.5em 1em;border-left:4px solid #2b3a55;background:#f8f9fb}
blockquote small{display:block;color:#555;margin-top:.3em}
.stars{font-size:1.3em;letter-spacing:.05em}
.error{color:#a40000;background:#fff1f0;border:1px solid #f3c1bd;border-radius:4px;padding:.6em .8em}
.version{display:inline-block;font:12px/1.6 ui-monospace,monospace;background:#e8ecf3;color:#2b3a55;
 border-radius:3px;padding:0 .5em;margin-top:.5em}
footer{text-align:center;color:#777;font-size:.85em;margin:2em 0}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render_details(details: Fetched) -> str:
    if details.error:
        return f'<p class="error" id="details-error">{_e(details.message)}</p>'
    data = details.data if isinstance(details.data, dict) else {}
    fields = (
        ("Type", "type"),
        ("Pages", "pages"),
        ("Publisher", "publisher"),
        ("Language", "language"),
        ("ISBN-10", "ISBN-10"),
        ("ISBN-13", "ISBN-13"),
        ("Author", "author"),
        ("Year", "year"),
    )
    rows = "".join(f"<dt>{label}</dt><dd>{_e(data[key])}</dd>" for label, key in fields if key in data)
    return f'<dl id="details">{rows}</dl>'


def render_stars(rating: dict[str, Any]) -> str:
    if "error" in rating:
        return f'<small class="error">{_e(rating["error"])}</small>'
    try:
        stars = max(0, min(5, int(rating.get("stars", 0))))
    except (TypeError, ValueError):
        stars = 0
    color = "red" if rating.get("color") == "red" else "black"
    glyphs = "★" * stars + "☆" * (5 - stars)
    return f'<span class="stars" data-color="{color}" style="color: {color}" title="{stars} of 5 stars">{glyphs}</span>'


def render_reviews(reviews: Fetched) -> str:
    if reviews.error:
        return f'<p class="error" id="reviews-error">{_e(reviews.message)}</p>'
    data = reviews.data if isinstance(reviews.data, dict) else {}
    parts = []
    for review in data.get("reviews") or []:
        if not isinstance(review, dict):
            continue
        rating = review.get("rating")
        stars = render_stars(rating) if isinstance(rating, dict) else ""
        parts.append(
            f"<blockquote><p>{_e(review.get('text', ''))}</p>"
            f"<small>{_e(review.get('reviewer', ''))}</small>{stars}</blockquote>"
        )
    version = data.get("version")
    if version:
        pod = data.get("podname")
        title = f' title="{_e(pod)}"' if pod else ""
        parts.append(f'<span class="version" id="reviews-version"{title}>reviews-{_e(version)}</span>')
    return "".join(parts) or "<p>No reviews yet.</p>"


def render_page(product: dict[str, Any], details: Fetched, reviews: Fetched, user: str | None) -> str:
    if user:
        account = f'signed in as <b>{_e(user)}</b> · <a href="/logout">sign out</a>'
    else:
        account = (
            '<form action="/login" method="post">'
            '<input name="user" placeholder="user name" aria-label="user name"> '
            '<button type="submit">Sign in</button></form>'
        )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(product["title"])} · BookInfo</title>
<style>{_CSS}</style>
</head>
<body>
<header><strong>BookInfo Sample</strong><span>{account}</span></header>
<main>
<h1 id="title">{_e(product["title"])}</h1>
<p class="summary" id="summary">{product["descriptionHtml"]}</p>
<div class="columns">
<section><h2>Book Details</h2>{render_details(details)}</section>
<section><h2>Book Reviews</h2>{render_reviews(reviews)}</section>
</div>
</main>
<footer>served by productpage through mesh</footer>
</body>
</html>
"""


# -- routes --------------------------------------------------------------------------


def page(request: Request) -> Response:
    product = PRODUCTS[0]
    headers = outgoing_headers(request)
    details_call = _pool.submit(fetch, "details", f"/details/{product['id']}", "details", headers)
    reviews_call = _pool.submit(fetch, "reviews", f"/reviews/{product['id']}", "reviews", headers)
    details, reviews = details_call.result(), reviews_call.result()
    note = "; ".join(f"{f.what}: {f.error}" for f in (details, reviews) if f.error)
    return html_response(render_page(product, details, reviews, current_user(request)), note=note)


def api_product(request: Request, product_id: int, part: str | None) -> Response:
    headers = outgoing_headers(request)
    if part is None:
        result = fetch("details", f"/details/{product_id}", "details", headers)
    elif part == "reviews":
        result = fetch("reviews", f"/reviews/{product_id}", "reviews", headers)
    else:
        result = fetch("ratings", f"/ratings/{product_id}", "ratings", headers)
    if result.error:
        return json_response({"error": result.message}, result.status, note=f"{result.what}: {result.error}")
    return json_response(result.data)


def login(request: Request) -> Response:
    values = request.form().get("user") or request.query.get("user") or [""]
    user = values[0].strip()
    if not _USER.fullmatch(user):
        return html_response("<p>Sign in with a user name of letters, digits, <code>._@-</code>.</p>", 400)
    return _redirect("/productpage", f"user={quote(user)}; Path=/; SameSite=Lax")


def _redirect(location: str, cookie: str) -> Response:
    response = Response(303, b"", headers=[("Location", location), ("Set-Cookie", cookie)])
    return response


def handle(request: Request) -> Response:
    path = request.path
    if path == "/login" and request.method in ("GET", "POST"):
        return login(request)
    refused = only_get(request)
    if refused:
        return refused
    if path in ("/", "/productpage"):
        return page(request)
    if path == "/health":
        return json_response({"status": "Product page is healthy"})
    if path == "/logout":
        return _redirect("/productpage", "user=; Path=/; Max-Age=0; SameSite=Lax")
    if path == "/api/v1/products":
        return json_response(PRODUCTS)
    match = _PRODUCT_API.fullmatch(path)
    if match:
        return api_product(request, int(match.group(1)), match.group(2))
    return not_found(request)


def main(port: int | None = None, version: str = "v1") -> int:
    return serve(NAME, handle, port)
