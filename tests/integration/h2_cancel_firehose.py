"""For test_h2_hardening: a caller that cancels streams busy receiving, next to one that waits.

An h2c app (egress through the outbound proxy) streams without end on /fire and answers /slow
after 1 s. The client cancels the three /fire streams 0.3 s in; the /slow stream must still be
answered. Prints the events seen, as a Python list. Usage: h2_cancel_firehose.py PROXY_PORT APP_PORT
"""

import sys

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import trio
import trio.lowlevel

PROXY = ("127.0.0.1", int(sys.argv[1])); APP_PORT = int(sys.argv[2])
async def serve(stream):
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    c.initiate_connection(); await stream.send_all(c.data_to_send())
    lock = trio.Lock()
    async def flush():
        async with lock:
            d = c.data_to_send()
            if d: await stream.send_all(d)
    async def firehose(sid):
        try:
            c.send_headers(sid, [(b":status", b"200")])
            while True:
                while c.local_flow_control_window(sid) >= 1000:
                    c.send_data(sid, b"d" * 1000)
                await flush(); await trio.lowlevel.checkpoint()
        except (h2.exceptions.ProtocolError, trio.BrokenResourceError): return
    async def slow(sid):
        await trio.sleep(1.0)
        try: c.send_headers(sid, [(b":status", b"200")], end_stream=True); await flush()
        except Exception: pass
    async with trio.open_nursery() as n:
        while True:
            try: data = await stream.receive_some(65536)
            except trio.BrokenResourceError: data = b""
            if not data: n.cancel_scope.cancel(); return
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    n.start_soon(firehose if dict(ev.headers)[b":path"] == b"/fire" else slow, ev.stream_id)
            await flush()
async def main():
    async with trio.open_nursery() as n:
        await n.start(trio.serve_tcp, serve, APP_PORT)
        s = await trio.open_tcp_stream(*PROXY)
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        c.initiate_connection()
        for sid, path in ((1, b"/slow"), (3, b"/fire"), (5, b"/fire"), (7, b"/fire")):
            c.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", f"127.0.0.1:{APP_PORT}".encode()), (b":path", path)], end_stream=True)
        await s.send_all(c.data_to_send())
        t0 = trio.current_time(); reset_sent = False; out = []
        with trio.move_on_after(3):
            while True:
                data = await s.receive_some(65536)
                if not data: out.append("EOF"); break
                for ev in c.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == 1: out.append("slow stream answered")
                    elif isinstance(ev, h2.events.StreamReset): out.append(f"RST {ev.stream_id} {ev.error_code!r}")
                    elif isinstance(ev, h2.events.ConnectionTerminated): out.append("GOAWAY")
                if not reset_sent and trio.current_time() - t0 > 0.3:
                    for sid in (3, 5, 7): c.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                    reset_sent = True
                try: await s.send_all(c.data_to_send())
                except trio.BrokenResourceError: out.append("broken"); break
        print(out); n.cancel_scope.cancel()
trio.run(main)
