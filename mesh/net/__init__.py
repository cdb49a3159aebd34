"""What the proxy, the controller and the CLI all stand on: the lean TLS stream, the fast
socket stream, the byte-stream helpers, the ALPN ids, the controller's JSON API over
HTTP/2 (its shared plumbing and its client), and a small HTTP/1.1 client (etcd's gateway,
OTLP/HTTP collectors). Nothing here knows mesh policy;
``mesh.proxy`` and ``mesh.controller`` import it, never each other."""

from __future__ import annotations

from mesh.net._alpn import ALPN_ADMIN, ALPN_H2, ALPN_HTTP1, ALPN_TCP
from mesh.net._api_base import (
    API_ALPN,
    HANDSHAKE_TIMEOUT,
    JSON_TYPE,
    MAX_HEADER_LIST_SIZE,
    NDJSON_TYPE,
    ApiError,
    ApiResponse,
    H2ApiEndpoint,
    api_client_context,
    bootstrap_client_context,
    close_quietly,
    decode_headers,
    encode_json,
    header_dict,
)
from mesh.net._api_client import ApiClient
from mesh.net._cli_link import (
    cli_credentials,
    cli_identity_dir,
    controller_client,
    controller_request,
    raise_for_status,
)
from mesh.net._http1_client import HttpConnection, HttpFailure, failure_reason
from mesh.net._socket import FastSocketStream
from mesh.net._streams import (
    LINGER,
    RECEIVE_SIZE,
    cancel_on_eof,
    linger,
    os_reason,
    receive_or_eof,
    relay_bytes,
    send_now,
)
from mesh.net._tls import TLSStream

__all__ = [
    "API_ALPN",
    "HANDSHAKE_TIMEOUT",
    "JSON_TYPE",
    "MAX_HEADER_LIST_SIZE",
    "NDJSON_TYPE",
    "ApiClient",
    "HttpConnection",
    "HttpFailure",
    "failure_reason",
    "cli_credentials",
    "cli_identity_dir",
    "controller_client",
    "controller_request",
    "raise_for_status",
    "ApiError",
    "ApiResponse",
    "H2ApiEndpoint",
    "api_client_context",
    "bootstrap_client_context",
    "close_quietly",
    "decode_headers",
    "encode_json",
    "header_dict",
    "ALPN_ADMIN",
    "ALPN_H2",
    "ALPN_HTTP1",
    "ALPN_TCP",
    "LINGER",
    "RECEIVE_SIZE",
    "FastSocketStream",
    "TLSStream",
    "cancel_on_eof",
    "linger",
    "os_reason",
    "receive_or_eof",
    "relay_bytes",
    "send_now",
]
