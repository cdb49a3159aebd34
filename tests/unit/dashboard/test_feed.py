"""The feed: what it asks the controller, what it publishes, and how it says the controller is gone."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from mesh.dashboard._feed import Feed, Periods
from mesh.dashboard._model import Topics
from mesh.errors import ControllerError

STATUS = {"controller": {"state_version": 1, "address": "127.0.0.1:4190"}, "services": {}, "watches": [], "faults": []}
STATS = {"time": 1000.0, "services": [{"service": "web", "version": None, "rps": 1.0, "latency_ms": {}}], "versions": [], "edges": [], "proxies": []}
CONFIG = {"version": 2, "config": {"route": [{"service": "web", "name": "r"}], "policy": []}}
ROUTES = {"service": "web", "routes": [{"name": "r", "requests": 3}], "unreachable": []}


class FakeLink:
    def __init__(self) -> None:
        self.asked: list[str] = []
        self.down = False

    async def get(self, path: str, what: str) -> Any:
        self.asked.append(path)
        if self.down:
            raise ControllerError("cannot connect to the controller at 127.0.0.1:4190: connection refused")
        for prefix, answer in (("/v1/status", STATUS), ("/v1/stats", STATS), ("/v1/config", CONFIG), ("/v1/routes", ROUTES)):
            if path.startswith(prefix):
                return answer
        raise AssertionError(path)


async def test_topics_from_the_controller_and_the_link_going_and_coming_back(autojump_clock: trio.testing.MockClock) -> None:
    link = FakeLink()
    topics = Topics()

    def run_check() -> dict[str, Any]:  # runs in a worker thread: tested below, with the real clock
        return {"categories": [], "success": True}

    feed = Feed(link, topics, run_check, Periods(), clock=trio.current_time)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed.run)
        await trio.sleep(11)
        state = topics.state()
        assert {"link", "status", "faults", "stats", "history", "routes"} <= set(state)
        assert state["link"]["connected"] is True
        assert state["routes"]["services"] == {"web": ROUTES["routes"]}
        assert "/v1/stats?window=60" in link.asked and "/v1/stats?window=10" in link.asked
        assert "/v1/routes?service=web" in link.asked
        assert len(state["history"]["series"]["web"][""]) == 2  # at 0 s and 10 s

        link.down = True
        await trio.sleep(3)
        assert topics.get("link")["connected"] is False
        assert "connection refused" in topics.get("link")["error"]
        assert topics.get("status") == state["status"]  # the last known picture stays on the page

        link.down = False
        await trio.sleep(3)
        assert topics.get("link")["connected"] is True
        nursery.cancel_scope.cancel()


async def test_a_check_that_cannot_run_says_why() -> None:
    from mesh.errors import MeshError

    def run_check() -> dict[str, Any]:
        raise MeshError("no operator identity in /x/operator", hint="`mesh up` creates it")

    topics = Topics()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Feed(FakeLink(), topics, run_check).run)  # type: ignore[arg-type]
        with trio.fail_after(10):
            while topics.get("check") is None:
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    check = topics.get("check")
    assert check["error"].startswith("no operator identity") and check["hint"] == "`mesh up` creates it"
    assert topics.get("link")["connected"] is True  # the check's failure is not the controller's


async def test_an_error_answer_is_not_a_lost_controller(autojump_clock: trio.testing.MockClock) -> None:
    from mesh.dashboard._feed import RefusedAnswer

    class RefusingStats(FakeLink):
        async def get(self, path: str, what: str) -> Any:
            if path.startswith("/v1/stats"):
                raise RefusedAnswer("stats: internal error")
            return await super().get(path, what)

    topics = Topics()
    published: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Feed(RefusingStats(), topics, lambda: {}, clock=trio.current_time).run)  # type: ignore[arg-type]
        for _ in range(30):  # every poll runs several times; the link topic must not flap between them
            await trio.sleep(1)
            published.append(topics.get("link"))
        nursery.cancel_scope.cancel()
    assert published[-1]["connected"] is True and published[-1]["error"] == "stats: internal error"
    assert len({p["since"] for p in published[1:]}) == 1  # said once, not again at every poll
