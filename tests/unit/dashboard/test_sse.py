"""Server-sent events framing, checked against how a browser splits a stream into messages."""

from __future__ import annotations

import json

import pytest

from mesh.dashboard._sse import sse_comment, sse_json, sse_message, sse_retry


def parse_stream(data: bytes) -> list[dict[str, str]]:
    """The HTML standard's event stream interpretation (enough of it: event, data, id, comments)."""
    messages, current, data_lines = [], {}, []
    for line in data.decode().replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if data_lines or current:
                messages.append({**current, "data": "\n".join(data_lines)})
            current, data_lines = {}, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data_lines.append(value)
        else:
            current[field] = value
    return messages


def test_one_message() -> None:
    assert sse_message("stats", '{"a":1}', "7") == b'id: 7\nevent: stats\ndata: {"a":1}\n\n'
    assert parse_stream(sse_message("stats", "x")) == [{"event": "stats", "data": "x"}]


@pytest.mark.parametrize("payload", ["line one\nline two", "a\r\nb", "a\rb", "\n", "", "ends with newline\n"])
def test_multiline_payloads_arrive_whole(payload: str) -> None:
    (message,) = parse_stream(sse_message("x", payload))
    assert message["data"] == payload.replace("\r\n", "\n").replace("\r", "\n")


def test_json_values_with_newlines_in_strings_stay_one_message() -> None:
    value = {"path": "/a\nb", "text": "evil\n\nevent: fake"}
    stream = sse_json("request", value) + sse_json("status", {"ok": True})
    messages = parse_stream(stream)
    assert [m["event"] for m in messages] == ["request", "status"]
    assert json.loads(messages[0]["data"]) == value


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_event_names_and_ids_cannot_break_the_frame(bad: str) -> None:
    with pytest.raises(ValueError):
        sse_message(bad, "x")
    with pytest.raises(ValueError):
        sse_message("ok", "x", bad)


def test_comments_and_retry_are_not_messages() -> None:
    stream = sse_comment("keepalive") + sse_comment("two\nlines") + sse_retry(1500)
    assert parse_stream(stream) == [{"retry": "1500", "data": ""}]
    assert sse_retry(1500) == b"retry: 1500\n\n"
    assert sse_comment() == b": \n\n"
