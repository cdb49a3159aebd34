"""Access logs from real proxies: one JSON line per request and proxy, every request of a run found
in them with its fields, query values redacted; a file shared by proxies, or stdout."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Cluster
from tests.integration.test_control_plane import wait_for
from tests.integration.test_traffic import metric

pytestmark = pytest.mark.timeout(120)

TRACE = "0af7651916cd43dd8448eb211c80319c"


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_request_of_a_run_is_in_the_logs_with_its_fields(cluster: Cluster) -> None:
    cluster.init_ca()
    log = cluster.tmp / "access.log"  # both proxies append to one file
    flags = ["--access-log", str(log)]
    web = cluster.proxy("web", cluster.app("http", "web"), extra=flags)
    endpoints = cluster.write_endpoints([("web", web.inbound)])
    client = cluster.proxy("client", cluster.app("http", "client"), endpoints=endpoints, extra=flags)
    sent: dict[str, dict] = {}
    with requests.Session() as session:
        session.proxies = {"http": client.proxy_url}
        for n in range(30):
            rid = f"get-{n}"
            headers = {"x-request-id": rid, **({"traceparent": f"00-{TRACE}-{n + 1:016x}-01"} if n % 2 else {})}
            answer = session.get(f"http://web/?token=secret{n}&page={n}", headers=headers, timeout=10)
            sent[rid] = {"method": "GET", "status": answer.status_code, "traced": bool(n % 2), "out": len(answer.content)}
        for n in range(5):
            rid = f"post-{n}"
            answer = session.post("http://web/upload", data=b"p" * 5000, headers={"x-request-id": rid}, timeout=10)
            sent[rid] = {"method": "POST", "status": answer.status_code, "traced": False, "out": len(answer.content)}
        for n in range(3):
            rid = f"missing-{n}"
            answer = session.get(f"http://web/status?code=404&n={n}", headers={"x-request-id": rid}, timeout=10)
            sent[rid] = {"method": "GET", "status": answer.status_code, "traced": False, "out": len(answer.content)}
        for n in range(2):
            rid = f"nowhere-{n}"
            answer = session.get("http://nothere/", headers={"x-request-id": rid}, timeout=10)
            sent[rid] = {"method": "GET", "status": answer.status_code, "traced": False, "out": len(answer.content)}
    assert {v["status"] for k, v in sent.items() if k.startswith("missing")} == {404}
    assert {v["status"] for k, v in sent.items() if k.startswith("nowhere")} == {503}
    expected = 2 * len(sent) - 2  # every request twice (outbound, inbound), except the two the mesh refused
    lines = wait_for(lambda: len(read_lines(log)) >= expected and read_lines(log), 10, "every line")
    assert len(lines) == expected
    seen: dict[str, dict[str, dict]] = defaultdict(dict)
    for line in lines:
        seen[line["request_id"]][line["direction"]] = line
    assert set(seen) == set(sent)
    for rid, request in sent.items():
        sides = seen[rid]
        assert set(sides) == ({"outbound"} if rid.startswith("nowhere") else {"outbound", "inbound"}), rid
        for direction, line in sides.items():
            assert "secret" not in json.dumps(line)
            assert datetime.fromisoformat(line["time"].replace("Z", "+00:00")).year >= 2024
            assert line["method"] == request["method"] and line["status"] == request["status"]
            assert line["authority"] in ("web", "nothere") and line["duration_ms"] > 0
            assert line["bytes_out"] > request["out"]  # the head and the body
            assert line["retries"] == 0 and line["grpc_status"] is None
            if request["traced"]:
                assert line["trace_id"] == TRACE
            if direction == "outbound":
                assert line["proxy"] == "client" and line["src_identity"] == cluster.spiffe("client")
            else:
                assert line["proxy"] == "web" and line["src_identity"] == cluster.spiffe("client")
                assert line["dst_identity"] == cluster.spiffe("web") and line["tls"] is True
            if rid.startswith("get"):
                n = rid.split("-")[1]
                assert line["path"] == "/?token=REDACTED&page=REDACTED" and line["dst_service"] == "web"
                assert int(n) >= 0
            if rid.startswith("post"):
                assert line["bytes_in"] >= 5000 and line["path"] == "/upload"
            if rid.startswith("nowhere"):
                assert line["mesh_error"] == "no-endpoints" and line["dst_service"] == "nothere"
                assert line["dst_address"] is None
            else:
                assert line["mesh_error"] is None
        if "inbound" in sides:
            assert sides["outbound"]["dst_address"] == f"127.0.0.1:{web.inbound}"
            assert sides["inbound"]["dst_address"].startswith("127.0.0.1:")  # the app
    assert metric(client, "access_log_lines_total") == len(sent)
    assert metric(web, "access_log_lines_total") == len(sent) - 2
    assert metric(client, "access_log_dropped_lines_total") == 0


def test_access_log_on_stdout(cluster: Cluster) -> None:
    cluster.init_ca()
    web = cluster.proxy("web", cluster.app("http", "web"), extra=["--access-log", "-"])
    endpoints = cluster.write_endpoints([("web", web.inbound)])
    client = cluster.proxy("client", cluster.app("http", "client"), endpoints=endpoints)
    for n in range(3):
        assert requests.get(f"http://web/?n={n}", proxies={"http": client.proxy_url}, headers={"x-request-id": f"r{n}"},
                            timeout=10).status_code == 200

    def logged() -> list[dict]:
        return [json.loads(line) for line in web.process.log().splitlines() if line.startswith("{")]

    lines = wait_for(lambda: len(logged()) >= 3 and logged(), 10, "lines on stdout")
    assert [(line["request_id"], line["direction"], line["path"]) for line in lines] == [
        (f"r{n}", "inbound", "/?n=REDACTED") for n in range(3)
    ]
    # The proxy's own log lines (stderr) are not mixed into JSON lines.
    assert any("ready" in line for line in web.process.log().splitlines() if not line.startswith("{"))
    time.sleep(0.1)
