"""`mesh controller`: run the control plane in the foreground."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from mesh.cli._options import Interfaces, Lan, Store, store_url
from mesh.cli._state import state


def controller(
    ctx: typer.Context,
    listen: Annotated[str, typer.Option(help="HOST:PORT of the API (HTTP/2 over mTLS).")] = "127.0.0.1:4190",
    lan: Lan = False,
    interface: Interfaces = None,
    zeroconf: Annotated[bool, typer.Option("--zeroconf/--no-zeroconf", help="Advertise and browse with mDNS.")] = True,
    advertise: Annotated[
        Optional[str], typer.Option(help="Address other hosts dial (default: the --listen address).")
    ] = None,
    store: Store = None,
) -> None:
    """Run the controller: CA signing, config store, registry, watch streams.

    Its state (config and its versions, registrations, faults, the join token) lives in
    the embedded store under MESH_HOME/state, or with --store etcd://... on an etcd v3
    cluster, where several controllers serve one mesh (docs/operations.md).
    """
    import json
    import logging

    import trio

    from mesh import sd_notify
    from mesh._logging import setup_logging
    from mesh.cli.up import join_line
    from mesh.config import DiscoveryConfig
    from mesh.controller import ControllerSettings, run_controller
    from mesh.errors import MeshError
    from mesh.inject import plan_reach, zeroconf_interfaces
    from mesh.proxy import parse_listen_address

    st = state(ctx)
    setup_logging("controller", debug=st.debug)
    address = parse_listen_address(listen, "--listen")
    interfaces = zeroconf_interfaces(lan, interface)
    assert interfaces is not None
    # As `mesh up`: a wildcard --listen needs an address to tell the other hosts, and a specific
    # one is this host's address for them (zeroconf spans it unless --interface says otherwise).
    reach = plan_reach(DiscoveryConfig(interfaces=interfaces), listen=address, advertise=advertise, lan=lan)
    settings = ControllerSettings(
        home=st.home,
        listen=address,
        interfaces=reach.interfaces,
        zeroconf=zeroconf,
        advertise=reach.controller_advertise,
        store=store_url(store),  # type: ignore[arg-type]
        host=reach.host_record(),
    )

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_controller, settings)
            sd_notify.ready("accepting connections")  # Type=notify units start their dependents now
            try:  # under systemd this is the only place the operator sees it
                record = json.loads(st.home.controller_json.read_text())
                line = join_line(st.home, record, reveal_token=False)[0]
            except (OSError, ValueError, KeyError, MeshError):
                return
            logging.getLogger("mesh.controller").info("other hosts join with: %s", line)

    trio.run(serve)


def register(app: typer.Typer) -> None:
    app.command()(controller)
