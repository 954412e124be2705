#!/usr/bin/env python3
"""Real WebSocket peers for Sluice's integration tests.

Backends print "PORT <n>" on their first line and run until killed. Clients print one JSON
object and exit. The peers are Python's `websockets` library (which no one here wrote), plus a
few raw-socket peers for byte-level cases the library will not produce.
"""
import asyncio
import base64
import signal
import hashlib
import json
import urllib.parse
import os

from lifeline import exit_when_parent_goes
import socket
import ssl
import struct
import sys
import time

os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 21))

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Response
from websockets.datastructures import Headers

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def announce(port):
    print(f"PORT {port}", flush=True)


# ---------------------------------------------------------------- backends

async def backend(mode, arg):
    async def handler(ws):
        try:
            if mode == "first-frame":
                await ws.send("first")
            if mode == "flood":
                chunk = b"\xab" * (1 << 20)
                sent = 0
                while sent < int(arg):
                    await ws.send(chunk)
                    sent += len(chunk)
                await ws.close(1000, "done")
                return
            async for message in ws:
                if mode == "die":
                    ws.transport.abort()
                    return
                if mode == "close-after-first":
                    await ws.close(4001, "backend bye")
                    return
                if message == "headers?":
                    await ws.send(json.dumps({k.lower(): v for k, v in ws.request.headers.raw_items()} | {":path": ws.request.path}))
                    continue
                await ws.send(message)
        except ConnectionClosed:
            pass
        if mode == "record-close":
            # arg is a file: each finished connection appends the close code it received.
            await ws.wait_closed()
            rcvd = ws.protocol.close_rcvd
            with open(arg, "a") as record:
                record.write(f"{rcvd.code if rcvd else 'none'}\n")

    async def process_request(connection, request):
        if mode == "reject403":
            response = connection.respond(403, "backend says no\n")
            response.headers["X-Backend"] = "yes"
            return response
        if mode == "slow":
            await asyncio.sleep(float(arg or 5))
        return None

    def select_subprotocol(connection, offered):
        # The first offered protocol this backend speaks; no protocol when none is offered.
        return next((p for p in offered if p in ("chat", "superchat")), None)

    tls = None
    if mode == "echo-tls":
        # arg is "CERT,KEY": a wss:// backend.
        cert, key = arg.split(",")
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)

    async with serve(handler, "127.0.0.1", 0, max_size=None, select_subprotocol=select_subprotocol,
                     process_request=process_request, ping_interval=None, ssl=tls) as server:
        announce(server.sockets[0].getsockname()[1])
        await asyncio.Future()


def raw_backend(mode):
    """A backend that writes bytes by hand: the 101 and a first frame in one send, a wrong
    Sec-WebSocket-Accept, or a masked (illegal) frame from the server."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    announce(listener.getsockname()[1])
    while True:
        conn, _ = listener.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            data = conn.recv(4096)
            if not data:
                break
            request += data
        key = ""
        for line in request.decode("latin-1").split("\r\n"):
            if line.lower().startswith("sec-websocket-key:"):
                key = line.split(":", 1)[1].strip()
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if mode == "bad-accept":
            accept = base64.b64encode(b"0" * 20).decode()
        if mode == "refuse-keep-alive":
            # An app server that does not speak WebSocket: a plain answer, and the connection
            # kept open for the next request, as keep-alive servers do.
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nnot here\r\n")
            time.sleep(30)
            conn.close()
            continue
        response = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode()
        if mode == "first-frame-same-packet":
            response += b"\x81\x05first"
        if mode == "late-101-then-masked-frame":
            # The 101 after the client has had time to half-close, with an illegal (masked)
            # frame behind it in the same packet: the relay's close 1002 to this backend must
            # wait until the handshake codecs are gone.
            time.sleep(0.3)
            response += b"\x81\x85" + b"\x01\x02\x03\x04" + bytes(b ^ k for b, k in zip(b"hello", b"\x01\x02\x03\x04\x01"))
        if mode == "masked-frame":
            response += b"\x81\x85" + b"\x01\x02\x03\x04" + bytes(b ^ k for b, k in zip(b"hello", b"\x01\x02\x03\x04\x01"))
        conn.sendall(response)
        if mode == "silent":
            time.sleep(30)
        if mode == "burst-after-close":
            # Waits for the client's close, then sends 4 MiB in 64 KiB binary frames and its
            # close reply: what Sluice still buffers for the client (which reads nothing yet,
            # through a small receive buffer) when the close handshake completes must reach it
            # before the connection ends.
            received = b""
            conn.settimeout(10)
            while len(received) < 2 or received[0] & 0x0F != 0x8:
                data = conn.recv(65536)
                if not data:
                    break
                received += data
            chunk = os.urandom(65536)
            for _ in range(64):
                conn.sendall(struct.pack("!BBQ", 0x82, 127, len(chunk)) + chunk)
            conn.sendall(b"\x88\x02\x03\xe8")
        conn.settimeout(10)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        conn.close()


# ---------------------------------------------------------------- clients

def client_ssl(url):
    if not url.startswith("wss:"):
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def client(scenario, url, extra):
    options = json.loads(extra) if extra else {}
    kwargs = dict(ssl=client_ssl(url), max_size=None, ping_interval=None,
                  open_timeout=options.get("open_timeout", 10), close_timeout=10)
    if "subprotocols" in options:
        kwargs["subprotocols"] = options["subprotocols"]
    if options.get("compression") is False:
        kwargs["compression"] = None
    if "headers" in options:
        kwargs["additional_headers"] = options["headers"]
    result = {}
    try:
        if scenario == "status":
            try:
                async with connect(url, **kwargs) as ws:
                    result["status"] = 101
            except InvalidStatus as error:
                result["status"] = error.response.status_code
                result["body"] = error.response.body.decode("utf-8", "replace")
                result["headers"] = {k.lower(): v for k, v in error.response.headers.raw_items()}
            return result

        # Before the handshake: no timer of the gateway's for this connection started earlier.
        began = time.monotonic()
        async with connect(url, **kwargs) as ws:
            result["subprotocol"] = ws.subprotocol
            result["extensions"] = [type(e).__name__ for e in ws.protocol.extensions]
            if scenario == "echo":
                checks = []
                await ws.send("hello")
                checks.append(await ws.recv() == "hello")
                payload = os.urandom(1024)
                await ws.send(payload)
                checks.append(await ws.recv() == payload)
                big = os.urandom(options.get("big", 16 << 20))
                await ws.send(big)
                checks.append(await ws.recv() == big)
                await ws.send(["frag", "ment", "ed"])
                checks.append(await ws.recv() == "fragmented")
                pong = await ws.ping(b"client-ping")
                await asyncio.wait_for(pong, 5)
                checks.append(True)
                result["checks"] = checks
                await ws.close(4000, "client bye")
                result["close_code"] = ws.close_code
                result["close_reason"] = ws.close_reason
            elif scenario == "headers":
                await ws.send("headers?")
                result["backend_saw"] = json.loads(await ws.recv())
            elif scenario == "first-message":
                result["first"] = await asyncio.wait_for(ws.recv(), 5)
            elif scenario == "wait-close":
                started = time.monotonic()
                if options.get("send"):
                    await ws.send(options["send"])
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), options.get("timeout", 10))
                except ConnectionClosed:
                    pass
                except asyncio.TimeoutError:
                    result["timeout"] = True
                result["elapsed"] = time.monotonic() - started
                result["since_connect"] = time.monotonic() - began
                rcvd = ws.protocol.close_rcvd
                result["close_code"] = rcvd.code if rcvd else None
                result["close_reason"] = rcvd.reason if rcvd else None
            elif scenario == "sleep-then-echo":
                await asyncio.sleep(options.get("sleep", 1))
                await ws.send("still here")
                result["echo"] = await asyncio.wait_for(ws.recv(), 5)
    except ConnectionClosed as error:
        result["error"] = f"closed: {error}"
        rcvd = error.rcvd
        result["close_code"] = rcvd.code if rcvd else None
    except Exception as error:  # reported, not raised: the Swift test asserts on it
        result["error"] = f"{type(error).__name__}: {error}"
    return result


def raw_client(scenario, host, port, extra):
    """A hand-written client for what `websockets` will not do: send its first frame in the
    same packet as the upgrade request, stall reading, or never answer pings."""
    options = json.loads(extra) if extra else {}
    # Each read's bound ("timeout" in seconds: a test whose gateway is loaded on purpose waits longer).
    timeout = float(options.get("timeout", 15))
    if "rcvbuf" in options:
        # A receive buffer set before the connect bounds the window the sender sees.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(options["rcvbuf"]))
        sock.settimeout(timeout)
        sock.connect((host, int(port)))
    else:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET {options.get('path', '/')} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    mask = b"\x11\x22\x33\x44"

    def frame(opcode, payload, fin=True, masked=True, rsv=0):
        first = (0x80 if fin else 0) | rsv | opcode
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", first, (0x80 if masked else 0) | length)
        elif length < 65536:
            header = struct.pack("!BBH", first, (0x80 if masked else 0) | 126, length)
        else:
            header = struct.pack("!BBQ", first, (0x80 if masked else 0) | 127, length)
        if not masked:
            return header + payload
        return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    buffer = b""

    def read_exactly(n):
        nonlocal buffer
        while len(buffer) < n:
            data = sock.recv(65536)
            if not data:
                raise EOFError("connection closed")
            buffer += data
        out, buffer = buffer[:n], buffer[n:]
        return out

    def read_frame():
        first, second = read_exactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", read_exactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", read_exactly(8))[0]
        if second & 0x80:
            read_exactly(4)
        return first & 0x0F, read_exactly(length)

    result = {}
    if scenario == "early-frame":
        sock.sendall(request + frame(0x1, b"early"))
    elif scenario == "half-close-at-once":
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
    else:
        sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(1)
        if not data:
            break
        head += data
    result["status"] = int(head.split(b" ")[1]) if head else None
    try:
        if scenario == "early-frame":
            opcode, payload = read_frame()
            result["echo"] = payload.decode()
        elif scenario == "violation":
            sock.sendall(frame(0x1, b"x", rsv=0x20))
            opcode, payload = read_frame()
            result["opcode"] = opcode
            result["close_code"] = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            try:
                result["eof"] = sock.recv(10) == b""
            except OSError:
                result["eof"] = True
        elif scenario == "close-then-read-late":
            # Closes first, then reads nothing for a second while the backend answers with a
            # burst and its close; then reads it all, to the end of the connection.
            sock.sendall(frame(0x8, struct.pack("!H", 1000)))
            time.sleep(1.0)
            received, close_code = 0, None
            while close_code is None:
                opcode, payload = read_frame()
                if opcode == 0x2:
                    received += len(payload)
                elif opcode == 0x8:
                    close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            result["binary_bytes"] = received
            result["close_code"] = close_code
            try:
                result["eof"] = sock.recv(10) == b""
            except OSError:
                result["eof"] = True
        elif scenario == "too-big":
            sock.sendall(frame(0x2, b"\x00" * int(options["size"])))
            opcode, payload = read_frame()
            result["opcode"] = opcode
            result["close_code"] = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        elif scenario == "answer-pings":
            pings = 0
            deadline = time.monotonic() + options.get("seconds", 1.5)
            sock.settimeout(0.2)
            while time.monotonic() < deadline:
                try:
                    opcode, payload = read_frame()
                except socket.timeout:
                    continue
                if opcode == 0x9:
                    pings += 1
                    result.setdefault("ping_payloads", []).append(payload.decode("latin-1"))
                    sock.sendall(frame(0xA, payload))
            sock.settimeout(5)
            sock.sendall(frame(0x1, b"alive"))
            while True:
                opcode, payload = read_frame()
                if opcode == 0x1:
                    result["echo"] = payload.decode()
                    break
            result["pings"] = pings
        elif scenario == "ignore-pings":
            pings = 0
            started = time.monotonic()
            sock.settimeout(options.get("seconds", 5))
            while True:
                opcode, payload = read_frame()
                if opcode == 0x9:
                    pings += 1
                elif opcode == 0x8:
                    result["close_code"] = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    break
            result["pings"] = pings
            result["elapsed"] = time.monotonic() - started
        elif scenario == "stall":
            # Send one request for data, then read nothing for a while.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(frame(0x1, b"go"))
            time.sleep(options.get("seconds", 5))
            result["stalled"] = True
        elif scenario == "eof-after-answer":
            # The answer's body, then how long until the gateway closes (half-closing first
            # when asked: the client has nothing more to send).
            if options.get("half_close"):
                sock.shutdown(socket.SHUT_WR)
            started = time.monotonic()
            sock.settimeout(options.get("seconds", 5))
            rest = buffer
            try:
                while True:
                    data = sock.recv(65536)
                    if not data:
                        result["eof_after"] = time.monotonic() - started
                        break
                    rest += data
            except socket.timeout:
                result["eof_after"] = None
            result["body"] = rest.decode("latin-1")
        elif scenario == "read-frame":
            opcode, payload = read_frame()
            result["opcode"] = opcode
            result["payload"] = payload[:200].decode("latin-1")
            if opcode == 0x8 and len(payload) >= 2:
                result["close_code"] = struct.unpack("!H", payload[:2])[0]
    except (EOFError, OSError) as error:
        result["error"] = f"{type(error).__name__}: {error}"
    sock.close()
    return result


def tls_probe(host, port, server_name, version):
    """Handshakes with SNI `server_name` (optionally forcing a TLS version) and reports the
    certificate's names and the negotiated version."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    if version == "1.1":
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    result = {}
    try:
        # Generous: the tests check which certificate and version, not how fast; a loaded CI run
        # with 2,000 WebSockets held took longer than 5 s to answer once. It returns at the answer.
        with socket.create_connection((host, int(port)), timeout=30) as raw:
            with context.wrap_socket(raw, server_hostname=server_name or None) as tls:
                der = tls.getpeercert(binary_form=True)
                result["version"] = tls.version()
                result["alpn"] = tls.selected_alpn_protocol()
                result["der_sha256"] = hashlib.sha256(der).hexdigest()
    except (ssl.SSLError, OSError) as error:
        result["error"] = f"{type(error).__name__}: {error}"
    return result


def http_raw(host, port, payload, delay):
    """Sends `payload` (with \\r\\n escapes), optionally waits, and returns the status line."""
    sock = socket.create_connection((host, int(port)), timeout=10)
    data = payload.encode().decode("unicode_escape").encode("latin-1")
    started = time.monotonic()
    sock.sendall(data)
    response = b""
    try:
        while b"\r\n" not in response:
            chunk = sock.recv(4096)
            if not chunk:
                break
            response += chunk
    except OSError:
        pass
    sock.close()
    line = response.split(b"\r\n")[0].decode("latin-1")
    return {"status_line": line, "status": int(line.split(" ")[1]) if line.startswith("HTTP/") else None,
            "elapsed": time.monotonic() - started}


def auth_server():
    """A forward-auth service, as an app would write one: it decides by the session cookie and
    counts the calls it gets (GET /calls answers the count)."""
    import http.server
    import threading
    calls = {"n": 0, "last": {}}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/calls":
                body = json.dumps({"calls": calls["n"], "last": calls["last"]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            calls["n"] += 1
            calls["last"] = {k.lower(): v for k, v in self.headers.items()}
            cookie = self.headers.get("Cookie", "")
            if "session=good" in cookie:
                self.send_response(200)
                self.send_header("X-User-Id", "u-good")
                self.send_header("X-Team", "blue")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif "session=slow" in cookie:
                # Far past the gateway's timeout, so only the timeout can end the wait.
                time.sleep(20)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif "session=broken" in cookie:
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                body = b"denied by the app\n"
                self.send_response(403 if "session=" in cookie else 401)
                self.send_header("WWW-Authenticate", 'Cookie realm="app"')
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    announce(server.server_address[1])
    server.serve_forever()


def path_auth_server():
    """A forward-auth service that decides by path and method, as an app's would: /app/ok
    (any method) and GET /app/ro are allowed, anything else under /app is refused with 403.
    It records what it was shown (GET /calls answers the list)."""
    import http.server
    calls = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/calls":
                body = json.dumps(calls).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            uri = self.headers.get("X-Forwarded-Uri", "")
            method = self.headers.get("X-Forwarded-Method", "")
            calls.append({"uri": uri, "method": method, "host": self.headers.get("X-Forwarded-Host"),
                          "cookie": self.headers.get("Cookie")})
            path = uri.split("?")[0]
            allowed = path == "/app/ok" or path.startswith("/app/ok/") or \
                ((path == "/app/ro" or path.startswith("/app/ro/")) and method == "GET")
            if allowed and "session=" in self.headers.get("Cookie", ""):
                self.send_response(200)
                self.send_header("X-User-Id", "u-1")
            else:
                self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    announce(server.server_address[1])
    server.serve_forever()


def http_backend(name, tls=None):
    """A plain HTTP/1.1 backend (Python's http.server) with one behaviour per path, for the
    reverse-proxy tests. It counts the TCP connections it accepted, the requests, and the
    requests to the slow and delay paths it has begun (GET /stats)."""
    import http.server
    import hashlib
    stats = {"connections": 0, "requests": 0, "slow": 0, "delay": 0}
    import threading
    acks = [threading.Event() for _ in range(4)]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def setup(self):
            super().setup()
            stats["connections"] += 1

        def send_json(self, value, status=200, extra=()):
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, val in extra:
                self.send_header(key, val)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def read_body(self):
            digest, count = hashlib.sha256(), 0
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    remaining = size
                    while remaining:
                        chunk = self.rfile.read(min(remaining, 1 << 20))
                        digest.update(chunk)
                        count += len(chunk)
                        remaining -= len(chunk)
                    self.rfile.readline()
            else:
                remaining = int(self.headers.get("Content-Length", 0))
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    digest.update(chunk)
                    count += len(chunk)
                    remaining -= len(chunk)
            return count, digest.hexdigest()

        def do_HEAD(self):
            self.do_GET()

        def seconds(self, default=None):
            """The `s=` query parameter: how long /delay and /stall wait."""
            values = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("s")
            return float(values[0]) if values else default

        def do_GET(self):
            stats["requests"] += 1
            path = self.path.split("?")[0]
            if path.endswith("/stats"):
                return self.send_json(stats)
            if path.endswith("/ack"):
                index = int(self.path.split("n=")[1])
                acks[index].set()
                return self.send_json({"acked": index})
            if path.endswith("/sse-acked"):
                # Each event waits for the client to say it has it (GET /ack?n=N on this backend,
                # beside the proxy) before the next is sent: a proxy that held events back would
                # leave the stream stalled, and the answer records that.
                for flag in acks:
                    flag.clear()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                waited = []
                for index in range(4):
                    data = f"data: event {index}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                    waited.append(acks[index].wait(10))
                data = ("data: acked " + json.dumps(waited) + "\n\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
                return
            if path.endswith("/sse"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for index in range(4):
                    data = f"data: event {index}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                    time.sleep(0.3)
                self.wfile.write(b"0\r\n\r\n")
                return
            if path.endswith("/download"):
                total = int(self.path.split("bytes=")[1].split("&")[0])
                chunked = "chunked=1" in self.path
                self.send_response(200)
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(total))
                self.end_headers()
                block = b"\xab" * (1 << 20)
                while total > 0:
                    piece = block[:min(total, len(block))]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                    total -= len(piece)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                return
            if path.endswith("/slow"):
                stats["slow"] += 1
                time.sleep(3)
            if path.endswith("/pause"):
                time.sleep(0.4)
            if path.endswith("/delay"):
                stats["delay"] += 1
                time.sleep(self.seconds())
                # `code=`: the answer after the wait has that status (a backend failing slowly).
                codes = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("code")
                if codes:
                    return self.send_json({"delayed": self.seconds()}, status=int(codes[0]))
            if path.endswith("/stall"):
                # A tenth of the promised body, then silence.
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.write(b"x" * 10)
                self.wfile.flush()
                time.sleep(self.seconds(default=4))
                self.close_connection = True
                return
            if path.endswith("/die"):
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"x" * 1000)
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if path.endswith("/garbage"):
                self.wfile.write(b"THIS IS NOT HTTP\r\n\r\n")
                self.wfile.flush()
                self.close_connection = True
                return
            if path.endswith("/unframed"):
                # No Content-Length, no chunks: the body ends when the connection does.
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"until close\n")
                self.wfile.flush()
                self.close_connection = True
                return
            if path.endswith("/early"):
                self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
                self.wfile.flush()
            if path.endswith("/extra"):
                # A response, then bytes that look like another nobody asked for.
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
                self.wfile.flush()
                return
            if path.endswith("/204"):
                self.send_response(204)
                self.end_headers()
                return
            if path.endswith("/304"):
                self.send_response(304)
                self.send_header("ETag", '"v1"')
                self.end_headers()
                return
            self.send_json({"backend": name, "path": self.path, "method": self.command,
                            "headers": {k.lower(): v for k, v in self.headers.items()}},
                           extra=[("X-Backend", name), ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5")])

        def do_POST(self):
            stats["requests"] += 1
            count, digest = self.read_body()
            self.send_json({"backend": name, "received": count, "sha256": digest,
                            "headers": {k.lower(): v for k, v in self.headers.items()}})

        do_PUT = do_POST

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls:
        # tls is "CERT,KEY": an https:// backend.
        cert, key = tls.split(",")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    announce(server.server_address[1])
    server.serve_forever()


def http_flaky():
    """A keep-alive HTTP backend that answers the first request on each connection and closes
    the connection, unanswered, on the second — a kept-alive connection gone stale under a
    proxy. It counts the requests it answered (GET /answered answers too)."""
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    answered = {"n": 0}

    def serve(conn):
        served = 0
        data = b""
        try:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                if served == 1:
                    return  # the stale connection: closed without an answer
                served += 1
                answered["n"] += 1
                body = json.dumps({"answered": answered["n"], "request": head.split(b"\r\n")[0].decode()}).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/json\r\n\r\n%s" % (len(body), body))
        finally:
            conn.close()

    announce(server.getsockname()[1])
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def http_exchange(host, port, payload, expect, half_close=False):
    """Sends raw bytes (with \\r\\n escapes), half-closes if asked, and reads until `expect`
    responses arrived or the connection closed; returns the responses' status codes and bodies,
    in order, whether the server closed, and whether a read waited out the socket's 10 s
    timeout instead (a timeout is not a close: a connection that hangs must not pass as closed)."""
    sock = socket.create_connection((host, int(port)), timeout=10)
    started = time.monotonic()
    sock.sendall(payload.encode().decode("unicode_escape").encode("latin-1"))
    if half_close:
        sock.shutdown(socket.SHUT_WR)
    data = b""
    responses = []
    closed = False
    timed_out = False
    try:
        while len(responses) < expect:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            data += chunk
            while True:
                head_end = data.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                head = data[:head_end].decode("latin-1")
                lines = head.split("\r\n")
                fields = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
                length = int(fields.get("content-length", 0))
                if len(data) < head_end + 4 + length:
                    break
                body = data[head_end + 4:head_end + 4 + length].decode("utf-8", "replace")
                responses.append({"status": int(lines[0].split(" ")[1]), "body": body, "headers": fields})
                data = data[head_end + 4 + length:]
        if not closed:
            # A half-closed client is owed a close: wait for it as long as a loaded machine may
            # take (it returns at the close). Otherwise half a second shows the connection kept.
            sock.settimeout(10 if half_close else 0.5)
            try:
                closed = sock.recv(1) == b""
            except socket.timeout:
                closed = False
    except socket.timeout:
        timed_out = True
    except OSError:
        closed = True
    sock.close()
    return {"responses": responses, "closed": closed, "timed_out": timed_out,
            "elapsed": time.monotonic() - started}


def http_sequence(host, port, steps):
    """Python's own HTTP client on one kept-alive connection: each step is
    [method, path, seconds to wait before it]; returns each answer's status and JSON body."""
    import http.client
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    answers = []
    for method, path, wait in json.loads(steps):
        time.sleep(wait)
        connection.request(method, path, body=b"payload" if method == "POST" else None)
        response = connection.getresponse()
        body = response.read()
        try:
            answers.append({"status": response.status, "body": json.loads(body)})
        except ValueError:
            answers.append({"status": response.status, "body": body.decode("utf-8", "replace")})
    connection.close()
    return {"answers": answers}


def main():
    # The test process may spawn us with signals blocked; unblock them, and die with it even
    # when it is killed.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    exit_when_parent_goes()
    role = sys.argv[1]
    if role == "backend":
        asyncio.run(backend(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
    elif role == "http-backend":
        http_backend(sys.argv[2] if len(sys.argv) > 2 else "backend", sys.argv[3] if len(sys.argv) > 3 else None)
    elif role == "http-flaky":
        http_flaky()
    elif role == "http-exchange":
        half_close = len(sys.argv) > 6 and sys.argv[6] == "half-close"
        print(json.dumps(http_exchange(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), half_close)), flush=True)
    elif role == "auth-server":
        auth_server()
    elif role == "path-auth-server":
        path_auth_server()
    elif role == "raw-backend":
        raw_backend(sys.argv[2])
    elif role == "client":
        extra = sys.argv[4] if len(sys.argv) > 4 else ""
        print(json.dumps(asyncio.run(client(sys.argv[2], sys.argv[3], extra))), flush=True)
    elif role == "raw-client":
        extra = sys.argv[5] if len(sys.argv) > 5 else ""
        print(json.dumps(raw_client(sys.argv[2], sys.argv[3], sys.argv[4], extra)), flush=True)
    elif role == "tls-probe":
        print(json.dumps(tls_probe(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] if len(sys.argv) > 5 else "")), flush=True)
    elif role == "http-sequence":
        print(json.dumps(http_sequence(sys.argv[2], sys.argv[3], sys.argv[4])), flush=True)
    elif role == "http-raw":
        print(json.dumps(http_raw(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]) if len(sys.argv) > 5 else 0)), flush=True)
    else:
        sys.exit(f"unknown role {role}")


if __name__ == "__main__":
    main()
