"""The connection's state machine, as h2's ``H2ConnectionStateMachine``: which inputs each state
takes, and where they lead (anything else closes the connection with PROTOCOL_ERROR).
"""

from __future__ import annotations

# States and inputs, numbered as h2's ConnectionState and ConnectionInputs.
C_IDLE, C_CLIENT_OPEN, C_SERVER_OPEN, C_CLOSED = range(4)
STATE_NAMES = ("IDLE", "CLIENT_OPEN", "SERVER_OPEN", "CLOSED")
(
    SEND_HEADERS,
    SEND_PUSH_PROMISE,
    SEND_DATA,
    SEND_GOAWAY,
    SEND_WINDOW_UPDATE,
    SEND_PING,
    SEND_SETTINGS,
    SEND_RST_STREAM_INPUT,
    SEND_PRIORITY,
    RECV_HEADERS,
    RECV_PUSH_PROMISE,
    RECV_DATA,
    RECV_GOAWAY,
    RECV_WINDOW_UPDATE,
    RECV_PING,
    RECV_SETTINGS,
    RECV_RST_STREAM_INPUT,
    RECV_PRIORITY,
    SEND_ALTERNATIVE_SERVICE,
    RECV_ALTERNATIVE_SERVICE,
) = range(20)
INPUT_NAMES = (
    "SEND_HEADERS SEND_PUSH_PROMISE SEND_DATA SEND_GOAWAY SEND_WINDOW_UPDATE SEND_PING SEND_SETTINGS SEND_RST_STREAM"
    " SEND_PRIORITY RECV_HEADERS RECV_PUSH_PROMISE RECV_DATA RECV_GOAWAY RECV_WINDOW_UPDATE RECV_PING RECV_SETTINGS"
    " RECV_RST_STREAM RECV_PRIORITY SEND_ALTERNATIVE_SERVICE RECV_ALTERNATIVE_SERVICE"
).split()


def _transitions() -> tuple[tuple[int | None, ...], ...]:
    table: list[list[int | None]] = [[None] * 20 for _ in range(4)]
    idle = table[C_IDLE]
    for stay in (SEND_SETTINGS, RECV_SETTINGS, SEND_WINDOW_UPDATE, RECV_WINDOW_UPDATE, SEND_PING, RECV_PING):
        idle[stay] = C_IDLE
    idle[SEND_PRIORITY] = idle[RECV_PRIORITY] = C_IDLE
    idle[SEND_HEADERS] = idle[RECV_ALTERNATIVE_SERVICE] = C_CLIENT_OPEN
    idle[RECV_HEADERS] = idle[SEND_ALTERNATIVE_SERVICE] = C_SERVER_OPEN
    common = (
        SEND_HEADERS,
        SEND_DATA,
        SEND_WINDOW_UPDATE,
        SEND_PING,
        SEND_SETTINGS,
        SEND_PRIORITY,
        RECV_HEADERS,
        RECV_DATA,
        RECV_WINDOW_UPDATE,
        RECV_PING,
        RECV_SETTINGS,
        SEND_RST_STREAM_INPUT,
        RECV_RST_STREAM_INPUT,
        RECV_PRIORITY,
        RECV_ALTERNATIVE_SERVICE,
    )
    for state, extra in (
        (C_CLIENT_OPEN, (RECV_PUSH_PROMISE,)),
        (C_SERVER_OPEN, (SEND_PUSH_PROMISE, SEND_ALTERNATIVE_SERVICE)),
    ):
        for stay in common + extra:
            table[state][stay] = state
    for state in range(4):
        table[state][SEND_GOAWAY] = table[state][RECV_GOAWAY] = C_CLOSED
    return tuple(tuple(row) for row in table)


NEXT_STATE = _transitions()
