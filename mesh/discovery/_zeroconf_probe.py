"""Discovery over zeroconf: ``mesh check``'s self-test (a probe record advertised and found)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from zeroconf import InterfaceChoice, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from mesh.discovery._zeroconf_advertise import _new_id
from mesh.discovery._zeroconf_io import (
    DEFAULT_INTERFACES,
    _as_tuple,
    _close_zeroconf,
    _open_zeroconf,
    interface_choice,
)
from mesh.discovery._zeroconf_records import RECORD_TTL
from mesh.errors import DiscoveryError

# `mesh check`'s probe has a type of its own, so that no registry ever sees it.
PROBE_SERVICE_TYPE = "_mesh-probe._tcp.local."


def zeroconf_works(interfaces: Sequence[str] = DEFAULT_INTERFACES, timeout: float = 3.0) -> tuple[bool, str]:
    """Advertise a probe record and find it with a second zeroconf: ``(ok, what happened)``.

    For ``mesh check``. Blocking (up to about ``timeout`` s plus half a second):
    from trio, call it through ``trio.to_thread.run_sync``. The probe has a type
    of its own (``_mesh-probe._tcp``), so running registries never see it.
    """
    interfaces = _as_tuple(interfaces)
    where = ", ".join(interfaces)
    try:
        choice = interface_choice(interfaces)
        advertiser = _open_zeroconf(interfaces)
    except DiscoveryError as exc:
        return False, exc.message + (f" ({exc.hint})" if exc.hint else "")
    browser: ServiceBrowser | None = None
    try:
        try:
            browser_zc = _open_zeroconf(interfaces)
        except DiscoveryError as exc:
            return False, exc.message
        try:
            token = _new_id()
            name = f"probe-{token}.{PROBE_SERVICE_TYPE}"
            seen_at: list[float] = []
            seen = threading.Event()

            def handler(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
                if name == f"probe-{token}.{PROBE_SERVICE_TYPE}" and not seen.is_set():
                    seen_at.append(time.monotonic())
                    seen.set()

            browser = ServiceBrowser(browser_zc, PROBE_SERVICE_TYPE, handlers=[handler])
            info = ServiceInfo(
                PROBE_SERVICE_TYPE,
                name,
                port=9,
                properties={"probe": token},
                server=f"probe-{token}.local.",
                host_ttl=RECORD_TTL,
                other_ttl=RECORD_TTL,
                parsed_addresses=["127.0.0.1" if choice is InterfaceChoice.All else interfaces[0]],
            )
            start = time.monotonic()
            try:
                advertiser.register_service(info, cooperating_responders=True)
            except Exception as exc:  # noqa: BLE001 - report it, do not crash `mesh check`
                return False, f"could not advertise a probe record on {where}: {exc}"
            if not seen.wait(timeout):
                return False, (
                    f"advertised a probe record on {where} but no browser saw it within "
                    f"{timeout:g} s: multicast to 224.0.0.251:5353 does not come back "
                    "(a firewall, or an interface without multicast?)"
                )
            found = browser_zc.get_service_info(PROBE_SERVICE_TYPE, name, timeout=int(timeout * 1000))
            if found is None:
                return False, f"saw the probe record on {where} but could not resolve its SRV/TXT/A"
            if found.properties.get(b"probe") != token.encode() or found.port != 9:
                return False, f"the probe record came back changed on {where}: {found!r}"
            took = seen_at[0] - start
            return True, f"advertised and discovered a probe record on {where} in {took:.3f} s"
        finally:
            _close_zeroconf(browser_zc, browser)
    finally:
        _close_zeroconf(advertiser)
