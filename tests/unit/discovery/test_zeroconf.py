"""zeroconf discovery, for real, on 127.0.0.1 only (DESIGN.md section 8: network safety).

Every test picks a trust domain of its own, so records of other tests and of
other mesh processes on this host's loopback are ignored by its registry.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

from mesh.discovery import (
    CONTROLLER_SERVICE_TYPE,
    MESH_SERVICE_TYPE,
    ControllerRecord,
    Endpoint,
    MeshServiceRecord,
    Registry,
    ZeroconfAdvertiser,
    ZeroconfRegistry,
    find_controller,
    zeroconf_works,
)
from mesh.discovery._zeroconf_io import interface_choice, loopback_on_lan
from mesh.discovery._zeroconf_records import parse_controller_record, parse_service_record
from mesh.errors import DiscoveryError

LOOPBACK = ["127.0.0.1"]
PEER_SCRIPT = Path(__file__).with_name("zeroconf_peer.py")
REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def domain() -> str:
    return f"t{secrets.token_hex(6)}.test"


def web_record(domain: str, **changes: object) -> MeshServiceRecord:
    fields: dict[str, object] = {
        "service": "web",
        "identity": f"spiffe://{domain}/svc/web",
        "host": "127.0.0.1",
        "port": 8443,
        "labels": {"version": "v1", "zone": "rack-1"},
        "admin_port": 4191,
    }
    fields.update(changes)
    return MeshServiceRecord(**fields)  # type: ignore[arg-type]


@asynccontextmanager
async def running_registry(domain: str) -> AsyncIterator[ZeroconfRegistry]:
    registry = ZeroconfRegistry(LOOPBACK, trust_domain=domain)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        yield registry
        nursery.cancel_scope.cancel()


async def wait_until(
    registry: ZeroconfRegistry, condition: Callable[[], bool], timeout: float
) -> float:
    """Wait until ``condition()`` holds; returns how long that took."""
    start = trio.current_time()
    with trio.fail_after(timeout):
        version = registry.version
        while not condition():
            version = await registry.wait_changed(version)
    return trio.current_time() - start


# -- records and parsing (no network) ------------------------------------------------------


def test_records_validate_their_fields() -> None:
    record = web_record("mesh.local")
    assert record.labels == (("version", "v1"), ("zone", "rack-1"))  # sorted pairs
    labels = (("version", "v1"), ("zone", "rack-1"))
    assert record.endpoint() == Endpoint(
        "web", "127.0.0.1", 8443, "spiffe://mesh.local/svc/web", labels, 4191
    )
    bad: list[dict[str, object]] = [
        {"service": "Web"},
        {"identity": "web"},
        {"host": "localhost"},
        {"host": "::1"},
        {"host": "0.0.0.0"},
        {"port": 0},
        {"admin_port": 70000},
        {"labels": {"bad key": "v"}},
        {"labels": {"k": "a,b"}},
        {"labels": {f"k{i}": "v" * 60 for i in range(5)}},  # over 255 bytes of TXT
        {"instance": "web.1"},
    ]
    for changes in bad:
        with pytest.raises(ValueError):
            web_record("mesh.local", **changes)
    with pytest.raises(ValueError):
        ControllerRecord("spiffe://mesh.local/svc/controller", "127.0.0.1", 0)


def test_instance_names_fit_in_a_dns_label() -> None:
    advertiser = ZeroconfAdvertiser(LOOPBACK)  # opens nothing until the first advertise
    long_name = "a" * 49 + "-" + "b" * 13
    record = web_record("mesh.local", service=long_name, identity="spiffe://mesh.local/svc/x")
    instance = advertiser._instance(record)
    assert len(instance) <= 63
    assert instance.startswith("a" * 49 + "-")  # cut before the '-', then "-<12 hex>"
    assert len(instance) == 49 + 1 + 12
    controller = ControllerRecord("spiffe://mesh.local/svc/controller", "127.0.0.1", 4190)
    assert advertiser._instance(controller).startswith("controller-")
    assert advertiser._instance(record) != instance


def test_parse_service_record() -> None:
    properties = {
        b"svc": b"web",
        b"id": b"spiffe://mesh.local/svc/web",
        b"labels": b"zone=a,version=v2",
        b"admin": b"4191",
        b"v": b"0.1.0",
    }
    record = parse_service_record(
        f"web-0123456789ab.{MESH_SERVICE_TYPE}", 8443, ["127.0.0.1"], properties, "mesh.local"
    )
    assert record == MeshServiceRecord(
        "web",
        "spiffe://mesh.local/svc/web",
        "127.0.0.1",
        8443,
        (("version", "v2"), ("zone", "a")),
        4191,
        "0.1.0",
        "web-0123456789ab",
    )
    # Optional entries: no labels, no admin port, no version; a key without '='.
    minimal = parse_service_record(
        "web-1._mesh._tcp.local.",
        1,
        ["127.0.0.1"],
        {b"svc": b"web", b"id": b"spiffe://mesh.local/svc/web", b"labels": None},
        "mesh.local",
    )
    assert (minimal.labels, minimal.admin_port, minimal.version) == ((), None, "")
    assert minimal.protocol == "auto"  # records of older proxies carry no proto


def test_declared_protocol_travels_in_the_txt_record() -> None:
    from mesh.discovery._zeroconf_records import _service_txt

    record = MeshServiceRecord("db", "spiffe://mesh.local/svc/db", "127.0.0.1", 5432, protocol="tcp")
    txt = _service_txt(record)
    assert txt["proto"] == "tcp"
    assert "proto" not in _service_txt(MeshServiceRecord("web", "spiffe://mesh.local/svc/web", "127.0.0.1", 1))
    parsed = parse_service_record(
        "db-1._mesh._tcp.local.", 5432, ["127.0.0.1"], {k.encode(): v.encode() for k, v in txt.items()}, "mesh.local"
    )
    assert parsed.protocol == "tcp" and parsed.endpoint().protocol == "tcp"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({b"svc": b"Web"}, "is not a service name"),
        ({b"svc": None}, "is not a service name"),
        ({b"id": b"spiffe://other.domain/svc/web"}, "is not in trust domain mesh.local"),
        ({b"id": b"spiffe://mesh.local/svc/admin"}, "is not spiffe://mesh.local/svc/web"),
        ({b"id": b"not-an-id"}, "is not in trust domain"),
        ({b"labels": b"version"}, "is not key=value"),
        ({b"labels": b"a=1,a=2"}, "'a' twice"),
        ({b"labels": b"a=b c"}, "is not key=value"),
        ({b"admin": b"http"}, "is not a port number"),
        ({b"admin": b"0"}, "is not a port number"),
        ({b"v": b"\xff"}, "is not text"),
        ({b"proto": b"udp"}, "is not one of"),
    ],
)
def test_parse_service_record_rejects_malformed_txt(
    changes: dict[bytes, bytes | None], reason: str
) -> None:
    properties: dict[bytes, bytes | None] = {
        b"svc": b"web",
        b"id": b"spiffe://mesh.local/svc/web",
        b"labels": b"",
    }
    properties.update(changes)
    with pytest.raises(ValueError, match=reason):
        parse_service_record("x._mesh._tcp.local.", 8443, ["127.0.0.1"], properties, "mesh.local")


def test_parse_service_record_needs_an_address_and_a_port() -> None:
    properties = {b"svc": b"web", b"id": b"spiffe://mesh.local/svc/web"}
    with pytest.raises(ValueError, match="no IPv4 address"):
        parse_service_record("x._mesh._tcp.local.", 1, [], properties, "mesh.local")
    with pytest.raises(ValueError, match="SRV port 0"):
        parse_service_record("x._mesh._tcp.local.", 0, ["127.0.0.1"], properties, "mesh.local")
    del properties[b"id"]
    with pytest.raises(ValueError, match="TXT has no 'id'"):
        parse_service_record("x._mesh._tcp.local.", 1, ["127.0.0.1"], properties, "mesh.local")


def test_parse_controller_record() -> None:
    properties = {b"id": b"spiffe://mesh.local/svc/controller", b"v": b"0.1.0", b"api": b"4190"}
    record = parse_controller_record(
        f"controller-1.{CONTROLLER_SERVICE_TYPE}", 4190, ["127.0.0.1"], properties
    )
    assert record == ControllerRecord(
        "spiffe://mesh.local/svc/controller", "127.0.0.1", 4190, "0.1.0", "controller-1"
    )
    assert record.address == "127.0.0.1:4190"
    with pytest.raises(ValueError, match="not in trust domain other"):
        parse_controller_record("c._mesh-ctl._tcp.local.", 4190, ["127.0.0.1"], properties, "other")


def test_interfaces_are_checked_and_all_only_when_asked() -> None:
    assert interface_choice(["127.0.0.1"]) == ["127.0.0.1"]
    assert interface_choice("127.0.0.1") == ["127.0.0.1"]
    # "all" (--lan) maps to InterfaceChoice.All; nothing is bound here.
    assert interface_choice(["all"]) is InterfaceChoice.All
    for bad, message in [
        ([], "at least one interface"),
        (["all", "127.0.0.1"], "alone"),
        (["::1"], "only IPv4"),
        (["eth0"], "is not an IP address"),
        (["192.0.2.200"], "is not an address of this host"),
    ]:
        with pytest.raises(DiscoveryError, match=message):
            interface_choice(bad)
    with pytest.raises(DiscoveryError):
        ZeroconfAdvertiser([])
    with pytest.raises(ValueError, match="invalid trust domain"):
        ZeroconfRegistry(LOOPBACK, trust_domain="Mesh Local")


def test_a_loopback_address_advertised_on_a_lan_is_flagged() -> None:
    # Pure: which (host, interfaces) would send other hosts to themselves. Nothing is bound.
    assert loopback_on_lan("127.0.0.1", LOOPBACK) is None
    assert loopback_on_lan("10.77.1.1", ["10.77.1.1"]) is None
    assert loopback_on_lan("10.77.1.1", ["all"]) is None
    for interfaces, where in [(["10.77.1.2"], "10.77.1.2"), (["127.0.0.1", "10.77.1.2"], "10.77.1.2"), (["all"], "all")]:
        problem = loopback_on_lan("127.0.0.1", interfaces)
        assert problem is not None and f"advertised on {where}:" in problem, problem
        assert "other hosts cannot reach it" in problem and "--inbound" in problem


async def test_advertising_loopback_on_loopback_warns_nothing(
    domain: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mesh.discovery")
    async with ZeroconfAdvertiser(LOOPBACK) as advertiser:
        await advertiser.advertise(web_record(domain))
    assert not [r for r in caplog.records if r.name == "mesh.discovery"]


def test_the_registry_is_a_registry(domain: str) -> None:
    assert isinstance(ZeroconfRegistry(LOOPBACK, trust_domain=domain), Registry)


# -- on the wire (loopback) -------------------------------------------------------------------


async def test_advertised_record_is_discovered_with_every_field(domain: str) -> None:
    async with running_registry(domain) as registry, ZeroconfAdvertiser(LOOPBACK) as advertiser:
        advertised = await advertiser.advertise(web_record(domain))
        assert isinstance(advertised, MeshServiceRecord)
        assert advertised.instance is not None and advertised.instance.startswith("web-")
        assert advertiser.advertised() == [advertised]
        await wait_until(registry, lambda: bool(registry.endpoints("web")), 3)
        assert registry.endpoints("web") == (
            Endpoint(
                "web",
                "127.0.0.1",
                8443,
                f"spiffe://{domain}/svc/web",
                (("version", "v1"), ("zone", "rack-1")),
                4191,
            ),
        )
        assert registry.services() == {"web"}
        assert registry.records() == [advertised]  # instance and version came through
        # Advertising the same record again changes nothing.
        assert await advertiser.advertise(web_record(domain)) == advertised


async def test_withdraw_removes_the_record_from_peers_at_once(domain: str) -> None:
    async with running_registry(domain) as registry, ZeroconfAdvertiser(LOOPBACK) as advertiser:
        record = web_record(domain)
        await advertiser.advertise(record)
        await wait_until(registry, lambda: bool(registry.endpoints("web")), 3)
        with trio.fail_after(2):
            assert await advertiser.withdraw(record)  # the record as given works too
            await wait_until(registry, lambda: not registry.services(), 2)
        assert not await advertiser.withdraw(record)
        assert advertiser.advertised() == []


async def test_aclose_withdraws_everything(domain: str) -> None:
    async with running_registry(domain) as registry:
        advertiser = ZeroconfAdvertiser(LOOPBACK)
        await advertiser.advertise(web_record(domain))
        await advertiser.advertise(web_record(domain, port=8444))
        await wait_until(registry, lambda: len(registry.endpoints("web")) == 2, 3)
        await advertiser.aclose()
        await wait_until(registry, lambda: not registry.services(), 2)
        await advertiser.aclose()  # idempotent
        with pytest.raises(RuntimeError, match="closed"):
            await advertiser.advertise(web_record(domain))


async def test_two_services_and_two_instances_of_one(domain: str) -> None:
    reviews = MeshServiceRecord("reviews", f"spiffe://{domain}/svc/reviews", "127.0.0.1", 9001)
    async with running_registry(domain) as registry, ZeroconfAdvertiser(LOOPBACK) as advertiser:
        first = await advertiser.advertise(web_record(domain, port=8443))
        second = await advertiser.advertise(
            web_record(domain, port=8444, labels={"version": "v2"}, admin_port=None)
        )
        await advertiser.advertise(reviews)
        assert first.instance != second.instance
        await wait_until(
            registry,
            lambda: (
                registry.services() == {"web", "reviews"} and len(registry.endpoints("web")) == 2
            ),
            3,
        )
        assert [(e.port, e.label("version"), e.admin_port) for e in registry.endpoints("web")] == [
            (8443, "v1", 4191),
            (8444, "v2", None),
        ]
        assert registry.endpoints("reviews") == (
            Endpoint("reviews", "127.0.0.1", 9001, f"spiffe://{domain}/svc/reviews"),
        )
        assert len(registry.records()) == 3

        await advertiser.withdraw(second)
        await wait_until(registry, lambda: len(registry.endpoints("web")) == 1, 2)
        assert registry.endpoints("web")[0].port == 8443
        assert registry.services() == {"web", "reviews"}


async def test_a_record_changed_in_place_is_updated(domain: str) -> None:
    async with running_registry(domain) as registry, ZeroconfAdvertiser(LOOPBACK) as advertiser:
        advertised = await advertiser.advertise(web_record(domain))
        await wait_until(registry, lambda: bool(registry.endpoints("web")), 3)
        version = registry.version
        changed = web_record(domain, labels={"version": "v2"}, instance=advertised.instance)
        await advertiser.advertise(changed)
        await wait_until(registry, lambda: registry.endpoints("web")[0].label("version") == "v2", 3)
        # An update, not a removal and an addition.
        assert registry.version == version + 1
        assert advertiser.advertised() == [changed]


async def test_malformed_records_are_ignored_with_one_debug_line(
    domain: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mesh.discovery")
    tag = domain.split(".")[0]
    good = {"svc": "web", "id": f"spiffe://{domain}/svc/web", "labels": "", "v": "0.1.0"}
    bad = {
        "bad-svc": {**good, "svc": "Web_1"},
        "no-id": {"svc": "web", "labels": ""},
        "bad-id": {**good, "id": "web"},
        "stolen-id": {**good, "id": f"spiffe://{domain}/svc/payments"},
        "other-domain": {**good, "id": "spiffe://elsewhere.test/svc/web"},
        "bad-labels": {**good, "labels": "version"},
        "bad-admin": {**good, "admin": "http"},
    }
    infos = [
        ServiceInfo(
            MESH_SERVICE_TYPE,
            f"{instance}-{tag}.{MESH_SERVICE_TYPE}",
            port=9000 + index,
            properties=txt,
            server=f"{instance}-{tag}.local.",
            host_ttl=10,
            other_ttl=10,
            parsed_addresses=["127.0.0.1"],
        )
        for index, (instance, txt) in enumerate([*bad.items(), ("good", good)])
    ]

    def ignored() -> list[str]:
        lines = (record.getMessage() for record in caplog.records)
        return [
            line
            for line in lines
            if line.startswith("zeroconf: ignoring") and f"-{tag}._mesh" in line
        ]

    zc = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    )
    try:
        async with running_registry(domain) as registry:
            async with trio.open_nursery() as nursery:
                for info in infos:
                    register = partial(zc.register_service, info, cooperating_responders=True)
                    nursery.start_soon(trio.to_thread.run_sync, register)
            await wait_until(registry, lambda: bool(registry.endpoints("web")), 3)
            with trio.fail_after(3):
                while len(ignored()) < len(bad):
                    await trio.sleep(0.05)
            await trio.sleep(0.5)  # room for a second line, which must not come
            assert len(ignored()) == len(bad), ignored()
            for instance in bad:
                assert sum(f"ignoring {instance}-{tag}." in line for line in ignored()) == 1
            assert registry.services() == {"web"}
            assert [e.port for e in registry.endpoints("web")] == [9000 + len(bad)]
    finally:
        await trio.to_thread.run_sync(zc.close)


async def test_find_controller(domain: str) -> None:
    controller = ControllerRecord(f"spiffe://{domain}/svc/controller", "127.0.0.1", 4190)
    with trio.fail_after(10):
        assert await find_controller(LOOPBACK, timeout=0.5, trust_domain=domain) is None
        async with ZeroconfAdvertiser(LOOPBACK) as advertiser:
            advertised = await advertiser.advertise(controller)
            found = await find_controller(LOOPBACK, timeout=3, trust_domain=domain)
            assert found == advertised
            assert found is not None and found.instance is not None
            assert found.instance.startswith("controller-")
            # A controller of another trust domain is not ours.
            assert await find_controller(LOOPBACK, timeout=0.5, trust_domain="other.test") is None


def test_zeroconf_works_on_loopback() -> None:
    ok, message = zeroconf_works(LOOPBACK, timeout=3.0)
    assert ok, message
    assert message.startswith("advertised and discovered a probe record on 127.0.0.1 in ")


def test_zeroconf_works_says_what_is_wrong() -> None:
    ok, message = zeroconf_works(["192.0.2.200"], timeout=0.5)  # not an address here: never bound
    assert not ok
    assert "192.0.2.200 is not an address of this host" in message


# -- across processes --------------------------------------------------------------------------


class Peer:
    """An advertiser in a Python process of its own (tests/unit/discovery/zeroconf_peer.py)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = bytearray()

    async def line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some()
            if not chunk:
                raise AssertionError(f"the peer exited: {self._buffer.decode()!r}")
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        return line.decode()

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(command.encode() + b"\n")


@asynccontextmanager
async def peer_process(record: MeshServiceRecord, ttl: int | None = None) -> AsyncIterator[Peer]:
    fields = {
        "service": record.service,
        "identity": record.identity,
        "host": record.host,
        "port": record.port,
        "labels": dict(record.labels),
        "admin_port": record.admin_port,
    }
    argv = [sys.executable, str(PEER_SCRIPT), json.dumps(fields)]
    if ttl is not None:
        argv.append(str(ttl))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await trio.lowlevel.open_process(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        yield Peer(process)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    await stream.aclose()


@pytest.mark.process
async def test_discovery_across_processes(domain: str) -> None:
    record = web_record(domain, port=8555)
    with trio.fail_after(15):
        async with peer_process(record) as peer:
            ready = await peer.line()
            assert ready.startswith("ready web-")
            instance = ready.split()[1]
            # The registry starts after the record exists: its browser's query finds it.
            async with running_registry(domain) as registry:
                took = await wait_until(registry, lambda: bool(registry.endpoints("web")), 3)
                assert registry.endpoints("web") == (record.endpoint(),)
                assert [r.instance for r in registry.records()] == [instance]
                await peer.send("withdraw")
                assert await peer.line() == "withdrawn"
                # The goodbye packet, not the 10 s TTL: 5 s leaves room for a loaded CI machine.
                await wait_until(registry, lambda: not registry.services(), 5)
            await peer.send("exit")
            assert await peer.line() == "closed"
            assert await peer.process.wait() == 0
    logging.getLogger(__name__).info("discovered across processes in %.3f s", took)


@pytest.mark.process
async def test_a_killed_peer_expires_by_ttl(domain: str) -> None:
    # With a 2 s TTL (re-announced every 0.6 s) instead of 10 s: the same
    # mechanism, a fifth of the wait.
    record = web_record(domain, port=8556)
    with trio.fail_after(15):
        async with peer_process(record, ttl=2) as peer, running_registry(domain) as registry:
            assert (await peer.line()).startswith("ready ")
            await wait_until(registry, lambda: bool(registry.endpoints("web")), 3)
            # Alive: re-announcements keep it fresh well past its TTL.
            await trio.sleep(3)
            assert registry.endpoints("web") == (record.endpoint(),)
            version = registry.version
            peer.process.send_signal(signal.SIGKILL)  # no goodbye packets
            took = await wait_until(registry, lambda: not registry.services(), 5)
            assert 1 <= took <= 4
            assert registry.version == version + 1


MESH_A, MESH_B = "0123456789abcdef", "fedcba9876543210"


def test_the_mesh_id_travels_in_the_txt_record() -> None:
    from mesh.discovery._zeroconf_records import OtherMesh, _controller_txt, _service_txt, check_mesh

    record = web_record("mesh.local", mesh=MESH_A)
    txt = _service_txt(record)
    assert txt["mesh"] == MESH_A
    properties = {k.encode(): v.encode() for k, v in txt.items()}
    parsed = parse_service_record("web-1." + MESH_SERVICE_TYPE, 8443, ["127.0.0.1"], properties, "mesh.local")
    assert parsed.mesh == MESH_A
    controller = ControllerRecord("spiffe://mesh.local/svc/mesh-controller", "127.0.0.1", 4190, mesh=MESH_B)
    assert _controller_txt(controller)["mesh"] == MESH_B
    with pytest.raises(ValueError, match="mesh id"):
        web_record("mesh.local", mesh="not-hex")
    check_mesh(MESH_A, (MESH_A,))
    check_mesh(None, None)  # no mesh ids given: any record will do
    for mesh in (MESH_B, None):
        with pytest.raises(OtherMesh):
            check_mesh(mesh, (MESH_A,))


async def test_records_of_another_mesh_are_ignored_whatever_their_trust_domain(
    domain: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two meshes that both kept one trust domain name on one LAN (say mesh.local): each lists only
    its own web, and says so at debug level only."""
    caplog.set_level(logging.DEBUG, logger="mesh.discovery")
    ours = ZeroconfRegistry(LOOPBACK, trust_domain=domain, mesh_ids=(MESH_A,))
    async with trio.open_nursery() as nursery, ZeroconfAdvertiser(LOOPBACK) as advertiser:
        await nursery.start(ours.run)
        async with running_registry(domain) as anyone:
            await advertiser.advertise(web_record(domain, port=8601, mesh=MESH_A))
            await advertiser.advertise(web_record(domain, port=8602, mesh=MESH_B))
            await wait_until(anyone, lambda: len(anyone.endpoints("web")) == 2, 3)
            await wait_until(ours, lambda: bool(ours.endpoints("web")), 3)
            await trio.sleep(0.3)
            assert [e.port for e in ours.endpoints("web")] == [8601]
        nursery.cancel_scope.cancel()
    ignored = [r for r in caplog.records if "another mesh" in r.getMessage()]
    assert ignored and all(r.levelno == logging.DEBUG for r in ignored)


async def test_forget_says_goodbye_for_a_peer_that_died(domain: str) -> None:
    """A proxy killed without a goodbye: the controller, told by the proxy's ended watch, sends
    the goodbye for it; other registries drop the record at once instead of after its TTL (10 s)."""
    record = web_record(domain, port=8557)
    with trio.fail_after(20):
        async with peer_process(record) as peer, running_registry(domain) as controller, running_registry(domain) as caller:
            assert (await peer.line()).startswith("ready ")
            await wait_until(controller, lambda: bool(controller.endpoints("web")), 3)
            await wait_until(caller, lambda: bool(caller.endpoints("web")), 3)
            peer.process.send_signal(signal.SIGKILL)
            await peer.process.wait()
            assert await controller.forget("127.0.0.1", 8557) == 1
            assert not controller.endpoints("web")
            took = await wait_until(caller, lambda: not caller.services(), 2)
            assert took < 1.5
            assert await controller.forget("127.0.0.1", 8557) == 0


async def test_a_forgotten_peer_that_lives_comes_back(domain: str) -> None:
    """A goodbye said in error (the proxy only reconnected) heals: its next announcement brings it back."""
    async with running_registry(domain) as registry, ZeroconfAdvertiser(LOOPBACK) as advertiser:
        await advertiser.advertise(web_record(domain, port=8558))
        await wait_until(registry, lambda: bool(registry.endpoints("web")), 3)
        assert await registry.forget("127.0.0.1", 8558) == 1
        took = await wait_until(registry, lambda: bool(registry.endpoints("web")), 6)
        assert took <= 4  # one re-announcement interval (3 s), and some


async def test_a_goodbye_by_name_for_a_record_never_seen(domain: str) -> None:
    """A controller restarted a moment before a proxy died has not resolved its record yet: the
    instance name the proxy registered under is enough for the goodbye."""
    record = web_record(domain, port=8559)
    with trio.fail_after(20):
        async with peer_process(record) as peer, running_registry(domain) as caller:
            instance = (await peer.line()).split()[1]
            await wait_until(caller, lambda: bool(caller.endpoints("web")), 3)
            peer.process.send_signal(signal.SIGKILL)
            await peer.process.wait()
            async with running_registry(f"x{domain}") as controller:  # sees none of these records
                assert await controller.forget("127.0.0.1", 8559, instance) == 0
                took = await wait_until(caller, lambda: not caller.services(), 2)
            assert took < 1.5
