#!/usr/bin/env python3
"""The conformance reference client: Python `websockets` driving every case of Autobahn's
fuzzingserver at BASE_URL (directly, or through Sluice), echoing what each case sends."""
import asyncio
import json
import os
import sys

os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 21))

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException


async def run_case(base, agent, case):
    try:
        async with connect(f"{base}/runCase?case={case}&agent={agent}", max_size=None,
                           ping_interval=None, open_timeout=10, close_timeout=5) as ws:
            async for message in ws:
                await ws.send(message)
    except (WebSocketException, OSError, asyncio.TimeoutError):
        pass


async def main():
    """usage: reference_client.py BASE AGENT (INDEX COUNT | report): runs every COUNT-th case
    starting at INDEX+1 (several clients share the suite), or asks for the report."""
    base, agent = sys.argv[1], sys.argv[2]
    if sys.argv[3] != "report":
        index, clients = int(sys.argv[3]), int(sys.argv[4])
        async with connect(f"{base}/getCaseCount") as ws:
            count = json.loads(await ws.recv())
        for case in range(1 + index, count + 1, clients):
            await run_case(base, agent, case)
        print(f"{agent}: client {index} ran its share of {count} cases", flush=True)
        return
    async with connect(f"{base}/updateReports?agent={agent}", open_timeout=60, close_timeout=60) as ws:
        try:
            await asyncio.wait_for(ws.wait_closed(), 120)
        except asyncio.TimeoutError:
            pass
    print(f"{agent}: reports updated", flush=True)


asyncio.run(main())
