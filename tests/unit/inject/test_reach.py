"""Who can reach what `mesh up` runs: one pure decision from its options and [discovery]."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.config import DiscoveryConfig, load_config_text
from mesh.errors import ControllerError
from mesh.inject._reach import (
    Reach,
    check_advertise,
    controller_advertise,
    plan_reach,
    zeroconf_interfaces,
)

LAN = DiscoveryConfig(interfaces=("10.0.0.5",))


def test_without_config_everything_stays_on_loopback() -> None:
    reach = plan_reach(None)
    assert reach.listen == ("127.0.0.1", 4190)
    assert reach.controller_advertise is None and reach.host is None
    assert reach.sidecar_args() == ["--inbound", "127.0.0.1:0", "--interface", "127.0.0.1"]


def test_a_lan_interface_is_where_services_and_the_controller_listen() -> None:
    reach = plan_reach(LAN)
    assert reach.host == "10.0.0.5"
    assert reach.listen == ("10.0.0.5", 4190)  # its own address is dialable as it is
    assert reach.controller_advertise is None
    assert reach.sidecar_args() == ["--inbound", "10.0.0.5:0", "--interface", "10.0.0.5"]


def test_the_first_lan_address_wins_and_loopback_is_skipped() -> None:
    config = load_config_text('[discovery]\ninterfaces = ["127.0.0.1", "10.0.0.5", "192.168.1.20"]\n', "mesh.toml")
    assert config.discovery.lan_address == "10.0.0.5"
    reach = plan_reach(config.discovery)
    assert reach.sidecar_host == "10.0.0.5"
    # zeroconf keeps every interface the file names.
    assert reach.discovery_args() == [
        "--interface", "127.0.0.1", "--interface", "10.0.0.5", "--interface", "192.168.1.20",
    ]  # fmt: skip


def test_a_wildcard_listen_advertises_the_lan_address() -> None:
    reach = plan_reach(LAN, listen=("0.0.0.0", 0))
    assert reach.listen == ("0.0.0.0", 0)
    assert reach.controller_advertise == "10.0.0.5"  # the join line and the zeroconf record


@pytest.mark.parametrize("listen", [("0.0.0.0", 4190), ("::", 0)])
def test_a_wildcard_listen_without_an_address_to_tell_is_refused(listen: tuple[str, int]) -> None:
    with pytest.raises(ControllerError) as error:
        plan_reach(None, listen=listen)
    assert f"other hosts cannot dial {listen[0]}" in error.value.message
    assert error.value.hint is not None and "--advertise ADDR" in error.value.hint
    # --lan spans every interface but still names no address.
    with pytest.raises(ControllerError):
        plan_reach(None, listen=listen, lan=True)


def test_advertise_binds_wildcards_and_is_told_everywhere() -> None:
    reach = plan_reach(None, advertise="203.0.113.7")  # e.g. NAT: not an address of this host
    assert reach.listen == ("0.0.0.0", 4190)
    assert reach.controller_advertise == "203.0.113.7" and reach.host == "203.0.113.7"
    assert reach.sidecar_args() == [
        "--inbound", "0.0.0.0:0", "--advertise", "203.0.113.7", "--interface", "127.0.0.1",
    ]  # fmt: skip


def test_advertise_wins_over_the_lan_interface_and_a_given_listen() -> None:
    reach = plan_reach(LAN, listen=("10.0.0.5", 4190), advertise="203.0.113.7")
    assert reach.listen == ("10.0.0.5", 4190)
    assert reach.controller_advertise == "203.0.113.7"
    assert reach.sidecar_host == "0.0.0.0"


def test_a_specific_listen_address_is_the_host_address() -> None:
    # As docs/cli.md's example: `mesh up --listen 10.0.0.1:4190` and the services follow.
    reach = plan_reach(None, listen=("10.0.0.1", 4190))
    assert reach.host == "10.0.0.1" and reach.controller_advertise is None
    assert reach.sidecar_host == "10.0.0.1"
    # zeroconf spans the interface the controller listens on: it sees (and says goodbye for)
    # the records of proxies on other hosts, and ignores those of other meshes.
    assert reach.interfaces == ("10.0.0.1",)
    record = reach.host_record()
    assert (record.role, record.address, record.bind, record.zeroconf_interface) == ("controller", "10.0.0.1", "10.0.0.1", "10.0.0.1")


def test_an_advertised_address_keeps_zeroconf_as_configured() -> None:
    # Behind NAT the address need not be one of this host's: no interface to span.
    reach = plan_reach(None, listen=("0.0.0.0", 4190), advertise="203.0.113.7")
    assert reach.interfaces == ("127.0.0.1",)
    record = reach.host_record()
    assert (record.address, record.bind, record.zeroconf_interface) == ("203.0.113.7", "0.0.0.0", None)
    assert plan_reach(None).host_record().address is None  # a mesh on loopback: nothing recorded


def test_a_loopback_listen_keeps_the_controller_local_but_not_the_services() -> None:
    reach = plan_reach(LAN, listen=("127.0.0.1", 4190))
    assert reach.listen == ("127.0.0.1", 4190) and reach.controller_advertise is None
    assert reach.host == "10.0.0.5"


def test_lan_spans_every_interface_and_keeps_the_configured_address() -> None:
    assert plan_reach(None, lan=True).discovery_args() == ["--lan"]
    assert plan_reach(None, lan=True).host is None  # every interface, but no address to bind: loopback
    reach = plan_reach(LAN, lan=True)
    assert reach.interfaces == ("all",) and reach.host == "10.0.0.5"
    assert plan_reach(DiscoveryConfig(interfaces=("all",))).host is None


def test_discovery_mode_picks_the_sidecars_sources() -> None:
    static = plan_reach(DiscoveryConfig(mode="static", endpoints_file="/etc/mesh/endpoints.toml"))
    assert not static.zeroconf
    assert static.discovery_args() == ["--no-zeroconf", "--endpoints", "/etc/mesh/endpoints.toml"]
    controller = plan_reach(DiscoveryConfig(mode="controller"), lan=True)
    assert not controller.zeroconf and controller.discovery_args() == ["--no-zeroconf"]


@pytest.mark.parametrize(
    "text", ["0.0.0.0", "10.0.0.1:4190", "host.example", "::1", "224.0.0.251", ""]
)
def test_advertise_must_be_a_dialable_ipv4_address(text: str) -> None:
    with pytest.raises(ControllerError) as error:
        plan_reach(None, advertise=text)
    assert "--advertise" in error.value.message and error.value.hint


def test_check_advertise_accepts_an_address() -> None:
    assert check_advertise("10.0.0.1") == "10.0.0.1"


def _parse_daemon_args(args: list[str]) -> dict[str, Any]:
    from mesh.proxy._main import parse_listen_address

    options: dict[str, Any] = {"lan": "--lan" in args}
    if "--listen" in args:
        options["listen"] = parse_listen_address(args[args.index("--listen") + 1], "--listen")
    if "--advertise" in args:
        options["advertise"] = args[args.index("--advertise") + 1]
    return options


@pytest.mark.parametrize(
    ("discovery", "options"),
    [
        (None, {}),
        (LAN, {}),
        (LAN, {"listen": ("0.0.0.0", 0)}),
        (LAN, {"listen": ("127.0.0.1", 0), "lan": True}),
        (None, {"advertise": "203.0.113.7"}),
        (None, {"listen": ("10.0.0.1", 0)}),
        (DiscoveryConfig(interfaces=("::1",)), {"listen": ("::", 4190), "advertise": "10.0.0.2"}),
    ],
)
def test_a_detached_mesh_up_decides_the_same(discovery: DiscoveryConfig | None, options: dict[str, Any]) -> None:
    reach = plan_reach(discovery, **options)
    again = plan_reach(discovery, **_parse_daemon_args(reach.daemon_args()))
    assert again == reach


def test_controller_command_follows_the_same_rule() -> None:
    assert controller_advertise(("0.0.0.0", 4190), None, ("10.0.0.5",)) == "10.0.0.5"
    assert controller_advertise(("10.0.0.5", 4190), None, ("127.0.0.1",)) is None
    assert controller_advertise(("127.0.0.1", 4190), "10.0.0.9", ("127.0.0.1",)) == "10.0.0.9"
    with pytest.raises(ControllerError):
        controller_advertise(("0.0.0.0", 4190), None, ("all",))


def test_zeroconf_interfaces_of_the_cli_flags() -> None:
    assert zeroconf_interfaces(False, None) == ("127.0.0.1",)
    assert zeroconf_interfaces(False, ["10.0.0.5", "127.0.0.1"]) == ("10.0.0.5", "127.0.0.1")
    assert zeroconf_interfaces(True, ["10.0.0.5"]) == ("all",)


def test_reach_is_a_plain_value() -> None:
    reach = plan_reach(LAN)
    assert isinstance(reach, Reach) and hash(reach) == hash(plan_reach(LAN))
