"""The CLI's access to the controller: operator identity, one request, clear errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mesh.errors import ControllerError
from mesh.home import MeshHome


def operator_request(home: MeshHome, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
    """Send one request as the operator of MESH_HOME; returns the ApiResponse."""
    import trio

    return trio.run(_operator_request, home, method, path, body, timeout)


async def _operator_request(home: MeshHome, method: str, path: str, body: Any, timeout: float) -> Any:
    async with operator_client(home, timeout) as client:
        return await client.request(method, path, body, timeout=timeout)


@asynccontextmanager
async def operator_client(home: MeshHome, timeout: float = 10.0) -> AsyncIterator[Any]:
    """An ApiClient connected as the operator of MESH_HOME (for streams: ``client.stream(...)``)."""
    from mesh.net import ApiClient
    from mesh.identity import client_context, load_credentials
    from mesh.proxy import controller_from_home

    controller = controller_from_home(home)
    if controller is None:
        raise ControllerError(
            f"no controller recorded in {home.root}",
            hint="start one with `mesh up` (or `mesh up --detach`)",
        )
    operator = home.operator_dir
    if not (operator / "cert.pem").exists():
        raise ControllerError(
            f"no operator identity in {operator}",
            hint="`mesh up` creates it on the controller's host",
        )
    creds = load_credentials(operator / "cert.pem", operator / "key.pem", home.bundle)
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
