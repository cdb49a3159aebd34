from __future__ import annotations

from pathlib import Path

import pytest

from mesh.config import ConfigInvalid, load_config_text

TESTDATA = Path(__file__).resolve().parents[2] / "testdata"

# The example of DESIGN.md section 7, verbatim.
DESIGN_EXAMPLE = """\
[mesh]
trust_domain = "mesh.local"
authz_default = "allow"            # or "deny"

[discovery]
mode = "zeroconf"                  # zeroconf | static | controller
interfaces = ["127.0.0.1"]          # or ["all"]

[[service]]                        # processes that `mesh up` runs through `mesh inject`
name = "reviews"
command = ["python", "-m", "mesh.demo", "reviews"]
labels = { version = "v1" }
upstreams = ["ratings"]
health = "/health"

[[gateway]]
listen = "127.0.0.1:9080"
to = "productpage"

[[route]]
service = "reviews"
match = { path_prefix = "/", headers = { "end-user" = "jason" } }
split = [ { labels = { version = "v2" }, weight = 90 }, { labels = { version = "v3" }, weight = 10 } ]
timeout = "2s"
retries = { attempts = 2, on = ["5xx", "connect-failure"], budget = 0.2 }
fault = { delay = "200ms", delay_percent = 10, abort_status = 503, abort_percent = 5 }

[[policy]]
service = "ratings"
allow = ["reviews"]
"""


def errors_of(text: str, source: str = "mesh.toml") -> list[str]:
    """Every error line that loading ``text`` gives (fails the test if it loads)."""
    with pytest.raises(ConfigInvalid) as info:
        load_config_text(text, source)
    return [str(issue) for issue in info.value.issues]


def error_of(text: str) -> str:
    """The one error line that loading ``text`` gives."""
    errors = errors_of(text)
    assert len(errors) == 1, errors
    return errors[0]
