"""``mesh demo SERVICE`` (or ``python -m mesh.demo SERVICE``): one bookinfo demo app, or the
traffic generator.

PORT=9080 mesh demo productpage
PORT=9082 mesh demo reviews --version v2
mesh demo traffic --url http://127.0.0.1:9080/productpage --rate 2
"""

from __future__ import annotations

import argparse
import os
import sys

APPS = ("productpage", "details", "reviews", "ratings")


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 < rate <= 1000:
        raise argparse.ArgumentTypeError("the rate must be more than 0 and at most 1000 requests/s")
    return rate


def _header(value: str) -> tuple[str, str]:
    name, sep, content = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME: VALUE")
    return name.strip(), content.strip()


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="The bookinfo demo apps of mesh (each listens on 127.0.0.1:$PORT), and a traffic generator.",
    )
    commands = parser.add_subparsers(dest="command", metavar="SERVICE", required=True)
    for app in APPS:
        sub = commands.add_parser(app, help=f"run the {app} app")
        sub.add_argument("--port", type=int, default=None, help="port to listen on (default: $PORT)")
        sub.add_argument(
            "--version",
            default=None,
            help="version label (reviews: v1 no stars, v2 black, v3 red); default $MESH_LABEL_VERSION or v1",
        )
    traffic = commands.add_parser("traffic", help="GET a URL at a gentle rate until stopped")
    traffic.add_argument("--url", default="http://127.0.0.1:9080/productpage", help="URL to GET")
    traffic.add_argument("--rate", type=_rate, default=2.0, help="requests per second at most (default 2)")
    traffic.add_argument("--count", type=int, default=None, help="stop after this many requests")
    traffic.add_argument(
        "--header",
        "-H",
        type=_header,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="send this header too (e.g. 'end-user: jason'); repeatable",
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m mesh.demo") -> int:
    args = _parser(prog).parse_args(argv)
    if args.command == "traffic":
        from mesh.demo import traffic

        return traffic.main(args.url, args.rate, args.count, dict(args.header))
    version = args.version or os.environ.get("MESH_LABEL_VERSION") or "v1"
    if args.command == "reviews":
        from mesh.demo import reviews

        if version not in reviews.VERSIONS:
            print(
                f"reviews: unknown version {version!r}; use one of {', '.join(reviews.VERSIONS)}",
                file=sys.stderr,
            )
            return 2
        return reviews.main(args.port, version)
    if args.command == "productpage":
        from mesh.demo import productpage as app
    elif args.command == "details":
        from mesh.demo import details as app  # type: ignore[no-redef]
    else:
        from mesh.demo import ratings as app  # type: ignore[no-redef]
    return app.main(args.port, version)


if __name__ == "__main__":
    sys.exit(main())
