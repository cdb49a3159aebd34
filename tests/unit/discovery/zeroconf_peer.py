"""A zeroconf advertiser in a process of its own, for the cross-process tests.

Usage: ``python zeroconf_peer.py '{"service": ..., "identity": ..., ...}' [TTL]``
(the fields of MeshServiceRecord; loopback only; TTL shortens the record TTL and
the re-announce interval with it, for the expiry test). Prints ``ready <instance>``
once advertised, then reads commands from stdin: ``withdraw`` (prints
``withdrawn``); ``exit`` or end of input closes the advertiser (goodbye packets)
and exits after printing ``closed``.
"""

from __future__ import annotations

import json
import sys

import trio

from mesh.discovery import MeshServiceRecord, ZeroconfAdvertiser, _zeroconf_advertise


def say(line: str) -> None:
    print(line, flush=True)


async def main(fields: dict[str, object]) -> None:
    record = MeshServiceRecord(**fields)  # type: ignore[arg-type]
    async with ZeroconfAdvertiser(interfaces=["127.0.0.1"]) as advertiser:
        advertised = await advertiser.advertise(record)
        say(f"ready {advertised.instance}")
        while True:
            command = (await trio.to_thread.run_sync(sys.stdin.readline)).strip()
            if command == "withdraw":
                await advertiser.withdraw(advertised)
                say("withdrawn")
            elif command in ("", "exit"):
                break
    say("closed")


if __name__ == "__main__":
    if len(sys.argv) > 2:
        # Read where the advertiser uses them.
        _zeroconf_advertise.RECORD_TTL = int(sys.argv[2])
        _zeroconf_advertise.REANNOUNCE_INTERVAL = _zeroconf_advertise.RECORD_TTL * 0.3
    trio.run(main, json.loads(sys.argv[1]))
