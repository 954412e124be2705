#!/usr/bin/env python3
"""Socket.IO peers (python-socketio, which no one here wrote) for the sticky-session tests.

  server NAME   an AsyncServer on aiohttp; prints "PORT <n>"; answers 'echo' with its own name
  client URL    a Client that starts on HTTP long-polling and upgrades to WebSocket; prints JSON
"""
import asyncio
import json
import sys
import time

from peer import exit_when_parent_goes  # the same lifeline as every peer


def server(name):
    import socketio
    from aiohttp import web
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")

    @sio.on("echo")
    async def echo(sid, data):
        return {"data": data, "server": name, "transport": sio.transport(sid)}

    app = web.Application()
    sio.attach(app)

    async def main():
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.Future()

    asyncio.run(main())


def client(url, seconds=5):
    """A Socket.IO session through `url`; each request and call may take `seconds` (a session
    that should work is given long enough for a loaded machine, one expected to break is not)."""
    import socketio
    result = {"connected": False}
    sio = socketio.Client(reconnection=False, request_timeout=seconds)
    try:
        sio.connect(url, transports=["polling", "websocket"], wait_timeout=2 * seconds)
        result["connected"] = True
        first = sio.call("echo", "over whatever transport", timeout=seconds)
        result["first"] = first
        # Give the upgrade to WebSocket time to finish, then talk over it.
        deadline = time.time() + 2 * seconds
        while sio.transport() != "websocket" and time.time() < deadline:
            time.sleep(0.05)
        result["transport"] = sio.transport()
        answers = [sio.call("echo", f"message {i}", timeout=seconds) for i in range(5)]
        result["servers"] = sorted({a["server"] for a in answers + [first]})
        result["server_transports"] = [a["transport"] for a in answers]
        result["echoes"] = [a["data"] for a in answers]
        sio.disconnect()
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
    return result


if __name__ == "__main__":
    exit_when_parent_goes()
    if sys.argv[1] == "server":
        server(sys.argv[2])
    else:
        print(json.dumps(client(sys.argv[2], *(float(a) for a in sys.argv[3:4]))), flush=True)
