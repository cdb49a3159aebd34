"""What `mesh up` runs: the controller and, around it, the services it keeps alive.

Foreground (`mesh up`) shows a live panel; detached (`mesh up --detach`) the
same runner works in a background process with its log in MESH_HOME/run/.
Stopping is ordered: services first (each withdraws itself from a still
running controller), then the controller.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from mesh import sd_notify
from mesh.home import MeshHome
from mesh.inject._fleet import Fleet, UnitSpec
from mesh.inject._reach import Reach

log = logging.getLogger("mesh.up")


@dataclass(frozen=True)
class UpPlan:
    home: MeshHome
    reach: Reach  # the controller's listen and address, zeroconf; the units carry the same decision
    config: Any | None  # a parsed MeshConfig to apply once up
    config_source: str | None
    units: Sequence[UnitSpec]
    store: Any = None  # a StoreUrl; None: the embedded store


async def run_up(plan: UpPlan, panel: Callable[[Any, Fleet], Any] | None = None) -> None:
    from mesh.controller import ControllerSettings, run_controller

    stop = trio.Event()
    reach = plan.reach
    settings = ControllerSettings(
        home=plan.home,
        listen=reach.listen,
        interfaces=reach.interfaces,
        zeroconf=reach.zeroconf,
        advertise=reach.controller_advertise,
        store=plan.store if plan.store is not None else ControllerSettings.store,
        host=reach.host_record(),
    )
    async with trio.open_nursery() as nursery:
        app = await nursery.start(run_controller, settings, stop)
        if plan.config is not None:
            from mesh.net import ApiError

            source = plan.config_source or "mesh.toml"
            try:
                version, changed = await app.apply_file(plan.config.to_dict(), source)
                log.info(
                    "%s: %s config version %d", source, "applied as" if changed else "already in force as", version
                )
            except ApiError as exc:  # the store cannot write: what it holds stays in force
                log.warning("%s was not applied: %s", source, exc.message)
        fleet = Fleet(plan.home, plan.units)
        app.units = fleet.view
        async with trio.open_nursery() as services:
            await services.start(fleet.run)
            sd_notify.ready(f"controller up; {len(plan.units)} services started")
            if panel is not None:
                services.start_soon(panel, app, fleet)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("received %s: stopping services, then the controller", signal.Signals(signum).name)
                    sd_notify.stopping("stopping services, then the controller")
                    break
            await fleet.stop()
            services.cancel_scope.cancel()
        stop.set()
