"""The CLI's access to the controller (the CLI's commands, `mesh check` and the dashboard): its
identity, one request, clear errors.

The CLI presents the operator identity of MESH_HOME (``operator/``: the controller's host, or a
host joined with ``--operator``), else the host identity `mesh join` gave this host (``host/``),
which may read the mesh (status, stats, routes, tap, check) but not change it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mesh.errors import ControllerError
from mesh.home import MeshHome


def cli_identity_dir(home: MeshHome) -> Path | None:
    """Where the CLI's certificate and key are: the operator's, else the host's; None: neither."""
    for directory in (home.operator_dir, home.host_dir):
        if (directory / "cert.pem").exists() and (directory / "key.pem").exists():
            return directory
    return None


def cli_credentials(home: MeshHome) -> Any:
    from mesh.identity import load_credentials

    directory = cli_identity_dir(home)
    if directory is None:
        raise ControllerError(
            f"no identity for the CLI in {home.root} (neither operator/ nor host/)",
            hint="on the controller's host `mesh up` creates one; on another host run the `mesh join …` "
            "line `mesh up` printed",
        )
    return load_credentials(directory / "cert.pem", directory / "key.pem", home.bundle)


def controller_request(home: MeshHome, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
    """Send one request with the CLI's identity (see the module docstring); returns the ApiResponse."""
    import trio

    return trio.run(_controller_request, home, method, path, body, timeout)


async def _controller_request(home: MeshHome, method: str, path: str, body: Any, timeout: float) -> Any:
    async with controller_client(home, timeout) as client:
        return await client.request(method, path, body, timeout=timeout)


@asynccontextmanager
async def controller_client(home: MeshHome, timeout: float = 10.0) -> AsyncIterator[Any]:
    """An ApiClient connected with the CLI's identity (for streams: ``client.stream(...)``)."""
    from mesh.discovery import controller_from_home
    from mesh.identity import client_context
    from mesh.net._api_client import ApiClient

    controller = controller_from_home(home)
    if controller is None:
        raise ControllerError(
            f"no controller recorded in {home.root}",
            hint="start one with `mesh up` (or `mesh up --detach`), or join one: `mesh join HOST:PORT …`",
        )
    creds = cli_credentials(home)
    client = await ApiClient.connect(
        controller.host,
        controller.port,
        client_context(creds, alpn=("h2",)),
        expected_identity=controller.identity,
        timeout=timeout,
    )
    try:
        yield client
    finally:
        await client.aclose()


def raise_for_status(response: Any, what: str) -> Any:
    if 200 <= response.status < 300:
        return response.body
    body = response.body if isinstance(response.body, dict) else {"error": str(response.body)}
    issues = body.get("issues")
    message = f"{what}: {body.get('error', 'failed')}"
    if issues:
        message += "\n" + "\n".join(issues)
    raise ControllerError(message, hint=body.get("hint"))
