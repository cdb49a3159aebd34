"""Discovery over zeroconf: the plumbing both sides share.

Which interfaces zeroconf may bind, opening and closing it, and the bridge from trio
to zeroconf's own asyncio loop and browser thread (``_zeroconf.py``, "Threads").
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import ifaddr
import trio
from zeroconf import (
    InterfaceChoice,
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from mesh.errors import DiscoveryError

logger = logging.getLogger("mesh.discovery")

DEFAULT_INTERFACES: tuple[str, ...] = ("127.0.0.1",)

_T = TypeVar("_T")


def interface_choice(interfaces: Sequence[str]) -> list[str] | InterfaceChoice:
    """Check the interfaces zeroconf may bind: IPv4 addresses of this host, or ``["all"]``.

    ``"all"`` (``--lan``) is the only way to reach the machine's real networks
    without naming them; nothing picks it by default. Raises DiscoveryError.
    """
    chosen = list(_as_tuple(interfaces))
    if not chosen:
        raise DiscoveryError("zeroconf needs at least one interface", hint='use ["127.0.0.1"] (loopback)')
    if "all" in chosen:
        if len(chosen) > 1:
            raise DiscoveryError('zeroconf interfaces: ["all"] alone or a list of IP addresses')
        return InterfaceChoice.All
    local = _local_ipv4_addresses()
    for interface in chosen:
        try:
            address = ipaddress.ip_address(interface)
        except ValueError:
            raise DiscoveryError(
                f"zeroconf interface {interface!r} is not an IP address",
                hint='give IPv4 addresses of this host, e.g. ["127.0.0.1"], or ["all"]',
            ) from None
        if address.version != 4:
            raise DiscoveryError(
                f"zeroconf interface {interface}: only IPv4 is supported",
                hint="give the interface's IPv4 address",
            )
        if interface not in local:
            raise DiscoveryError(
                f"zeroconf interface {interface} is not an address of this host",
                hint=f"addresses here: {', '.join(sorted(local)) or 'none'}",
            )
    return chosen


def _as_tuple(interfaces: Sequence[str]) -> tuple[str, ...]:
    return (interfaces,) if isinstance(interfaces, str) else tuple(interfaces)


def _local_ipv4_addresses() -> set[str]:
    return {ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)}


def loopback_on_lan(host: str, interfaces: Sequence[str]) -> str | None:
    """Why advertising ``host`` on ``interfaces`` misleads other hosts, or None.

    A loopback address is right only for peers on this host. Sent on a LAN
    interface, it points every other host at itself: its proxies fail to
    connect (502), or dial a listener of their own. A peer on this host may
    still use it, so this is a warning, not a refusal.
    """
    if not ipaddress.IPv4Address(host).is_loopback:
        return None
    lan = [i for i in _as_tuple(interfaces) if i == "all" or not ipaddress.ip_address(i).is_loopback]
    if not lan:
        return None
    return (
        f"the loopback address {host} is advertised on {', '.join(lan)}: other hosts cannot "
        "reach it; listen on an address of that network (mesh proxy/inject: --inbound ADDR:0, "
        "or --inbound 0.0.0.0:0 --advertise ADDR; mesh controller: --listen ADDR:PORT)"
    )


def _open_zeroconf(interfaces: Sequence[str]) -> Zeroconf:
    """A Zeroconf bound to exactly ``interfaces`` (blocking: call it from a thread)."""
    choice = interface_choice(interfaces)
    try:
        return Zeroconf(interfaces=choice, ip_version=IPVersion.V4Only)
    except OSError as exc:
        raise DiscoveryError(
            f"cannot open mDNS sockets (UDP 5353) on {', '.join(interfaces)}: {exc}",
            hint="another program may hold port 5353 without SO_REUSEPORT",
        ) from None


async def _open(interfaces: Sequence[str]) -> Zeroconf:
    return await trio.to_thread.run_sync(_open_zeroconf, interfaces)


def _close_zeroconf(zc: Zeroconf, browser: ServiceBrowser | None = None) -> None:
    """Stop the browser (zc.close does not know browsers made directly), then zeroconf.

    Blocking: joins the browser's thread, sends goodbyes for what is still
    registered (about 250 ms) and joins zeroconf's loop thread.
    """
    try:
        if browser is not None:
            browser.cancel()
        zc.close()
    except Exception:  # a failing close must not hide the real exit
        logger.debug("closing zeroconf failed", exc_info=True)


async def _close(zc: Zeroconf, browser: ServiceBrowser | None = None) -> None:
    """``_close_zeroconf`` in a worker thread, even when cancelled."""
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(_close_zeroconf, zc, browser)


async def _on_loop(zc: Zeroconf, coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` on zeroconf's own asyncio loop and await it from trio."""
    loop = zc.loop
    assert loop is not None
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_future: object) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass

    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    future.add_done_callback(wake)
    try:
        await done.wait()
    except BaseException:
        future.cancel()
        raise
    return future.result()


async def _resolve(zc: Zeroconf, type_: str, name: str, timeout: float) -> ServiceInfo | None:
    """SRV, TXT and A of ``name`` (from the cache, else asked for), or None."""
    info = ServiceInfo(type_, name)
    found = await _on_loop(zc, info.async_request(zc, timeout * 1000))
    return info if found else None


_Callback = Callable[[str, ServiceStateChange], None]


def _start_browser(zc: Zeroconf, type_: str, callback: _Callback) -> ServiceBrowser:
    """Browse ``type_``; ``callback(name, change)`` runs in the trio thread."""
    token = trio.lowlevel.current_trio_token()

    def handler(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        # On zeroconf's browser thread: hand over, never touch trio state here.
        try:
            token.run_sync_soon(callback, name, state_change)
        except trio.RunFinishedError:
            pass

    return ServiceBrowser(zc, type_, handlers=[handler])
