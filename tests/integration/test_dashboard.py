"""`mesh dashboard` against `mesh up --demo`, in a real browser: Debian's headless Chromium driven by Selenium.

One demo, one dashboard and one browser serve the whole module (starting them is most of the
cost). Each view is looked at as a person would, and saved as a screenshot (under the test's
tmp dir, or MESH_DASHBOARD_SCREENSHOTS). Every test ends by reading the browser's console and
network logs: no error logged, and no request to anywhere but the dashboard on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.integration.conftest import Cluster, Process
from tests.integration.test_control_plane import wait_for
from tests.integration.test_up_config import processes_of, up_detached, wait_until_free

pytestmark = pytest.mark.timeout(150)

DEMO_PAGE = "http://127.0.0.1:9080/productpage"
URL_LINE = re.compile(r"^dashboard: (http://127\.0\.0\.1:(\d+)/\?token=([\w-]{20,}))$")
# What Chromium needs here: root needs --no-sandbox; without the background-networking flags it
# tries to reach Google's servers, which this machine (and CI) refuses.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
)


@dataclass
class Dashboard:
    cluster: Cluster
    process: Process
    url: str
    port: int
    token: str
    stdout: Path
    shots: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Browser:
    driver: Any
    dashboard: Dashboard
    console: list[dict[str, Any]] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)

    def show(self, view: str) -> None:
        self.driver.execute_script("location.hash = arguments[0]", f"#/{view}")

    def wait(self, what: str, predicate: Any, timeout: float = 30.0) -> Any:
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        def guarded(driver: Any) -> Any:
            try:
                return predicate(driver)
            except StaleElementReferenceException:  # the view redrew itself in between
                return False

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(guarded)
        except WebDriverException as exc:
            raise AssertionError(f"the dashboard did not show {what} within {timeout}s ({exc.msg})") from None

    def texts(self, css: str) -> list[str]:
        return self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css
        )

    def screenshot(self, name: str) -> Path:
        # Usable at 1280×800: nothing wider than the window (a page that scrolls sideways is not).
        width = self.driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 1280, f"{name}: the page is {width}px wide at 1280×800"
        path = self.dashboard.shots / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), path
        return path

    def collect_logs(self) -> None:
        self.console += self.driver.get_log("browser")
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])

    def assert_clean(self) -> None:
        """No console errors, and nothing requested but the dashboard itself."""
        self.collect_logs()
        errors = [e for e in self.console if e.get("level") in ("SEVERE", "ERROR")]
        assert errors == [], errors
        assert self.requested, "the network log is empty: it is not being recorded"
        for url in self.requested:
            parts = urlsplit(url)
            if parts.scheme in ("data", "chrome", "about"):  # in the browser itself (its blank first tab is chrome://)
                continue
            assert (parts.scheme, parts.hostname, parts.port) == ("http", "127.0.0.1", self.dashboard.port), url


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    if not wait_until_free(9080, 60):
        pytest.fail("127.0.0.1:9080 (the demo's gateway) stayed in use on this machine: stop what holds it (a demo of your own?)")
    tmp = tmp_path_factory.mktemp("dashboard")
    cluster = Cluster(tmp)
    try:
        cluster.init_ca()
        up_detached(cluster, "--demo")  # with its gentle traffic generator
        wait_for(lambda: requests.get(DEMO_PAGE, timeout=3).status_code == 200, 60, "the demo's page")
        stdout = tmp / "dashboard.stdout"
        stderr = tmp / "dashboard.log"
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", "mesh", "dashboard", "--no-browser", "--port", "0"],
                stdout=out,
                stderr=err,
                env=cluster._env,
                start_new_session=True,
            )
        process = Process("dashboard", popen, stderr)
        cluster.processes.append(process)
        first = wait_for(lambda: stdout.read_text().splitlines()[:1], 30, "the dashboard's first line")[0]
        match = URL_LINE.match(first)
        assert match, first
        shots = Path(os.environ.get("MESH_DASHBOARD_SCREENSHOTS") or tmp / "screenshots")
        shots.mkdir(parents=True, exist_ok=True)
        yield Dashboard(cluster, process, match.group(1), int(match.group(2)), match.group(3), stdout, shots)
        assert "Traceback" not in stderr.read_text(), stderr.read_text()
    finally:
        cluster.mesh("down", timeout=60)
        cluster.close()
    wait_for(lambda: processes_of(cluster.home) == [], 10, "no process left")


@pytest.fixture(scope="module")
def browser(dashboard: Dashboard) -> Iterator[Browser]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    assert chromium and chromedriver, "Chromium is missing: .ci/run installs chromium and chromium-driver (apt-get)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={dashboard.cluster.tmp / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # The driver is named: Selenium then never looks for (or downloads) one itself.
    service = Service(chromedriver, log_output=str(dashboard.cluster.tmp / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(30)
        # The page's own size is 1280×800 (a window of that size has less room inside).
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
        driver.get(dashboard.url)
        yield Browser(driver, dashboard)
    finally:
        driver.quit()


def traffic(seconds: float, count: int) -> threading.Thread:
    """A bounded burst through the demo's gateway (on top of the demo's own gentle traffic)."""

    def run() -> None:
        deadline = time.monotonic() + seconds
        with requests.Session() as session:
            for _ in range(count):
                if time.monotonic() > deadline:
                    return
                try:
                    session.get(DEMO_PAGE, timeout=5)
                except requests.RequestException:
                    pass

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    return worker


# ---------------------------------------------------------------- without a browser


def test_url_first_and_nothing_without_the_token(dashboard: Dashboard) -> None:
    assert dashboard.stdout.read_text().splitlines()[0] == f"dashboard: {dashboard.url}"
    # Loopback only: the listening socket is 127.0.0.1:PORT, nothing on other addresses.
    listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:] if line.split()[3] == "0A"]
    assert f"0100007F:{dashboard.port:04X}" in listening
    assert not [a for a in listening if a.endswith(f":{dashboard.port:04X}") and a != f"0100007F:{dashboard.port:04X}"]
    tcp6 = Path("/proc/net/tcp6")
    if tcp6.exists():
        assert not [line for line in tcp6.read_text().splitlines()[1:] if line.split()[1].endswith(f":{dashboard.port:04X}") and line.split()[3] == "0A"]

    for path in ("/", "/api/state", "/api/events", "/api/tap", "/static/dashboard.js"):
        answer = requests.get(dashboard.base + path, timeout=5, stream=True)
        assert answer.status_code == 401, (path, answer.status_code)
        answer.close()
        wrong = requests.get(dashboard.base + path, cookies={f"mesh_dashboard_{dashboard.port}": "guess"}, timeout=5, stream=True)
        assert wrong.status_code == 403, (path, wrong.status_code)
        wrong.close()
    assert requests.get(dashboard.base + "/?token=guess", timeout=5).status_code == 403
    # DNS rebinding: a name that resolves here is still not our Host.
    rebound = requests.get(dashboard.base + "/api/state", headers={"Host": f"rebind.example:{dashboard.port}"}, cookies={f"mesh_dashboard_{dashboard.port}": dashboard.token}, timeout=5)
    assert rebound.status_code == 403

    # The URL's token: a cookie, then the JSON state.
    with requests.Session() as session:
        login = session.get(dashboard.url, timeout=5, allow_redirects=False)
        assert login.status_code == 303 and login.headers["Location"] == "/"
        assert "HttpOnly" in login.headers["Set-Cookie"] and "SameSite=Strict" in login.headers["Set-Cookie"]
        state = wait_for(lambda: (s := session.get(dashboard.base + "/api/state", timeout=5).json()).get("stats") and s, 30, "stats in /api/state")
        assert state["link"]["connected"] is True
        assert {"productpage", "details", "reviews", "ratings"} <= set(state["status"]["endpoints"])


# ---------------------------------------------------------------- in the browser


def test_graph_shows_the_demo_and_its_numbers_move(browser: Browser) -> None:
    browser.show("graph")
    services = {"productpage", "details", "reviews", "ratings"}
    browser.wait("the demo's services", lambda d: services <= set(browser.driver.execute_script(
        "return [...document.querySelectorAll('g.node')].map(n => n.dataset.service)")))
    edges = {("gateway", "productpage"), ("productpage", "details"), ("productpage", "reviews"), ("reviews", "ratings")}

    def edge_pairs(_: Any) -> set[tuple[str, str]]:
        pairs = browser.driver.execute_script("return [...document.querySelectorAll('g.edge')].map(e => [e.dataset.src, e.dataset.dst])")
        return edges <= {tuple(p) for p in pairs}

    browser.wait("the demo's edges", edge_pairs)
    # Every edge between the demo's services is mTLS: a padlock on each.
    assert browser.driver.execute_script("return document.querySelectorAll('g.edge .lock').length") >= len(edges)
    numbers = lambda: browser.texts("g.edge .edge-text") + browser.texts("g.node .node-stats") + browser.texts(".tile-value")  # noqa: E731
    before = numbers()
    assert any(re.search(r"[1-9][\d.]*/s", text) for text in before), before  # traffic is flowing
    browser.screenshot("graph")
    worker = traffic(seconds=15, count=150)
    browser.wait("numbers that change as traffic flows", lambda d: numbers() != before, timeout=30)
    worker.join(20)
    browser.assert_clean()


def test_service_view_golden_metrics_per_version_and_endpoints(browser: Browser) -> None:
    browser.show("services/reviews")
    browser.wait("reviews per version", lambda d: {"all", "v1", "v2", "v3"} <= set(browser.driver.execute_script(
        "return [...document.querySelectorAll('table.golden tr[data-version]')].map(r => r.dataset.version)")))
    browser.wait("reviews' three endpoints, healthy", lambda d: len(browser.texts("tr.endpoint-row")) == 3
                 and all("ok" in t for t in browser.texts("tr.endpoint-row")))
    assert all("expires in" in t for t in browser.texts("tr.endpoint-row"))
    browser.wait("charts of the last minutes", lambda d: len(browser.driver.find_elements("css selector", "svg.chart")) == 3)
    browser.screenshot("services")
    browser.assert_clean()


def test_tap_lists_requests_and_filters_them(browser: Browser) -> None:
    from selenium.webdriver.support.ui import Select

    browser.show("tap")
    browser.wait("requests in the tap", lambda d: len(browser.texts("tr.tap-row")) >= 5)
    browser.screenshot("tap")
    # Only ratings: the filter goes to the controller's /v1/tap; rows from/to ratings only.
    Select(browser.driver.find_element("css selector", "#tap-form select[name=service]")).select_by_value("ratings")
    browser.driver.find_element("css selector", "#tap-form button[type=submit]").click()
    browser.driver.find_element("xpath", "//form[@id='tap-form']//button[text()='Clear']").click()
    traffic(seconds=10, count=60)

    def only_ratings(_: Any) -> bool:
        rows = browser.driver.execute_script(
            "return [...document.querySelectorAll('tr.tap-row')].map(r => [r.cells[2].textContent, r.cells[3].textContent])")
        return len(rows) >= 3 and all("ratings" in row for row in rows)

    browser.wait("only requests from or to ratings", only_ratings)
    browser.assert_clean()


def test_fault_applied_with_mesh_fault_appears(browser: Browser) -> None:
    result = browser.dashboard.cluster.mesh("fault", "details", "--abort", "503", "--percent", "50", "--for", "2m")
    assert result.returncode == 0, result.stderr
    browser.show("faults")
    browser.wait("the fault on details", lambda d: any("503 for 50" in t for t in browser.texts("tr.fault-row[data-service=details]")))
    assert re.search(r"in \d+m \d+s", browser.texts("tr.fault-row[data-service=details]")[0])
    browser.screenshot("faults")
    browser.show("graph")
    browser.wait("the faults tile", lambda d: "1" in browser.texts(".tile-value")[4])
    clear = browser.dashboard.cluster.mesh("fault", "details", "--clear")
    assert clear.returncode == 0, clear.stderr
    browser.show("faults")
    browser.wait("the fault gone", lambda d: browser.texts("tr.fault-row") == [] and browser.texts("p.empty") == ["no faults in force"])
    browser.assert_clean()


def test_routes_policies_and_check(browser: Browser, tmp_path: Path) -> None:
    cluster = browser.dashboard.cluster
    config = tmp_path / "routes.toml"
    config.write_text(
        f'[mesh]\ntrust_domain = "{cluster.trust_domain}"\n\n'
        '[[route]]\nservice = "reviews"\nname = "canary"\n'
        'split = [ { labels = { version = "v1" }, weight = 50 }, { labels = { version = "v3" }, weight = 50 } ]\n\n'
        '[[policy]]\nservice = "ratings"\nallow = ["reviews"]\n'
    )
    applied = cluster.mesh("apply", str(config))
    assert applied.returncode == 0, applied.stderr
    browser.show("routes")
    browser.wait("the canary route", lambda d: any("version=v1 50% / version=v3 50%" in t for t in browser.texts("tr.route-row[data-route=canary]")))
    browser.wait("the policy", lambda d: any("reviews" in t for t in browser.texts("tr.policy-row")))
    browser.screenshot("routes")
    browser.show("check")
    browser.wait("mesh check's results", lambda d: len(browser.texts("tr.check-row")) >= 10, timeout=60)
    assert browser.texts("tr.check-row[data-status=fail]") == []
    browser.screenshot("check")
    browser.assert_clean()


def test_dark_scheme_and_refusal_in_the_browser(browser: Browser) -> None:
    driver = browser.driver
    browser.show("graph")
    light = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    while driver.execute_script("return document.documentElement.dataset.theme") != "dark":
        driver.find_element("id", "theme").click()
    assert driver.execute_script("return getComputedStyle(document.body).backgroundColor") != light
    browser.wait("the graph", lambda d: browser.texts("g.node"))
    browser.screenshot("graph-dark")
    driver.find_element("id", "theme").click()  # back to following the system
    browser.assert_clean()
    # A browser without the token (a fresh cookie jar) is refused: the page, and the event stream.
    driver.delete_all_cookies()
    driver.get(browser.dashboard.base + "/")
    assert "open the URL that `mesh dashboard` printed" in driver.find_element("tag name", "body").text
    status = driver.execute_script(
        "return fetch('/api/events').then(r => r.status)"
    )
    assert status == 401


def test_without_a_controller_it_says_what_to_do(cluster: Cluster) -> None:
    result = cluster.mesh("dashboard", "--no-browser", timeout=30)
    assert result.returncode == 1
    assert result.stdout == ""  # no URL for a dashboard that could show nothing
    assert "no controller recorded" in result.stderr and "mesh up" in result.stderr
