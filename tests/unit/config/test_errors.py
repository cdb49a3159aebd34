"""Every kind of config error, with the exact line a user sees."""

from __future__ import annotations

import pytest

from mesh.config import SERVICE_NAME_RULE, ConfigInvalid, ConfigIssue, parse_config

from .conftest import error_of, errors_of

NAME = f"expected a service name ({SERVICE_NAME_RULE})"


# --- wrong type and out of range -------------------------------------------------------


def test_split_weight_wrong_type_is_the_design_example() -> None:
    text = """
[[route]]
service = "reviews"
[[route]]
service = "reviews"
split = [ { labels = { version = "v2" }, weight = "ten" }, { labels = { version = "v3" }, weight = 10 } ]
"""
    assert (
        error_of(text)
        == 'mesh.toml: route[1].split[0].weight: expected an integer 0–100, found "ten"'
    )


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        (
            '[[service]]\nname = "a"\ncommand = "python app.py"',
            'service[0].command: expected a non-empty list of strings, found "python app.py"',
        ),
        (
            '[[service]]\nname = "a"\ncommand = ["python", 3]',
            "service[0].command[1]: expected a string, found 3",
        ),
        (
            '[[service]]\nname = "a"\ncommand = []',
            "service[0].command: expected a non-empty list of strings, found []",
        ),
        (
            '[[service]]\nname = "a"\ncommand = ["x"]\nport = "80"',
            'service[0].port: expected an integer 1–65535, found "80"',
        ),
        (
            '[[service]]\nname = "a"\ncommand = ["x"]\nport = 70000',
            "service[0].port: expected an integer 1–65535, found 70000",
        ),
        (
            '[[service]]\nname = "a"\ncommand = ["x"]\nreplicas = 0',
            "service[0].replicas: expected an integer ≥ 1, found 0",
        ),
        (
            '[[service]]\nname = "a"\ncommand = ["x"]\nprotocol = "udp"',
            'service[0].protocol: expected one of "auto", "http", "http2", "grpc", "tcp", found "udp"',
        ),
        (
            '[[service]]\nname = "a"\ncommand = ["x"]\nlabels = ["v1"]',
            'service[0].labels: expected a table of labels like { version = "v1" }, found ["v1"]',
        ),
        (
            '[[service]]\nname = "a"\ncommand = ["x"]\nenv = { PORT = 8080 }',
            "service[0].env.PORT: expected a string, found 8080",
        ),
        (
            '[[service]]\nname = "a"\ncommand = ["x"]\nhealth = "health"',
            'service[0].health: expected a path starting with "/", found "health"',
        ),
        (
            '[[route]]\nservice = "a"\nsplit = [ { labels = { v = "1" }, weight = 150 } ]',
            "route[0].split[0].weight: expected an integer 0–100, found 150",
        ),
        (
            '[[route]]\nservice = "a"\nsplit = [ { labels = { v = "1" }, weight = 100.0 } ]',
            "route[0].split[0].weight: expected an integer 0–100, found 100.0",
        ),
        (
            '[[route]]\nservice = "a"\nsplit = [ { labels = { v = "1" }, weight = true } ]',
            "route[0].split[0].weight: expected an integer 0–100, found true",
        ),
        (
            '[[route]]\nservice = "a"\nretries = { attempts = 11 }',
            "route[0].retries.attempts: expected an integer 0–10, found 11",
        ),
        (
            '[[route]]\nservice = "a"\nretries = { budget = 1.5 }',
            "route[0].retries.budget: expected a number 0–1, found 1.5",
        ),
        (
            '[[route]]\nservice = "a"\nretries = { retryable = "yes" }',
            'route[0].retries.retryable: expected true or false, found "yes"',
        ),
        (
            '[[route]]\nservice = "a"\nretries = 3',
            'route[0].retries: expected a table like { attempts = 2, on = ["5xx"] }, found 3',
        ),
        (
            '[[route]]\nservice = "a"\nretries = { on = ["5XX"] }',
            'route[0].retries.on[0]: expected "5xx", "gateway-error", "connect-failure", "reset" or a status code like "503", found "5XX"',
        ),
        (
            '[[route]]\nservice = "a"\nfault = { abort_status = 200 }',
            "route[0].fault.abort_status: expected an integer 400–599, found 200",
        ),
        (
            '[[route]]\nservice = "a"\nfault = { delay = "1s", delay_percent = 101 }',
            "route[0].fault.delay_percent: expected a number 0–100, found 101",
        ),
        (
            '[[route]]\nservice = "a"\nrate_limit = { requests_per_second = 0 }',
            "route[0].rate_limit.requests_per_second: expected a number > 0, found 0",
        ),
        (
            '[[route]]\nservice = "a"\nrate_limit = { requests_per_second = 5, burst = 0 }',
            "route[0].rate_limit.burst: expected an integer ≥ 1, found 0",
        ),
        (
            '[[route]]\nservice = "a"\nmatch = { method = "get" }',
            'route[0].match.method: expected an upper-case HTTP method like "GET", found "get"',
        ),
        (
            '[[route]]\nservice = "a"\nmatch = { path_prefix = "api" }',
            'route[0].match.path_prefix: expected a path starting with "/", found "api"',
        ),
        (
            '[mesh]\nauthz_default = "Deny"',
            'mesh.authz_default: expected "allow" or "deny", found "Deny"',
        ),
        (
            '[discovery]\nmode = "consul"',
            'discovery.mode: expected one of "zeroconf", "static", "controller", found "consul"',
        ),
        (
            '[discovery]\ninterfaces = ["eth0"]',
            'discovery.interfaces[0]: expected "all" or an IP address like "127.0.0.1", found "eth0"',
        ),
        (
            '[discovery]\ninterfaces = ["all", "10.0.0.1"]',
            'discovery.interfaces: expected ["all"] alone or a list of IP addresses, found ["all", "10.0.0.1"]',
        ),
        (
            '[[gateway]]\nlisten = "9080"\nto = "web"',
            'gateway[0].listen: expected an address "host:port" like "127.0.0.1:9080", found "9080"',
        ),
        (
            '[[gateway]]\nlisten = 9080\nto = "web"',
            'gateway[0].listen: expected an address "host:port" like "127.0.0.1:9080", found 9080',
        ),
        (
            '[[policy]]\nservice = "a"\nallow = ["Reviews"]',
            'policy[0].allow[0]: expected a service name, a SPIFFE id like "spiffe://mesh.local/svc/reviews", or "*", found "Reviews"',
        ),
        (
            '[[policy]]\nservice = "a"\nallow = "reviews"',
            'policy[0].allow: expected a list of callers (service names, SPIFFE ids or "*"), found "reviews"',
        ),
        (
            'service = { name = "a", command = ["x"] }',
            "service: expected an array of tables ([[service]]), found a table",
        ),
        ('mesh = "x"', 'mesh: expected a table, found "x"'),
    ],
)
def test_wrong_type_or_out_of_range(toml: str, line: str) -> None:
    assert error_of(toml) == f"mesh.toml: {line}"


def test_missing_required_keys_found_nothing() -> None:
    assert errors_of('[[service]]\nlabels = {}\n[[gateway]]\nlisten = "127.0.0.1:80"') == [
        f"mesh.toml: service[0].name: {NAME}, found nothing",
        "mesh.toml: service[0].command: expected a non-empty list of strings, found nothing",
        f"mesh.toml: gateway[0].to: {NAME}, or routes (somewhere to send requests), found nothing",
    ]


def test_long_values_are_shortened_in_messages() -> None:
    line = error_of('[[service]]\nname = "a"\ncommand = ["x"]\nhealth = "' + "h" * 100 + '"')
    assert (
        line
        == 'mesh.toml: service[0].health: expected a path starting with "/", found "'
        + "h" * 79
        + '…"'
    )
    line = error_of(
        '[[service]]\nname = "a"\ncommand = ["x"]\nport = [' + ", ".join(["1000"] * 30) + "]"
    )
    assert line.endswith("found [" + "1000, " * 13 + "...]")


# --- unknown keys ----------------------------------------------------------------------


def test_unknown_key_with_suggestion() -> None:
    assert error_of('[[route]]\nservice = "a"\ntimout = "2s"') == (
        'mesh.toml: route[0].timout: unknown key (did you mean "timeout"?)'
    )


@pytest.mark.parametrize(
    ("toml", "line"),
    [
        ('[[services]]\nname = "a"', 'services: unknown key (did you mean "service"?)'),
        (
            '[mesh]\ntrustdomain = "x"',
            'mesh.trustdomain: unknown key (did you mean "trust_domain"?)',
        ),
        (
            '[[route]]\nservice = "a"\nmatch = { path_prefx = "/" }',
            'route[0].match.path_prefx: unknown key (did you mean "path_prefix"?)',
        ),
        (
            '[[route]]\nservice = "a"\nretries = { attempt = 1 }',
            'route[0].retries.attempt: unknown key (did you mean "attempts"?)',
        ),
    ],
)
def test_unknown_keys_everywhere(toml: str, line: str) -> None:
    assert error_of(toml) == f"mesh.toml: {line}"


def test_unknown_key_without_a_close_match_lists_the_known_keys() -> None:
    assert error_of('[[gateway]]\nlisten = "127.0.0.1:80"\nto = "a"\ncolour = "blue"') == (
        "mesh.toml: gateway[0].colour: unknown key (known keys: listen, to, routes, tls, http_redirect, "
        "trust_forwarded, client_limits)"
    )


def test_odd_keys_are_quoted_in_the_key_path() -> None:
    assert error_of('[mesh]\n"trust domain" = "x"') == (
        'mesh.toml: mesh."trust domain": unknown key (did you mean "trust_domain"?)'
    )


# --- relations between keys ------------------------------------------------------------


def test_split_weights_must_sum_to_100() -> None:
    text = '[[route]]\nservice = "a"\nsplit = [ { labels = { v = "1" }, weight = 80 }, { labels = { v = "2" }, weight = 10 } ]'
    assert error_of(text) == "mesh.toml: route[0].split: expected weights that sum to 100, found 90"


def test_split_must_be_a_list_of_tables() -> None:
    assert error_of('[[route]]\nservice = "a"\nsplit = { labels = { v = "1" }, weight = 100 }') == (
        "mesh.toml: route[0].split: expected a list of { labels, weight } tables, found a table"
    )


def test_split_target_needs_labels() -> None:
    assert error_of('[[route]]\nservice = "a"\nsplit = [ { labels = {}, weight = 100 } ]') == (
        'mesh.toml: route[0].split[0].labels: expected a non-empty table of labels like { version = "v2" }, found a table'
    )


def test_bad_regex() -> None:
    assert error_of('[[route]]\nservice = "a"\nmatch = { path_regex = "/([a-z" }') == (
        'mesh.toml: route[0].match.path_regex: expected a regular expression, found "/([a-z" '
        "(unterminated character set at position 2)"
    )


def test_multiple_path_matchers() -> None:
    assert error_of(
        '[[route]]\nservice = "a"\nmatch = { path_exact = "/a", path_prefix = "/" }'
    ) == (
        "mesh.toml: route[0].match: expected at most one of path_exact, path_prefix, path_regex, "
        "found path_exact and path_prefix"
    )


@pytest.mark.parametrize(
    ("timeout", "line"),
    [
        ('"0s"', 'expected a duration greater than 0, found "0s"'),
        ('"0ms"', 'expected a duration greater than 0, found "0ms"'),
        ('"-1s"', 'expected a duration greater than 0, found "-1s"'),
        ("2", "expected a duration like 250ms, 2s, 1m, found 2"),
        ("1.5", "expected a duration like 250ms, 2s, 1m, found 1.5"),
        ('"2"', 'expected a duration like 250ms, 2s, 1m, found "2"'),
        ('"ten seconds"', 'expected a duration like 250ms, 2s, 1m, found "ten seconds"'),
        ('"2d"', 'expected a duration like 250ms, 2s, 1m, found "2d"'),
    ],
)
def test_timeout_must_be_a_positive_duration(timeout: str, line: str) -> None:
    assert (
        error_of(f'[[route]]\nservice = "a"\ntimeout = {timeout}')
        == f"mesh.toml: route[0].timeout: {line}"
    )


def test_fault_delay_may_be_zero_but_not_negative() -> None:
    assert error_of('[[route]]\nservice = "a"\nfault = { delay = "-5ms" }') == (
        'mesh.toml: route[0].fault.delay: expected a duration of 0 or more, found "-5ms"'
    )


def test_fault_percent_without_its_fault() -> None:
    assert errors_of(
        '[[route]]\nservice = "a"\nfault = { delay_percent = 10, abort_percent = 5 }'
    ) == [
        "mesh.toml: route[0].fault.delay: expected a duration like 250ms, 2s, 1m (delay_percent is set), found nothing",
        "mesh.toml: route[0].fault.abort_status: expected an integer 400–599 (abort_percent is set), found nothing",
    ]


def test_static_discovery_needs_an_endpoints_file() -> None:
    assert error_of('[discovery]\nmode = "static"') == (
        'mesh.toml: discovery.endpoints_file: expected a path to an endpoints file (mode is "static"), found nothing'
    )


def test_policy_must_say_something() -> None:
    assert error_of('[[policy]]\nservice = "a"') == (
        "mesh.toml: policy[0]: expected at least one of allow, deny, rate_limit, found nothing"
    )


# --- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Reviews", "-reviews", "reviews-", "re_views", "a" * 64, "", "reviews.mesh"]
)
def test_bad_service_name(name: str) -> None:
    assert error_of(f'[[service]]\nname = "{name}"\ncommand = ["x"]') == (
        f'mesh.toml: service[0].name: {NAME}, found "{name}"'
    )


@pytest.mark.parametrize(
    ("toml", "path"),
    [
        ('[[route]]\nservice = "Reviews"', "route[0].service"),
        ('[[policy]]\nservice = "Ratings"\nallow = ["*"]', "policy[0].service"),
        ('[[gateway]]\nlisten = "127.0.0.1:80"\nto = "Web"', "gateway[0].to"),
    ],
)
def test_names_that_refer_to_services_must_be_valid(toml: str, path: str) -> None:
    assert error_of(toml).startswith(f"mesh.toml: {path}: {NAME}, found ")


def test_bad_upstream_name() -> None:
    assert error_of('[[service]]\nname = "a"\ncommand = ["x"]\nupstreams = ["ok", "Not_OK"]') == (
        f'mesh.toml: service[0].upstreams[1]: {NAME}, found "Not_OK"'
    )


@pytest.mark.parametrize(
    "domain", ["spiffe://mesh.local", "Mesh.Local", "mesh.local/x", "", "mesh local"]
)
def test_bad_trust_domain(domain: str) -> None:
    assert error_of(f'[mesh]\ntrust_domain = "{domain}"') == (
        'mesh.toml: mesh.trust_domain: expected a trust domain like "mesh.local" '
        f"(lowercase letters, digits, '.', '-' and '_', without a scheme or '/'), found \"{domain}\""
    )


def test_bad_label_and_env_and_header_names() -> None:
    text = """
[[service]]
name = "a"
command = ["x"]
labels = { "a=b" = "v1", version = "v 2" }
env = { "1X" = "y" }
[[route]]
service = "a"
match = { headers = { "bad header" = "x" } }
"""
    label = "letters, digits, '.', '-' and '_', 1–63 characters, starting and ending with a letter or digit"
    assert errors_of(text) == [
        f'mesh.toml: service[0].labels."a=b": expected a label name ({label}), found "a=b"',
        f'mesh.toml: service[0].labels.version: expected a label value ({label}), found "v 2"',
        "mesh.toml: service[0].env.1X: expected an environment variable name "
        "(letters, digits and '_', not starting with a digit), found \"1X\"",
        'mesh.toml: route[0].match.headers."bad header": expected an HTTP header name, found "bad header"',
    ]


# --- duplicates ------------------------------------------------------------------------


def test_duplicate_services() -> None:
    text = '[[service]]\nname = "a"\ncommand = ["x"]\n' * 3
    assert errors_of(text) == [
        'mesh.toml: service[1].name: expected a unique service name, found "a" again (first at service[0])',
        'mesh.toml: service[2].name: expected a unique service name, found "a" again (first at service[0])',
    ]


def test_duplicate_policies_for_one_service() -> None:
    text = '[[policy]]\nservice = "a"\nallow = ["b"]\n[[policy]]\nservice = "a"\ndeny = ["c"]'
    assert error_of(text) == (
        'mesh.toml: policy[1].service: expected one policy per service, found "a" again (first at policy[0])'
    )


def test_duplicate_gateway_addresses() -> None:
    text = '[[gateway]]\nlisten = "127.0.0.1:80"\nto = "a"\n[[gateway]]\nlisten = "127.0.0.1:80"\nto = "b"'
    assert error_of(text) == (
        "mesh.toml: gateway[1].listen: expected an address no other gateway listens on, "
        'found "127.0.0.1:80" again (first at gateway[0])'
    )
    # Port 0 asks for an ephemeral port: two of them do not clash.
    ephemeral = '[[gateway]]\nlisten = "127.0.0.1:0"\nto = "a"\n[[gateway]]\nlisten = "127.0.0.1:0"\nto = "b"'
    assert len(parse_toml(ephemeral).gateways) == 2


def test_duplicate_route_names_within_a_service() -> None:
    text = '[[route]]\nservice = "a"\nname = "r"\n[[route]]\nservice = "b"\nname = "r"\n[[route]]\nservice = "a"\nname = "r"'
    assert error_of(text) == (
        'mesh.toml: route[2].name: expected a route name unique within service "a", found "r" again (first at route[0])'
    )


def test_header_names_ignore_case() -> None:
    assert error_of(
        '[[route]]\nservice = "a"\nmatch = { headers = { "X-A" = "1", "x-a" = "2" } }'
    ) == (
        "mesh.toml: route[0].match.headers.x-a: expected an HTTP header name, each given once "
        '(case does not matter), found "x-a" again'
    )


# --- all at once -----------------------------------------------------------------------


def test_every_error_is_reported_not_just_the_first() -> None:
    text = """
[mesh]
authz_default = "maybe"

[[service]]
name = "A"
command = ["x"]

[[route]]
service = "a"
timout = "1s"
timeout = "0s"
split = [ { labels = { v = "1" }, weight = 50 } ]
"""
    assert errors_of(text) == [
        'mesh.toml: mesh.authz_default: expected "allow" or "deny", found "maybe"',
        f'mesh.toml: service[0].name: {NAME}, found "A"',
        'mesh.toml: route[0].timout: unknown key (did you mean "timeout"?)',
        'mesh.toml: route[0].timeout: expected a duration greater than 0, found "0s"',
        "mesh.toml: route[0].split: expected weights that sum to 100, found 50",
    ]


def test_config_invalid_carries_issues_message_and_hint() -> None:
    with pytest.raises(ConfigInvalid) as info:
        parse_config(
            {"mesh": {"authz_default": 1}, "route": [{"service": "a", "timeout": 0}]}, "api"
        )
    exc = info.value
    assert exc.issues == (
        ConfigIssue("api", "mesh.authz_default", 'expected "allow" or "deny", found 1'),
        ConfigIssue("api", "route[0].timeout", "expected a duration like 250ms, 2s, 1m, found 0"),
    )
    assert exc.message == str(exc) == "\n".join(str(i) for i in exc.issues)
    assert (
        exc.hint
        == "fix the keys above; `mesh config validate FILE` checks a file without applying it"
    )


def test_top_level_must_be_a_table() -> None:
    with pytest.raises(ConfigInvalid) as info:
        parse_config([1, 2], "api")  # type: ignore[arg-type]
    assert str(info.value) == "api: expected a table of mesh config sections, found [1, 2]"


def parse_toml(text: str):  # noqa: ANN201 - small local helper
    from mesh.config import load_config_text

    return load_config_text(text, "mesh.toml")


def test_split_label_keys_unknown_to_the_service() -> None:
    from mesh.config import ConfigInvalid, parse_config

    data = {
        "service": [{"name": "reviews", "command": ["x"], "labels": {"version": "v1"}}],
        "route": [{"service": "reviews", "split": [{"labels": {"versoin": "v2"}, "weight": 100}]}],
    }
    with pytest.raises(ConfigInvalid) as caught:
        parse_config(data, "mesh.toml")
    assert str(caught.value) == (
        'mesh.toml: route[0].split[0].labels: expected label keys of service "reviews" (version), found "versoin"'
    )


def test_overlapping_faults_are_refused() -> None:
    from mesh.config import ConfigInvalid, parse_config

    data = {"route": [{"service": "ratings", "fault": {"delay": "1s"}}, {"service": "ratings", "fault": {"abort_status": 503}}]}
    with pytest.raises(ConfigInvalid) as caught:
        parse_config(data, "mesh.toml")
    assert str(caught.value) == (
        "mesh.toml: route[1].fault: expected at most one fault per service and match, "
        "found another fault on the same match (first at route[0].fault)"
    )
