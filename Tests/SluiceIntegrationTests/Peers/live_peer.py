#!/usr/bin/env python3
"""Many WebSocket connections at once, raw asyncio (the websockets library costs too much per
connection for thousands on two cores), for the live-change tests.

  live_peer.py hold URLS COUNT SECONDS        COUNT connections spread over URLS (comma-separated
                                              ws:// or wss://), each sending a numbered message
                                              about every second (every fifth one 1000 bytes) and
                                              checking the echoes come back whole and in order;
                                              prints "OPEN n" once all are open; on SIGUSR1 (or
                                              after SECONDS) notes each one's echoes so far, waits
                                              (up to 60 s) until each open one has had one more,
                                              closes each (1000) and prints one JSON object
                                              ("quiet_before"/"quiet_after": open connections with
                                              no echo before/after that mark)
  live_peer.py drain-watch URL COUNT TIMEOUT  COUNT connections that read what the backend sends
                                              and note when the close came, with which code, and
                                              whether a fragmented message was half-received then;
                                              prints "OPEN n", then one JSON object
  live_peer.py fragments-backend              a backend sending each connection a text message in
                                              three fragments 100 ms apart, once a second, and
                                              echoing what it receives; prints "PORT n"
"""
import asyncio
import base64
import hashlib
import json
import os

from lifeline import exit_when_parent_goes
import random
import signal
import ssl
import struct
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode, payload, fin=True, mask=True):
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        header = struct.pack("!BB", first, bit | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, bit | 127, n)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_frame(reader):
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    key = await reader.readexactly(4) if second & 0x80 else None
    payload = await reader.readexactly(length)
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bool(first & 0x80), first & 0x0F, payload


async def connect(url, local_host=None):
    secure = url.startswith("wss://")
    rest = url.split("://", 1)[1]
    authority, _, path = rest.partition("/")
    host, port = authority.rsplit(":", 1)
    context = None
    if secure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(host, int(port), ssl=context, local_addr=(local_host, 0) if local_host else None)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /{path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    if status != 101:
        writer.close()
        raise ConnectionError(f"status {status}")
    return reader, writer


async def hold(urls, count, seconds):
    result = {"opened": 0, "failed_opens": 0, "sent": 0, "echoed": 0, "mismatched": 0, "unexpected_closes": {}, "errors": {}}
    stop = asyncio.Event()
    mark = asyncio.Event()
    echoes_of = {}  # open connection's index -> echoes it has had
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, mark.set)
    all_open = asyncio.Event()
    pending = [count]

    async def one(index, url):
        try:
            reader, writer = await connect(url, f"127.0.0.{2 + index % 16}")
        except Exception as error:
            result["failed_opens"] += 1
            key = type(error).__name__ + ": " + str(error)[:60]
            result["errors"][key] = result["errors"].get(key, 0) + 1
            pending[0] -= 1
            if pending[0] == 0:
                all_open.set()
            return
        result["opened"] += 1
        pending[0] -= 1
        if pending[0] == 0:
            all_open.set()
        await all_open.wait()
        sequence = 0
        expected = []
        closed = False
        echoes_of[index] = 0

        async def read_echoes():
            nonlocal closed
            while True:
                fin, opcode, payload = await read_frame(reader)
                if opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    if not stop.is_set():
                        result["unexpected_closes"][str(code)] = result["unexpected_closes"].get(str(code), 0) + 1
                    closed = True
                    echoes_of.pop(index, None)
                    return
                if opcode in (0x1, 0x2):
                    if expected and payload == expected[0]:
                        expected.pop(0)
                        result["echoed"] += 1
                        echoes_of[index] += 1
                    else:
                        result["mismatched"] += 1

        echoes = asyncio.ensure_future(read_echoes())
        try:
            await asyncio.sleep(random.random())
            while not stop.is_set() and not closed:
                sequence += 1
                body = f"c{index}-s{sequence}-".encode()
                if sequence % 5 == 0:
                    body += b"x" * (1000 - len(body))
                expected.append(body)
                writer.write(frame(0x1, body))
                result["sent"] += 1
                try:
                    await asyncio.wait_for(stop.wait(), 0.8 + 0.4 * random.random())
                except asyncio.TimeoutError:
                    pass
            if not closed:
                # Let the last echoes arrive before closing.
                for _ in range(50):
                    if not expected:
                        break
                    await asyncio.sleep(0.1)
                writer.write(frame(0x8, struct.pack("!H", 1000)))
                await asyncio.wait_for(echoes, 10)
        except Exception as error:
            key = type(error).__name__
            result["errors"][key] = result["errors"].get(key, 0) + 1
        finally:
            echoes.cancel()
            writer.close()

    tasks = []
    for index in range(count):
        tasks.append(asyncio.ensure_future(one(index, urls[index % len(urls)])))
        if index % 50 == 49:
            await asyncio.sleep(0.05)
    await all_open.wait()
    print(f"OPEN {result['opened']}", flush=True)
    try:
        await asyncio.wait_for(mark.wait(), seconds)
    except asyncio.TimeoutError:
        pass
    at_mark = dict(echoes_of)
    result["quiet_before"] = sum(1 for count in at_mark.values() if count == 0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        quiet_after = [i for i, count in at_mark.items() if i in echoes_of and echoes_of[i] <= count]
        if not quiet_after:
            break
        await asyncio.sleep(0.1)
    result["quiet_after"] = len(quiet_after)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    result["lost"] = result["sent"] - result["echoed"] - result["mismatched"]
    print(json.dumps(result), flush=True)


async def drain_watch(url, count, timeout):
    result = {"opened": 0, "failed_opens": 0, "closes": {}, "mid_message": 0, "no_close": 0, "close_times": []}
    all_open = asyncio.Event()
    pending = [count]

    async def one(index):
        try:
            reader, writer = await connect(url, f"127.0.0.{2 + index % 16}")
            result["opened"] += 1
        except Exception:
            result["failed_opens"] += 1
            reader = None
        pending[0] -= 1
        if pending[0] == 0:
            all_open.set()
        if reader is None:
            return
        inside = False
        try:
            while True:
                fin, opcode, payload = await asyncio.wait_for(read_frame(reader), timeout)
                if opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    result["closes"][str(code)] = result["closes"].get(str(code), 0) + 1
                    result["close_times"].append(time.time())
                    if inside:
                        result["mid_message"] += 1
                    writer.write(frame(0x8, payload[:2]))
                    await writer.drain()
                    break
                if opcode in (0x1, 0x2):
                    inside = not fin
                elif opcode == 0x0:
                    inside = not fin
        except Exception:
            result["no_close"] += 1
        writer.close()

    tasks = []
    for index in range(count):
        tasks.append(asyncio.ensure_future(one(index)))
        if index % 50 == 49:
            await asyncio.sleep(0.05)
    await all_open.wait()
    print(f"OPEN {result['opened']}", flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(result), flush=True)


async def fragments_backend():
    async def serve(reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")

            async def send():
                number = 0
                await asyncio.sleep(random.random())
                while True:
                    number += 1
                    writer.write(frame(0x1, f"message {number} part 1 ".encode(), fin=False, mask=False))
                    await asyncio.sleep(0.1)
                    writer.write(frame(0x0, b"part 2 ", fin=False, mask=False))
                    await asyncio.sleep(0.1)
                    writer.write(frame(0x0, b"part 3", fin=True, mask=False))
                    await asyncio.sleep(0.8)

            sender = asyncio.ensure_future(send())
            try:
                while True:
                    fin, opcode, payload = await read_frame(reader)
                    if opcode == 0x8:
                        sender.cancel()
                        # Answer at a frame boundary of what this backend sends.
                        writer.write(frame(0x8, payload[:2], mask=False))
                        await writer.drain()
                        break
                    if opcode in (0x1, 0x2):
                        writer.write(frame(opcode, payload, mask=False))
            finally:
                sender.cancel()
        except Exception:
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=4096)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    exit_when_parent_goes()
    role = sys.argv[1]
    if role == "hold":
        asyncio.run(hold(sys.argv[2].split(","), int(sys.argv[3]), float(sys.argv[4])))
    elif role == "drain-watch":
        asyncio.run(drain_watch(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    elif role == "fragments-backend":
        asyncio.run(fragments_backend())
