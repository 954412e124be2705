#!/usr/bin/env python3
"""The conformance reference backend: Python `websockets` echoing every message, with
permessage-deflate on and no size limit. Prints "PORT <n>" and serves until killed."""
import asyncio
import os
import sys

os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 21))

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0,
                     max_size=None, ping_interval=None, close_timeout=5) as server:
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


asyncio.run(main())
