#!/usr/bin/env python3
"""Backends that fall sick on purpose, and clients that count where upgrades land.

  health_peer.py backend NAME MODEFILE [PORT]
      A WebSocket and HTTP backend (Python `websockets`) that reads its mode from MODEFILE at
      every request: `good` (upgrades get a 101 carrying `X-Backend: NAME` and echo; GET
      /health and other GETs get 200 and NAME), `503` (every request and upgrade gets 503),
      `hang` (reads the request and never answers), `1011` (upgrades get their 101, then a close
      1011 at once). Prints `PORT n`.

  health_peer.py http NAME MODEFILE
      A plain HTTP/1.1 keep-alive backend with the same modes for every method (`good`: 200
      and NAME, the request body read; `503`; `hang`). Prints `PORT n`.

  health_peer.py upgrades HOST PORT COUNT CONCURRENCY PATH [HEADER]
      COUNT upgrades through the gateway, CONCURRENCY at a time, each closed at once after its
      answer (raw sockets, so thousands take seconds). HEADER (`Name: value`, `{i}` replaced by
      the upgrade's number modulo 50) is added to each. Prints one JSON object: where each
      landed (`X-Backend` of the 101), how many failed, and by what.

  health_peer.py upgrades-heard HOST PORT COUNT CONCURRENCY PATH
      The same, but each WebSocket waits up to 2 s for the gateway's close before closing its
      own (answering it with the same code), so a backend that closes at once is the one that
      closed first. Also prints how the gateway's closes ended them (`closes`: code → count).

  health_peer.py hold HOST PORT COUNT PATH SECONDS
      Opens COUNT WebSockets, then waits up to SECONDS for each to be closed by the gateway,
      answering each close. Prints the close codes and when each arrived (seconds from the
      first to the last close).
"""
import asyncio
import base64
import json
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lifeline import exit_when_parent_goes  # noqa: E402


def mode_of(path):
    try:
        return open(path).read().strip() or "good"
    except OSError:
        return "good"


async def backend(name, mode_file, port=0):
    from websockets.asyncio.server import serve
    from websockets.datastructures import Headers
    from websockets.exceptions import ConnectionClosed
    from websockets.http11 import Response

    async def handler(ws):
        if mode_of(mode_file) == "1011":
            await ws.close(1011, "internal error")
            return
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed:
            pass

    def answer(status, text):
        body = text.encode()
        return Response(status, "OK" if status == 200 else "Service Unavailable",
                        Headers([("Content-Length", str(len(body))), ("Content-Type", "text/plain"), ("X-Backend", name)]), body)

    async def process_request(connection, request):
        mode = mode_of(mode_file)
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "503":
            return answer(503, "sick\n")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return answer(200, name)
        return None

    def process_response(connection, request, response):
        response.headers["X-Backend"] = name
        return response

    async with serve(handler, "127.0.0.1", port, process_request=process_request, process_response=process_response,
                     ping_interval=None, reuse_address=True) as server:
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


def http(name, mode_file):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self):
            length = int(self.headers.get("Content-Length", "0") or 0)
            if length:
                self.rfile.read(length)
            mode = mode_of(mode_file)
            if mode == "hang":
                time.sleep(3600)
            status, body = (503, b"sick\n") if mode == "503" else (200, name.encode())
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", name)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


def read_head(sock):
    """The answer's head, and the bytes read past it (frames that came with a 101)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("closed before the answer")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def await_close(sock, seconds, data=b""):
    """Waits up to `seconds` for the gateway's first frame (`data`: its bytes already read);
    returns its close code if it was a close (1005 if it carried none), else None."""
    sock.settimeout(seconds)
    try:
        while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F):
            chunk = sock.recv(4096)
            if not chunk:
                return None
            data += chunk
    except socket.timeout:
        return None
    if data[0] & 0x0F != 0x8:
        return None
    return struct.unpack("!H", data[2:4])[0] if (data[1] & 0x7F) >= 2 else 1005


def one_upgrade(host, port, path, header, linger=0):
    sock = socket.create_connection((host, port), timeout=30)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        extra = f"{header}\r\n" if header else ""
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
        head, rest = read_head(sock)
        status = int(head.split(" ")[1])
        landed = None
        for line in head.split("\r\n")[1:]:
            field, _, value = line.partition(":")
            if field.strip().lower() == "x-backend":
                landed = value.strip()
        code = None
        if status == 101:
            code = await_close(sock, linger, rest) if linger else None
            reply = 1000 if code in (None, 1005) else code
            sock.sendall(bytes([0x88, 0x82]) + b"\x00\x00\x00\x00" + struct.pack("!H", reply))
        return status, landed, code
    finally:
        sock.close()


async def upgrades(host, port, count, concurrency, path, header, linger=0):
    landed, failures, statuses, closes = {}, 0, {}, {}
    loop = asyncio.get_running_loop()
    semaphore = asyncio.Semaphore(concurrency)

    async def run(index):
        nonlocal failures
        async with semaphore:
            text = header.replace("{i}", str(index % 50)) if header else None
            try:
                status, name, code = await loop.run_in_executor(None, one_upgrade, host, port, path, text, linger)
            except (OSError, EOFError) as error:
                failures += 1
                statuses[type(error).__name__] = statuses.get(type(error).__name__, 0) + 1
                return
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if code is not None:
                closes[str(code)] = closes.get(str(code), 0) + 1
            if status != 101:
                failures += 1
            elif name:
                key = f"{name}|{text}" if text else name
                landed[key] = landed.get(key, 0) + 1

    from concurrent.futures import ThreadPoolExecutor
    loop.set_default_executor(ThreadPoolExecutor(max_workers=concurrency))
    await asyncio.gather(*(run(index) for index in range(count)))
    print(json.dumps({"landed": landed, "failures": failures, "statuses": statuses, "closes": closes}), flush=True)


async def hold(host, port, count, path, seconds):
    from websockets.asyncio.client import connect
    connections = []
    for _ in range(count):
        connections.append(await connect(f"ws://{host}:{port}{path}", ping_interval=None, max_size=None))
    print(json.dumps({"open": len(connections)}), flush=True)
    codes, times, landed = {}, [], {}
    for ws in connections:
        name = ws.response.headers.get("X-Backend", "?")
        landed[name] = landed.get(name, 0) + 1

    async def watch(ws):
        try:
            await asyncio.wait_for(ws.wait_closed(), seconds)
            times.append(time.monotonic())
            code = str(ws.close_code)
        except asyncio.TimeoutError:
            code = "open"
        codes[code] = codes.get(code, 0) + 1

    await asyncio.gather(*(watch(ws) for ws in connections))
    spread = max(times) - min(times) if times else 0
    print(json.dumps({"codes": codes, "spread": spread, "landed": landed}), flush=True)


if __name__ == "__main__":
    exit_when_parent_goes()
    role = sys.argv[1]
    if role == "backend":
        asyncio.run(backend(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0))
    elif role == "http":
        http(sys.argv[2], sys.argv[3])
    elif role == "upgrades":
        asyncio.run(upgrades(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6],
                             sys.argv[7] if len(sys.argv) > 7 else None))
    elif role == "upgrades-heard":
        asyncio.run(upgrades(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], None, linger=2.0))
    elif role == "hold":
        asyncio.run(hold(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6])))
