"""The proxy's HTTP/2 codec: sans-IO, h2's behaviour for what the proxy uses (see ``_connection.py``)."""

from __future__ import annotations

from mesh.proxy.protocol.http2._connection import Connection, error_code
from mesh.proxy.protocol.http2._frames import PREFACE
from mesh.proxy.protocol.http2._stream import RECV_RST_STREAM, SEND_RST_STREAM, Stream

__all__ = ["PREFACE", "RECV_RST_STREAM", "SEND_RST_STREAM", "Connection", "Stream", "error_code"]
