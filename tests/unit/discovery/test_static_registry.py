from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import trio

from mesh.discovery import Endpoint, Registry, StaticFileRegistry
from mesh.errors import DiscoveryError

ONE = '[[endpoint]]\nservice = "web"\naddress = "127.0.0.1:8001"\n'
TWO = (
    ONE
    + '\n[[endpoint]]\nservice = "web"\naddress = "127.0.0.1:8002"\nlabels = { version = "v2" }\n'
)
BROKEN = '[[endpoint]]\nservice = "web"\naddress = "127.0.0.1"\n'

WEB_1 = Endpoint("web", "127.0.0.1", 8001)
WEB_2 = Endpoint("web", "127.0.0.1", 8002, labels=(("version", "v2"),))


def replace_file(path: Path, text: str) -> None:
    """Write like an editor or a deploy tool does: a new file moved into place."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def wait_for_version(registry: StaticFileRegistry, version: int) -> int:
    with trio.fail_after(5):
        return await registry.wait_changed(version)


def test_loads_in_the_constructor(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.toml"
    path.write_text(ONE)
    registry = StaticFileRegistry(path)
    assert isinstance(registry, Registry)
    assert registry.endpoints("web") == (WEB_1,)
    assert registry.version == 1
    assert registry.path == path


def test_a_bad_file_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.toml"
    with pytest.raises(DiscoveryError, match="endpoints file not found"):
        StaticFileRegistry(path)
    path.write_text(BROKEN)
    with pytest.raises(DiscoveryError, match=r"endpoint\[0\]\.address: expected host:port"):
        StaticFileRegistry(path)
    path.write_text(ONE)
    with pytest.raises(ValueError, match="poll_interval must be positive"):
        StaticFileRegistry(path, poll_interval=0)


async def test_picks_up_changes_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.toml"
    path.write_text(ONE)
    registry = StaticFileRegistry(path, poll_interval=0.1)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        version = registry.version

        replace_file(path, TWO)  # new inode
        with trio.fail_after(1):
            version = await registry.wait_changed(version)
        assert registry.endpoints("web") == (WEB_1, WEB_2)

        path.write_text(ONE)  # written in place: same inode, other size
        with trio.fail_after(1):
            version = await registry.wait_changed(version)
        assert registry.endpoints("web") == (WEB_1,)

        # Same size, same inode, written within the same second: the bytes decide.
        path.write_text(ONE.replace("8001", "8003"))
        with trio.fail_after(1):
            await registry.wait_changed(version)
        assert registry.endpoints("web") == (Endpoint("web", "127.0.0.1", 8003),)
        nursery.cancel_scope.cancel()


async def test_keeps_the_last_good_endpoints_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh.discovery")
    path = tmp_path / "endpoints.toml"
    path.write_text(TWO)
    registry = StaticFileRegistry(path, poll_interval=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        version = registry.version

        replace_file(path, BROKEN)
        await trio.sleep(0.5)  # ten polls of a broken file
        assert registry.version == version
        assert registry.endpoints("web") == (WEB_1, WEB_2)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, "a broken file is reported once, not on every poll"
        [warning] = warnings
        assert warning.name == "mesh.discovery"
        assert "\n" not in warning.getMessage()
        assert warning.getMessage() == (
            f'{path}: endpoint[0].address: expected host:port, found "127.0.0.1" (missing port); '
            "keeping the last good endpoints (2 endpoints of 1 service)"
        )

        replace_file(path, ONE)
        version = await wait_for_version(registry, version)
        assert registry.endpoints("web") == (WEB_1,)
        assert f"endpoints file {path} is good again: 1 endpoint of 1 service" in caplog.messages
        nursery.cancel_scope.cancel()


async def test_a_vanished_file_keeps_the_endpoints_until_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh.discovery")
    path = tmp_path / "endpoints.toml"
    path.write_text(ONE)
    registry = StaticFileRegistry(path, poll_interval=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        version = registry.version

        path.unlink()
        await trio.sleep(0.3)
        assert registry.endpoints("web") == (WEB_1,)
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
            (
                f"endpoints file {path} disappeared; keeping the last good endpoints "
                "(1 endpoint of 1 service)"
            )
        ]

        path.write_text(TWO)
        await wait_for_version(registry, version)
        assert registry.endpoints("web") == (WEB_1, WEB_2)
        nursery.cancel_scope.cancel()


def test_reload_if_changed_without_a_loop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mesh.discovery")
    path = tmp_path / "endpoints.toml"
    path.write_text(ONE)
    registry = StaticFileRegistry(path)
    assert not registry.reload_if_changed()  # unchanged
    path.write_text(BROKEN)
    assert not registry.reload_if_changed()
    assert not registry.reload_if_changed()
    path.write_text(ONE)  # back to the last good bytes: nothing to apply, but it is good again
    assert not registry.reload_if_changed()
    assert registry.version == 1
    path.write_text(TWO)
    assert registry.reload_if_changed()
    assert registry.version == 2
    messages = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
    assert messages == [
        ("WARNING", str(path)),
        ("INFO", f"endpoints file {path} is good again"),
        ("INFO", f"reloaded endpoints file {path}"),
    ]
