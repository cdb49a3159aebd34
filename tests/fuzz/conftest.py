"""One set of live processes per fuzz module, inside a network namespace (see harness.py)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest

from tests.fuzz.harness import (
    ANY_DOOR,
    FUZZ_DIR,
    RECORDING_APP,
    Door,
    Findings,
    FrontDoors,
    Ledger,
    LogWatch,
    client_context,
)
from tests.fuzz.sandbox import NamespaceDialer
from tests.integration import netns
from tests.integration.conftest import port_of


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/fuzz/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.fuzz)


@pytest.fixture(scope="module")
def front(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontDoors]:
    """The client proxy's outbound listener, the web proxy's inbound and a gateway, all in
    front of one recording app, in a namespace of their own; the fuzzer dials in from here."""
    reason = netns.unavailable()
    if reason:
        pytest.fail(f"the fuzz suite runs its proxies in a network namespace: {reason}")
    tmp = tmp_path_factory.mktemp("fuzz")
    network = netns.Network(tmp)
    dialer: NamespaceDialer | None = None
    try:
        host = network.add_host("fuzz")
        host.init_ca()
        records = tmp / "app-records.jsonl"
        records.touch()
        app = host.spawn("app-web", [sys.executable, str(RECORDING_APP), str(records)])
        app_port = int(app.wait_for(r"listening \S+:(\d+)").group(1))
        web = host.proxy("web", app_port, extra=["--no-zeroconf"])
        endpoints = host.write_endpoints([("web", web.inbound)])
        client = host.proxy("client", app_port, endpoints=endpoints, extra=["--no-zeroconf"])
        gateway = host.spawn(
            "gateway",
            [sys.executable, "-m", "mesh", "gateway", "--to", "web", "--listen", "127.0.0.1:0",
             "--endpoints", str(endpoints), "--no-zeroconf"],
        )
        gateway_port = port_of(gateway.wait_for(r"ready: .*listen http (\S+?)(?:,|$)").group(1))
        issued = host.mesh("ca", "issue", "fuzzer", "--out", str(tmp / "fuzzer"))
        assert issued.returncode == 0, issued.stderr
        dialer = NamespaceDialer(host.netns)
        processes = [client.process, web.process, gateway, app]
        front = FrontDoors(
            dialer=dialer,
            doors={
                "outbound": Door("outbound", client.outbound, b"web"),
                "inbound": Door("inbound", web.inbound, b"web", tls=client_context(tmp / "fuzzer")),
                "gateway": Door("gateway", gateway_port, b"web"),
            },
            logs=LogWatch(processes),
            ledger=Ledger(records, {host.spiffe(caller) for caller in ("client", "gateway", "fuzzer")}),
            findings=Findings(),
            processes=processes,
        )
        yield front
        # Late arrivals: whatever reached the app after the last example is checked too.
        time.sleep(0.3)
        front.findings.verdict(front.ledger.problems() + front.logs.problems(), ANY_DOOR, b"", "after the last example")
    finally:
        if FUZZ_DIR is not None and "front" in locals():
            front.findings.write(FUZZ_DIR, request.module.__name__)
        if dialer is not None:
            dialer.close()
        network.close()


@pytest.fixture(params=["outbound", "inbound", "gateway"])
def door(request: pytest.FixtureRequest, front: FrontDoors) -> Door:
    return front.doors[request.param]
