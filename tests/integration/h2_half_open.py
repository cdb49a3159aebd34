"""For test_h2_hardening: an app that answers before it has read the whole request, and never
gives the stream its window back. The proxy must not leave those upstream streams half-open
(after a complete response, what is still open of the request is reset, RFC 9113 8.1).
Prints "N/N answered; upstream connections: C; streams still open on each (app side): [...]".
Usage: h2_half_open.py PROXY_PORT APP_PORT N
"""

import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

PROXY = ("127.0.0.1", int(sys.argv[1])); APP_PORT = int(sys.argv[2]); N = int(sys.argv[3])
conns = []
async def serve(stream):
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    c.initiate_connection(); await stream.send_all(c.data_to_send()); conns.append(c)
    got = {}
    while True:
        data = await stream.receive_some(65536)
        if not data: return
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.DataReceived):
                c.increment_flow_control_window(len(ev.data))  # connection window only; the stream's is never given back
                got[ev.stream_id] = got.get(ev.stream_id, 0) + len(ev.data)
                if got[ev.stream_id] == 65535:
                    c.send_headers(ev.stream_id, [(b":status", b"200")], end_stream=True)
        await stream.send_all(c.data_to_send())


async def main():
    async with trio.open_nursery() as n:
        await n.start(trio.serve_tcp, serve, APP_PORT)
        s = await trio.open_tcp_stream(*PROXY)
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        c.initiate_connection(); await s.send_all(c.data_to_send())
        while True:
            evs = c.receive_data(await s.receive_some(65536)); await s.send_all(c.data_to_send())
            if any(isinstance(e, h2.events.RemoteSettingsChanged) for e in evs): break
        ok = 0
        for i in range(N):
            sid = c.get_next_available_stream_id()
            c.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", f"127.0.0.1:{APP_PORT}".encode()), (b":path", b"/")])
            for _j in range(4): c.send_data(sid, b"x" * 16383)
            c.send_data(sid, b"y" * 100, end_stream=True)
            await s.send_all(c.data_to_send())
            done = False
            with trio.move_on_after(3):
                while not done:
                    for ev in c.receive_data(await s.receive_some(65536)):
                        if isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid: ok += 1; done = True
                        if isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid: done = True
                    await s.send_all(c.data_to_send())
            if not done: print("request", i, "hung"); break
        await trio.sleep(0.5)
        print(f"{ok}/{N} answered; upstream connections: {len(conns)}; streams still open on each (app side):",
              [x.open_inbound_streams for x in conns])
        n.cancel_scope.cancel()
trio.run(main)
