"""The `mesh` command line: one thin module per command (parse → call → render).

Heavy modules (trio, cryptography, rich, zeroconf) are imported inside the
command functions, so `mesh --help` and `mesh version` start fast. The typer
application itself lives in ``mesh.cli._app`` and is imported only when needed:
a plain ``mesh proxy`` run is parsed by ``mesh.cli._proxy_fast`` and the
sidecar never loads typer and pydantic (memory: docs/performance.md); `mesh inject`
and `mesh gateway` re-exec themselves into a lean process (``mesh.cli._sidecar``)
once typer has parsed their command line.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from mesh.cli._errors import print_error

if TYPE_CHECKING:
    from mesh.cli._app import app as app


def __getattr__(name: str) -> Any:
    # `mesh.cli.app` still names the typer application; it is built on first access.
    if name == "app":
        from mesh.cli._app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    """The first MeshError (or KeyboardInterrupt) in a tree of exception groups, else the group."""
    from mesh.errors import MeshError, first_leaf

    leaf = first_leaf(group, (MeshError, KeyboardInterrupt))
    return leaf if isinstance(leaf, (MeshError, KeyboardInterrupt)) else group


def _run(args: list[str]) -> None:
    from mesh.cli import _sidecar
    from mesh.cli._proxy_fast import parse_proxy_argv

    if _sidecar.take_over(args):  # re-exec'd by `mesh inject`/`mesh gateway`: the lean sidecar
        return
    if args == ["version"]:  # the plain form, without typer and rich: 0.22 -> 0.05 s (docs/performance.md)
        print(version_line())
        return
    if args[:1] == ["demo"]:  # a demo app: argparse's own options and help, no typer in the app
        from mesh.cli._proxy_fast import run_standalone
        from mesh.demo.__main__ import main as demo_main

        run_standalone(lambda: demo_main(args[1:], prog="mesh demo"))
    fast = parse_proxy_argv(args)
    if fast is not None:
        fast.run()  # the sidecar, without typer; exits as typer would
    else:
        from mesh.cli._app import app

        app(args=args, prog_name="mesh")


def version_line() -> str:
    import platform

    from mesh import __version__

    return f"mesh {__version__} (python {platform.python_version()})"


def single_file_main() -> None:
    """Entry point of the single-file build (scripts/build): children re-run this same file."""
    from mesh import self_command

    self_command.set_archive(sys.argv[0])
    main()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `mesh` executable."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["_identity-helper"]:  # mesh.identity.HELPER_COMMAND: a sidecar's keys and CSRs, first and fast
        from mesh.identity import serve_helper

        serve_helper()
        return
    debug = "--debug" in args
    if argv is None:  # this process is `mesh ...` itself: inject/gateway may re-exec it lean
        from mesh.cli import _sidecar

        _sidecar.enable(args)
    from mesh.errors import MeshError

    try:
        try:
            _run(args)
        except BaseExceptionGroup as group:
            # trio wraps errors raised inside nurseries; the user wants the error itself.
            leaf = _first_leaf(group)
            if leaf is group:
                raise
            raise leaf from group
    except MeshError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print_error(exc.message, exc.hint)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # `mesh tap | head` must not print a traceback.
        sys.stderr.close()
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - last resort: one clear line, traceback on --debug
        if debug:
            raise
        print_error(f"unexpected {type(exc).__name__}: {exc}", "run again with --debug for the traceback")
        sys.exit(1)
