"""`mesh inject` and `mesh gateway` with real processes and real clients."""

from __future__ import annotations

import json
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Cluster, port_of

pytestmark = pytest.mark.timeout(120)

MESH = [sys.executable, "-m", "mesh"]


def up(cluster: Cluster) -> None:
    cluster.init_ca()
    result = cluster.mesh("up", "--detach", "--listen", "127.0.0.1:0", "-o", "json")
    assert result.returncode == 0, result.stderr
    from tests.integration.test_control_plane import _adopt

    cluster.processes.append(_adopt(cluster, "mesh", json.loads(result.stdout)["pid"]))


def write_script(tmp: Path, name: str, body: str) -> Path:
    path = tmp / name
    path.write_text(textwrap.dedent(body))
    return path


HTTP_SERVER = """
    import os, sys
    from http.server import ThreadingHTTPServer, SimpleHTTPRequestHandler
    class Handler(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a): pass
        def do_GET(self):
            body = ("hello from " + os.environ["MESH_SERVICE"] + " caller=" + self.headers.get("mesh-client-id", "-") + "\\n").encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def test_injected_services_reach_each_other(cluster: Cluster, tmp_path: Path) -> None:
    up(cluster)
    server = write_script(tmp_path, "server.py", HTTP_SERVER)
    web = cluster.spawn("inject-web", [*MESH, "inject", "--name", "web", "--health", "/", "--", sys.executable, str(server)])
    web.wait_for("app is ready", timeout=20)
    client_script = write_script(
        tmp_path,
        "client.py",
        """
        import os, subprocess, sys, time, requests
        deadline = time.monotonic() + 10
        while True:  # discovery takes a moment after web is advertised
            r = requests.get("http://web/", timeout=5)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        print("requests:", r.status_code, r.text.strip())
        r = requests.get(os.environ["MESH_UPSTREAM_WEB_URL"] + "/", timeout=5)
        print("upstream:", r.status_code, r.text.strip())
        out = subprocess.run(["curl", "-sS", "http://web.mesh/"], capture_output=True, text=True, timeout=10)
        print("curl:", out.stdout.strip())
        sys.exit(0 if "caller=spiffe://" in out.stdout else 5)
        """,
    )
    client = cluster.spawn(
        "inject-client", [*MESH, "inject", "--name", "client", "--upstream", "web", "--", sys.executable, str(client_script)]
    )
    assert client.popen.wait(30) == 0, client.log()
    log = client.log()
    caller = f"caller={cluster.spiffe('client')}"
    assert f"requests: 200 hello from web {caller}" in log
    assert f"upstream: 200 hello from web {caller}" in log
    assert f"curl: hello from web {caller}" in log
    # The sidecar's own lines are prefixed; the app's output passes through unchanged.
    assert "[mesh inject client] INFO" in log
    assert any(line.startswith("requests: ") for line in log.splitlines())


def test_log_format_json_reaches_the_lean_sidecar(cluster: Cluster) -> None:
    """`mesh --log-format json inject …`: typer parses it, then the sidecar runs in a re-exec'd lean
    process (mesh/cli/_sidecar.py), which learns the format from MESH_LOG_FORMAT. Every sidecar
    line is one JSON object; the app's own output passes through as it is."""
    cluster.init_ca()
    script = "import sys; print('the app speaks', flush=True); sys.exit(3)"
    argv = [*MESH, "--log-format", "json", "inject", "--name", "talker", "--no-zeroconf", "--", sys.executable, "-c", script]
    inject = cluster.spawn("json", argv)
    assert inject.popen.wait(30) == 3, inject.log()
    lines = inject.log().splitlines()
    assert "the app speaks" in lines
    events = [json.loads(line) for line in lines if line != "the app speaks"]
    assert events and all(e["component"] == "inject talker" and e["ts"].endswith("Z") for e in events), lines
    assert any(e["msg"].startswith("proxy talker ready: inbound 127.0.0.1:") for e in events), lines


def test_exit_status_and_signals_pass_through(cluster: Cluster, tmp_path: Path) -> None:
    cluster.init_ca()
    seven = cluster.spawn("seven", [*MESH, "inject", "--no-zeroconf", "--", sys.executable, "-c", "import sys; sys.exit(7)"])
    assert seven.popen.wait(30) == 7
    trap = write_script(
        tmp_path,
        "trap.py",
        """
        import os, signal, socket, sys, time
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen()
        def bye(signum, frame):
            print("app got", signal.Signals(signum).name, flush=True)
            sys.exit(42)
        signal.signal(signal.SIGTERM, bye)
        print("app listening", flush=True)
        while True:
            time.sleep(1)
        """,
    )
    app = cluster.spawn("trap", [*MESH, "inject", "--name", "trap", "--no-zeroconf", "--", sys.executable, str(trap)])
    app.wait_for("app is ready")
    # Longer than trio's idle worker threads live: the app must not die with the
    # thread that forked it (PR_SET_PDEATHSIG is per thread).
    time.sleep(11)
    assert "app got" not in app.log()
    app.popen.send_signal(signal.SIGTERM)
    assert app.popen.wait(20) == 42
    log = app.log()
    assert "app got SIGTERM" in log
    assert log.index("withdrawing") < log.index("app got SIGTERM")


def test_failures_are_clear(cluster: Cluster, tmp_path: Path) -> None:
    cluster.init_ca()
    missing = cluster.mesh("inject", "--no-zeroconf", "--", "no-such-command-xyz")
    assert missing.returncode == 127
    assert "command not found: no-such-command-xyz" in missing.stderr
    # An app that never opens its port: given up on, port named, non-zero.
    silent = cluster.mesh(
        "inject", "--no-zeroconf", "--port", "45999", "--ready-timeout", "1", "--", sys.executable, "-c", "import time; time.sleep(30)"
    )
    assert silent.returncode == 1
    assert "did not open port 45999 within 1s" in silent.stderr
    # A sidecar that cannot start: the app never starts.
    marker = tmp_path / "started"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        blocked = cluster.mesh(
            "inject", "--no-zeroconf", "--admin", f"127.0.0.1:{port}", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"
        )
    assert blocked.returncode == 1
    assert f"cannot listen for admin on 127.0.0.1:{port}" in blocked.stderr
    assert not marker.exists()


def test_gateway_routes_outside_traffic_into_the_mesh(cluster: Cluster, tmp_path: Path) -> None:
    up(cluster)
    server = write_script(tmp_path, "server.py", HTTP_SERVER)
    web = cluster.spawn("inject-web", [*MESH, "inject", "--name", "web", "--", sys.executable, str(server)])
    web.wait_for("app is ready", timeout=20)
    gateway = cluster.spawn("gateway", [*MESH, "gateway", "--listen", "127.0.0.1:0", "--to", "web"])
    ready = gateway.wait_for(r"listen http (\S+)")
    port = port_of(ready.group(1))
    admin = port_of(gateway.wait_for(r"admin (\S+?),").group(1))
    deadline = time.monotonic() + 10
    while True:
        response = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert response.status_code == 200
    assert response.text == f"hello from web caller={cluster.spiffe('gateway')}\n"
    metrics = requests.get(f"http://127.0.0.1:{admin}/metrics", timeout=5).text
    assert 'request_total{direction="outbound",peer_service="web"}' in metrics
