"""The embedded store (SQLite, real files under tmp_path) and the mesh's schema above it (``Durable``)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import trio

from mesh.config import StoreUrlError, parse_config, parse_store_url
from mesh.controller._durable import KEEP_CONFIG_VERSIONS, Durable
from mesh.controller._state import ControllerState, EndpointEntry, TemporaryFault
from mesh.controller._store import Compare, Put, StoreCompacted
from mesh.controller._store_embedded import EmbeddedStore, backup
from mesh.discovery import Endpoint
from mesh.errors import StoreError

TD = "store.test"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def opened(path: Path, clock: Clock | None = None) -> EmbeddedStore:
    store = EmbeddedStore(path, clock or Clock())
    await store.open()
    return store


async def test_commit_compare_and_revisions(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    first = await store.commit([Put("a", b"1")], compares=[Compare("a", 0)])
    assert first == 1
    assert await store.commit([Put("a", b"2")], compares=[Compare("a", 0)]) is None  # exists already
    second = await store.commit([Put("a", b"2"), Put("b", b"x")], compares=[Compare("a", first)])
    assert second == 2
    items, revision = await store.range("")
    assert [(i.key, i.value, i.mod_revision) for i in items] == [("a", b"2", 2), ("b", b"x", 2)]
    assert revision == 2
    assert await store.commit(deletes=["nothing"]) == 2  # no change, no new revision
    await store.aclose()
    again = await opened(tmp_path / "s.db")
    assert (await again.get("a")).value == b"2"  # type: ignore[union-attr]
    assert (await again.range(""))[1] == 2


async def test_leases_expire_keys_and_restart_gives_them_a_full_ttl(tmp_path: Path) -> None:
    clock = Clock()
    store = await opened(tmp_path / "s.db", clock)
    lease = await store.grant(30)
    await store.commit([Put("reg/x", b"x", lease)])
    clock.now += 20
    assert await store.keepalive(lease)
    clock.now += 25
    assert store.expire_leases() == 0  # kept alive 25 s ago
    await store.aclose()
    # A restart: the lease starts again (its holder re-registers within a heartbeat).
    clock.now += 1000
    store = await opened(tmp_path / "s.db", clock)
    assert store.expire_leases() == 0 and await store.get("reg/x") is not None
    clock.now += 31
    assert store.expire_leases() == 1
    assert await store.get("reg/x") is None
    assert not await store.keepalive(lease)


async def test_watch_delivers_changes_after_a_revision_and_says_when_it_fell_behind(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    await store.commit([Put("p/a", b"1")])
    seen: list[tuple[str, bytes | None, int]] = []

    async def follow(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with store.watch("p/", 1) as batches:
            task_status.started()
            async for batch in batches:
                seen.extend((e.key, e.value, e.revision) for e in batch)
                if len(seen) >= 2:
                    return

    async with trio.open_nursery() as nursery:
        await nursery.start(follow)
        await store.commit([Put("q/other", b"-")])  # another prefix: not delivered
        await store.commit([Put("p/b", b"2")], ["p/a"])
    assert seen == [("p/b", b"2", 3), ("p/a", None, 3)]
    await store.aclose()
    reopened = await opened(tmp_path / "s.db")
    with pytest.raises(StoreCompacted):
        async with reopened.watch("p/", 0):
            pass


async def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="is corrupt") as info:
        await opened(path)
    assert info.value.hint and "backup" in info.value.hint


async def test_a_store_of_a_newer_mesh_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await opened(path)
    await store.aclose()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE name = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer mesh"):
        await opened(path)


async def test_backup_is_a_consistent_copy_while_open(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    await store.commit([Put("k", b"v")])
    size = backup(tmp_path / "s.db", tmp_path / "copy.db")
    assert size > 0
    copy = await opened(tmp_path / "copy.db")
    assert (await copy.get("k")).value == b"v"  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="no embedded store"):
        backup(tmp_path / "absent.db", tmp_path / "x.db")


# -- the schema above the store ------------------------------------------------------


async def durable_on(store: EmbeddedStore, fingerprint: str = "sha256:aa") -> Durable:
    durable = Durable(store, ControllerState(trust_domain=TD), "mesh/")
    await durable.open(fingerprint, "token-of-this-controller")
    return durable


def config(timeout: str):  # noqa: ANN201 - a MeshConfig
    return parse_config({"mesh": {"trust_domain": TD}, "route": [{"service": "web", "timeout": timeout}]})


async def test_config_versions_are_compare_and_swap_between_controllers(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    one, two = await durable_on(store), await durable_on(store)
    assert await one.apply_config(config("1s"), "a.toml", "ada") == (1, True)
    # `two` has not seen version 1 yet (no watch here): it must not overwrite it as "version 1".
    assert await two.apply_config(config("2s"), "b.toml", "bob") == (2, True)
    assert await one.apply_config(config("2s"), "b.toml", "ada") == (2, False)  # unchanged
    assert one.state.config_version == 2 and one.state.config.routes[0].timeout == 2.0
    history = await one.history()
    assert [(r.version, r.source, r.applied_by) for r in history] == [(2, "b.toml", "bob"), (1, "a.toml", "ada")]


async def test_history_keeps_the_last_versions(tmp_path: Path) -> None:
    durable = await durable_on(await opened(tmp_path / "s.db"))
    for n in range(KEEP_CONFIG_VERSIONS + 5):
        await durable.apply_config(config(f"{n + 1}s"), f"{n}.toml", "ada")
    versions = [r.version for r in await durable.history()]
    assert len(versions) == KEEP_CONFIG_VERSIONS and versions[0] == KEEP_CONFIG_VERSIONS + 5
    assert await durable.config_at(1) is None
    kept = await durable.config_at(versions[-1])
    assert kept is not None and kept.config["route"][0]["timeout"] == f"{versions[-1]}s"


async def test_restart_loads_config_registrations_and_faults(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    durable = await durable_on(store)
    await durable.apply_config(config("3s"), "a.toml", "ada")
    endpoint = Endpoint(service="web", host="127.0.0.1", port=4143, identity=f"spiffe://{TD}/svc/web")
    await durable.register(EndpointEntry(endpoint, "web-1", "registration", version="0.1.0"), 30)
    await durable.set_fault(TemporaryFault("web", expires_at=4e9, abort_status=503))
    await store.aclose()

    again = await durable_on(await opened(tmp_path / "s.db"))
    assert again.state.config_version == 1 and again.state.config.routes[0].timeout == 3.0
    assert [e.instance for e in again.state.entries()] == ["web-1"]
    assert again.state.faults["web"].abort_status == 503


async def test_a_heartbeat_writes_nothing(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    durable = await durable_on(store)
    endpoint = Endpoint(service="web", host="127.0.0.1", port=4143)
    entry = EndpointEntry(endpoint, "web-1", "registration")
    assert await durable.register(entry, 30)
    revision = (await store.range(""))[1]
    assert not await durable.register(entry, 30)  # the lease is kept alive, in memory
    assert (await store.range(""))[1] == revision
    moved = EndpointEntry(Endpoint(service="web", host="127.0.0.1", port=4144), "web-1", "registration")
    assert await durable.register(moved, 30)
    assert (await store.range(""))[1] == revision + 1


async def test_changes_made_through_another_controller_arrive_by_the_watch(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    here, there = await durable_on(store), await durable_on(store)
    changes: list[int] = []
    here.on_change = lambda: changes.append(here.state.config_version)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(here._follow)
        await there.apply_config(config("5s"), "c.toml", "carol")
        await there.register(EndpointEntry(Endpoint(service="db", host="127.0.0.1", port=5432), "db-1", "registration"), 30)
        with trio.fail_after(2):
            while not changes or [e.instance for e in here.state.entries()] != ["db-1"]:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert here.state.config_version == 1 and here.state.config.routes[0].timeout == 5.0


async def test_a_store_of_another_ca_is_refused_and_the_join_token_is_shared(tmp_path: Path) -> None:
    store = await opened(tmp_path / "s.db")
    first = Durable(store, ControllerState(trust_domain=TD), "mesh/")
    assert await first.open("sha256:aa", "first-token") == "first-token"
    second = Durable(store, ControllerState(trust_domain=TD), "mesh/")
    assert await second.open("sha256:aa", "second-token") == "first-token"
    other = Durable(store, ControllerState(trust_domain=TD), "mesh/")
    with pytest.raises(StoreError, match="belongs to another mesh") as info:
        await other.open("sha256:bb", "x")
    assert "sha256:aa" in info.value.message and "sha256:bb" in info.value.message
    assert info.value.hint and "copy the mesh's CA" in info.value.hint
    elsewhere = Durable(store, ControllerState(trust_domain=TD), "other/")
    await elsewhere.open("sha256:bb", "x")  # another prefix is another mesh's


# -- store URLs ------------------------------------------------------------------------


def test_store_urls() -> None:
    assert parse_store_url("embedded").embedded
    url = parse_store_url("etcds://10.0.0.1:2379,[::1]:2379/prod?ca=/ca.pem&cert=/c.pem&key=/k.pem")
    assert url.endpoints == (("10.0.0.1", 2379), ("::1", 2379))
    assert url.prefix == "/prod/" and url.tls and url.cert == "/c.pem"
    assert url.describe() == "etcds://10.0.0.1:2379,[::1]:2379/prod"
    assert parse_store_url("etcd://h:1").prefix == "/mesh/"
    plain = parse_store_url("etcd://h:1?user=mesh&password_file=/p")
    assert plain.user == "mesh" and "password" not in plain.describe()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mysql://h:1", "etcd:// or etcds://"),
        ("etcd://", "host:port"),
        ("etcd://h", "host:port"),
        ("etcd://h:1?ca=x", "etcds://"),
        ("etcds://h:1?cert=x", "cert and key together"),
        ("etcd://h:1?password=x", "unknown option 'password'"),
        ("etcd://h:1?password_file=x", "user together"),
        ("etcd://h:1?user=", "a value for option 'user'"),
    ],
)
def test_bad_store_urls(text: str, message: str) -> None:
    with pytest.raises(StoreUrlError, match=message.replace("(", r"\(")):
        parse_store_url(text)


def test_control_table_errors_have_key_paths() -> None:
    from mesh.config import ConfigInvalid, load_config_text

    with pytest.raises(ConfigInvalid) as info:
        load_config_text('[control]\nstore = "etcd://a"\nbackend = 1\n', "mesh.toml")
    lines = [str(i) for i in info.value.issues]
    assert any(line.startswith("mesh.toml: control.store: expected \"embedded\" or an etcd URL") for line in lines)
    assert any("control.backend: unknown key" in line for line in lines)
    assert load_config_text('[control]\nstore = "etcd://a:2379"\n', "m").control.store == "etcd://a:2379"
    json.dumps(load_config_text("", "m").to_dict())  # [control] travels as JSON too
