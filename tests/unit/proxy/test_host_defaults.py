"""Where a sidecar listens and advertises when its options do not say: the host decides
(MESH_HOME/host.json, written by `mesh join` and `mesh up`), else loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.home import HostRecord, MeshHome, read_host_record, write_host_record
from mesh.proxy._main import ProxyOptions, settings_from, with_host_defaults


def options(home: MeshHome, **given: object) -> ProxyOptions:
    return ProxyOptions(home=home, service="web", app="127.0.0.1:8080", **given)  # type: ignore[arg-type]


@pytest.fixture
def home(tmp_path: Path) -> MeshHome:
    return MeshHome(tmp_path / "mesh")


def test_without_a_host_record_everything_stays_on_loopback(home: MeshHome) -> None:
    resolved = with_host_defaults(options(home))
    assert (resolved.inbound, resolved.interfaces, resolved.advertise) == ("127.0.0.1:0", ("127.0.0.1",), None)


def test_a_joined_host_listens_and_advertises_on_its_address(home: MeshHome) -> None:
    write_host_record(home, HostRecord(role="joined", address="10.0.0.2", bind="10.0.0.2", name="b"))
    resolved = with_host_defaults(options(home))
    assert (resolved.inbound, resolved.interfaces, resolved.advertise) == ("10.0.0.2:0", ("10.0.0.2",), None)
    assert settings_from(options(home)).inbound == ("10.0.0.2", 0)
    # What the options say wins; a wildcard is told the host's address.
    given = with_host_defaults(options(home, inbound="127.0.0.1:0", interfaces=("127.0.0.1",)))
    assert (given.inbound, given.interfaces, given.advertise) == ("127.0.0.1:0", ("127.0.0.1",), None)
    wildcard = with_host_defaults(options(home, inbound="0.0.0.0:0"))
    assert (wildcard.inbound, wildcard.advertise) == ("0.0.0.0:0", "10.0.0.2")


def test_an_advertised_host_address_binds_the_wildcard(home: MeshHome) -> None:
    # `mesh join --advertise 203.0.113.7` (behind NAT): not an address of this host.
    write_host_record(home, HostRecord(role="joined", address="203.0.113.7", bind="0.0.0.0"))
    resolved = with_host_defaults(options(home))
    assert (resolved.inbound, resolved.interfaces, resolved.advertise) == ("0.0.0.0:0", ("127.0.0.1",), "203.0.113.7")


def test_a_host_record_round_trips_and_a_bad_one_is_none(home: MeshHome) -> None:
    record = HostRecord(role="controller", address="10.0.0.1", bind="10.0.0.1", operator=True)
    write_host_record(home, record)
    assert read_host_record(home) == record
    for text in ("{", '{"role": "king"}', "[]"):
        home.host_json.write_text(text)
        assert read_host_record(home) is None
