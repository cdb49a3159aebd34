"""What the proxy changes in h2's costs, and that h2 still behaves the same."""

from __future__ import annotations

import h2.config
import h2.connection

from mesh.proxy._h2_transport import Connection, h2_config


def test_h2_formats_received_frames_only_for_a_logger_that_logs() -> None:
    """mesh.proxy stands in for ``repr`` in h2.connection (its one use: the trace of each received
    frame): a logger still gets the same text, and h2 has no other use of ``repr`` there."""
    import inspect
    import re

    source = inspect.getsource(h2.connection)
    assert re.findall(r"\brepr\(", source) == ["repr("]
    assert 'logger.trace("Received frame: %s", repr(frame))' in source

    lines: list[str] = []

    class Logger(h2.config.DummyLogger):
        def trace(self, fmt: str, *args: object, **kwargs: object) -> None:
            lines.append(fmt % args)

    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, logger=Logger()))
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    server.receive_data(client.data_to_send())
    assert "Received frame: SettingsFrame(stream_id=0, flags=[]): settings={" in "\n".join(lines)


def test_open_stream_count_and_clean_up_are_h2s() -> None:
    """Connection._open_streams inlines h2's: same counts, same closed streams dropped and remembered."""

    def build(cls: type[h2.connection.H2Connection]) -> tuple[h2.connection.H2Connection, h2.connection.H2Connection]:
        client = cls(h2_config(client_side=True))
        server = cls(h2_config(client_side=False))
        client.initiate_connection()
        server.initiate_connection()
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
        server.receive_data(client.data_to_send())
        head = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
        for stream_id in range(1, 40, 2):
            client.send_headers(stream_id, head, end_stream=stream_id % 3 == 0)
        server.receive_data(client.data_to_send())
        for stream_id in range(1, 40, 2):
            if stream_id % 5 == 0:
                server.reset_stream(stream_id)
            elif stream_id % 3 == 0:
                server.send_headers(stream_id, [(b":status", b"200")], end_stream=True)
        client.receive_data(server.data_to_send())
        return client, server

    ours, theirs = build(Connection), build(h2.connection.H2Connection)
    for mine, reference in zip(ours, theirs, strict=True):
        assert (mine.open_outbound_streams, mine.open_inbound_streams) == (
            reference.open_outbound_streams,
            reference.open_inbound_streams,
        )
        assert sorted(mine.streams) == sorted(reference.streams)
        assert mine._closed_streams == reference._closed_streams
    assert 0 < ours[1].open_inbound_streams < 20
