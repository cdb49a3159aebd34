"""Bidirectional bulk over HTTP/2, for test_h2_hardening: an h2c echo app and a client in one process.

client -> outbound proxy -> mTLS -> inbound proxy -> echo app, many streams at once, each sending
PER bytes while the echo comes back: both directions of the proxies' shared connection full at once.
Usage: h2_bulk_echo.py OUTBOUND_PORT APP_PORT STREAMS PER_STREAM_BYTES; prints "N/STREAMS complete, ...".
"""

import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio

OUT = ("127.0.0.1", int(sys.argv[1])); APP_PORT = int(sys.argv[2]); STREAMS = int(sys.argv[3]); PER = int(sys.argv[4])
CHUNK = 16384

class Pump:
    """Send queued bytes per stream as flow control allows."""
    def __init__(self, c): self.c = c; self.pending = {}; self.ending = set()
    def queue(self, sid, data, end=False):
        self.pending[sid] = self.pending.get(sid, b"") + data
        if end: self.ending.add(sid)
    def run(self):
        for sid in list(self.pending):
            buf = self.pending[sid]
            while buf:
                try: w = min(self.c.local_flow_control_window(sid), self.c.max_outbound_frame_size)
                except h2.exceptions.ProtocolError: buf = b""; break
                if w <= 0: break
                self.c.send_data(sid, buf[:w]); buf = buf[w:]
            self.pending[sid] = buf
            if not buf:
                del self.pending[sid]
                if sid in self.ending: self.ending.discard(sid); self.c.end_stream(sid)

async def echo(stream):
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    c.local_settings = h2.settings.Settings(client=False, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    c.initiate_connection(); c.increment_flow_control_window(1 << 24); await stream.send_all(c.data_to_send())
    p = Pump(c)
    wake = trio.Event()
    async def writer():
        nonlocal wake
        while True:
            await wake.wait(); wake = trio.Event()
            p.run(); d = c.data_to_send()
            if d: await stream.send_all(d)
    async with trio.open_nursery() as nn:
      nn.start_soon(writer)
      while True:
        data = await stream.receive_some(65536)
        if not data: nn.cancel_scope.cancel(); return
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                c.send_headers(ev.stream_id, [(b":status", b"200")])
            elif isinstance(ev, h2.events.DataReceived):
                p.queue(ev.stream_id, ev.data); c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                p.queue(ev.stream_id, b"", end=True)
        wake.set()

async def client():
    s = await trio.open_tcp_stream(*OUT)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    c.local_settings = h2.settings.Settings(client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    c.initiate_connection(); c.increment_flow_control_window(1 << 24); await s.send_all(c.data_to_send())
    p = Pump(c); got = {}; done = set(); errors = []
    for _i in range(STREAMS):
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"echo"), (b":path", b"/")])
        p.queue(sid, b"z" * PER, end=True); got[sid] = 0
    t0 = trio.current_time()
    async with trio.open_nursery() as n:
        async def writer():
            while True:
                p.run(); d = c.data_to_send()
                if d: await s.send_all(d)
                await trio.sleep(0.001)
        n.start_soon(writer)
        while len(done) + len(errors) < STREAMS:
            with trio.move_on_after(15) as to:
                data = await s.receive_some(65536)
            if to.cancelled_caught: print("STALL: nothing received for 15 s"); break
            if not data: print("EOF"); break
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    got[ev.stream_id] += len(ev.data); c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded): done.add(ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset): errors.append((ev.stream_id, ev.error_code))
                elif isinstance(ev, h2.events.ResponseReceived):
                    st = dict(ev.headers)[b":status"]
                    if st != b"200": errors.append((ev.stream_id, st, dict(ev.headers).get(b"x-mesh-error")))
        n.cancel_scope.cancel()
    el = trio.current_time() - t0
    print(f"{len(done)}/{STREAMS} complete, {len(errors)} errors {errors[:3]}, {sum(got.values())/1e6:.1f} MB echoed in {el:.1f}s")

async def main():
    async with trio.open_nursery() as n:
        await n.start(trio.serve_tcp, echo, APP_PORT)
        await client()
        n.cancel_scope.cancel()
trio.run(main)
