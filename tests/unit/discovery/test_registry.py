from __future__ import annotations

import pytest
import trio
import trio.testing

from mesh.discovery import Endpoint, MemoryRegistry, Registry

WEB_1 = Endpoint("web", "127.0.0.1", 8001)
WEB_2 = Endpoint("web", "127.0.0.1", 8002)
API_1 = Endpoint("api", "::1", 9001, labels=(("version", "v1"),))


def test_memory_registry_is_a_registry() -> None:
    assert isinstance(MemoryRegistry(), Registry)


def test_lookups_and_versions() -> None:
    registry = MemoryRegistry()
    assert registry.version == 0
    assert registry.endpoints("web") == ()
    assert registry.services() == frozenset()

    assert registry.set_endpoints("web", [WEB_1, WEB_2])
    assert registry.version == 1
    assert registry.endpoints("web") == (WEB_1, WEB_2)
    assert registry.services() == {"web"}

    assert registry.set_endpoints("api", [API_1])
    assert registry.version == 2
    assert registry.services() == {"web", "api"}

    assert registry.remove("api")
    assert registry.version == 3
    assert registry.endpoints("api") == ()
    assert not registry.remove("api")  # nothing to remove: no change
    assert registry.version == 3


def test_lookups_return_the_same_tuple_until_a_change() -> None:
    registry = MemoryRegistry({"web": [WEB_1], "api": [API_1]})
    web = registry.endpoints("web")
    services = registry.services()
    assert registry.endpoints("web") is web
    assert registry.services() is services

    registry.set_endpoints("api", [API_1, Endpoint("api", "::1", 9002)])
    # An unrelated change keeps the web tuple and the service set.
    assert registry.endpoints("web") is web
    assert registry.services() is services

    registry.set_endpoints("web", [WEB_2])
    assert registry.endpoints("web") == (WEB_2,)


def test_updates_that_change_nothing_keep_the_version() -> None:
    registry = MemoryRegistry({"web": [WEB_1]})
    version = registry.version
    assert not registry.set_endpoints("web", [Endpoint("web", "127.0.0.1", 8001)])
    assert not registry.replace_all({"web": (WEB_1,)})
    assert registry.version == version


def test_empty_endpoints_remove_the_service() -> None:
    registry = MemoryRegistry({"web": [WEB_1], "api": [API_1]})
    registry.set_endpoints("web", [])
    assert registry.services() == {"api"}
    registry.replace_all({"web": [WEB_1], "api": []})
    assert registry.services() == {"web"}
    assert registry.snapshot() == {"web": (WEB_1,)}


def test_replace_all_is_one_change() -> None:
    registry = MemoryRegistry({"web": [WEB_1]})
    before = registry.version
    assert registry.replace_all({"api": [API_1], "web": [WEB_1, WEB_2]})
    assert registry.version == before + 1
    assert registry.snapshot() == {"api": (API_1,), "web": (WEB_1, WEB_2)}


def test_endpoints_must_belong_to_the_service() -> None:
    registry = MemoryRegistry()
    with pytest.raises(ValueError, match="of service 'api' listed under 'web'"):
        registry.set_endpoints("web", [API_1])
    assert registry.version == 0


async def test_wait_changed_returns_at_once_when_already_different() -> None:
    registry = MemoryRegistry({"web": [WEB_1]})
    with trio.testing.assert_checkpoints():
        assert await registry.wait_changed(0) == 1


async def test_wait_changed_wakes_every_waiter_on_a_change() -> None:
    registry = MemoryRegistry()
    seen: list[int] = []

    async def waiter() -> None:
        seen.append(await registry.wait_changed(registry.version))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert seen == []
            registry.set_endpoints("web", [WEB_1])  # no-op updates would not wake them
            assert not registry.set_endpoints("web", [WEB_1])
    assert seen == [1, 1]


async def test_wait_changed_loop_sees_each_change() -> None:
    registry = MemoryRegistry()
    versions: list[int] = []

    async def watch() -> None:
        version = registry.version
        while version < 3:
            version = await registry.wait_changed(version)
            versions.append(version)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            for endpoints in ([WEB_1], [WEB_2], []):
                await trio.testing.wait_all_tasks_blocked()
                registry.set_endpoints("web", endpoints)
    assert versions == [1, 2, 3]
