#!/usr/bin/env python3
"""HTTP/2 clients for the HTTP/2 tests, on the `h2` library (no one here wrote it): WebSockets
over HTTP/2 by extended CONNECT (RFC 8441) with raw WebSocket frames, and the abuses an HTTP/2
server must survive. Each prints one JSON object.

  h2_peer.py ws HOST PORT JSON          one WebSocket: {"path", "tls", "messages", "subprotocols",
                                        "origin", "close_code", "authority"}; echoes checked
  h2_peer.py ws-many HOST PORT JSON     {"streams", "messages"} WebSockets on one connection
  h2_peer.py reset-mid-message HOST PORT JSON
                                        opens a WebSocket, sends half a frame, resets the stream
  h2_peer.py stall HOST PORT JSON       a WebSocket to a flooding backend, granting no window
                                        for {"seconds"}: what came meanwhile, then all of it
  h2_peer.py sse-acked HOST PORT JSON   server-sent events, each acknowledged to the backend
  h2_peer.py cases HOST PORT JSON       frame-level WebSocket cases, one stream each
  h2_peer.py goaway-watch HOST PORT JSON
                                        a WebSocket echoing every 100 ms; prints "OPEN" then waits
                                        for GOAWAY and echoes {"after"} seconds more
  h2_peer.py rapid-reset HOST PORT JSON opens and resets {"count"} streams
  h2_peer.py continuation-flood HOST PORT JSON
                                        HEADERS then {"count"} CONTINUATION frames
  h2_peer.py ping-flood HOST PORT JSON  {"count"} PINGs ({"kind": "settings"} for SETTINGS)
  h2_peer.py streams HOST PORT JSON     {"count"} requests left open ({"path"}): how many refused
  h2_peer.py cancel-then-request HOST PORT JSON
                                        a request reset in flight, then another on the connection
  h2_peer.py request HOST PORT JSON     one request {"method", "path", "headers", "body"}
                                        (outbound headers not validated: the peer may send what
                                        HTTP/2 forbids)
"""
import base64
import collections
import hashlib
import json
import urllib.request
import os
import socket
import ssl
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from lifeline import exit_when_parent_goes


def ws_frame(opcode, payload, fin=True):
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def parse_frames(buffer):
    """Complete server frames at the front of `buffer`: [(opcode, fin, payload)], rest."""
    frames = []
    while len(buffer) >= 2:
        first, second = buffer[0], buffer[1]
        length = second & 0x7F
        offset = 2
        if length == 126:
            if len(buffer) < 4:
                break
            length = struct.unpack("!H", buffer[2:4])[0]
            offset = 4
        elif length == 127:
            if len(buffer) < 10:
                break
            length = struct.unpack("!Q", buffer[2:10])[0]
            offset = 10
        if second & 0x80:
            offset += 4
        if len(buffer) < offset + length:
            break
        frames.append((first & 0x0F, bool(first & 0x80), bytes(buffer[offset:offset + length])))
        buffer = buffer[offset + length:]
    return frames, buffer


class Client:
    """One HTTP/2 connection, driven by hand: `pump` reads and handles events until a condition."""

    def __init__(self, host, port, tls=True, validate=True, auto_ack=True):
        sock = socket.create_connection((host, port), timeout=10)
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(sock, server_hostname="localhost")
            self.alpn = sock.selected_alpn_protocol()
        else:
            self.alpn = None
        self.sock = sock
        self.tls = tls
        config = h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=validate, normalize_outbound_headers=validate
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.auto_ack = auto_ack
        self.remote_settings = {}
        self.responses = {}
        self.data = {}
        self.ended = set()
        self.resets = {}
        self.goaway = None
        self.closed = False
        # What h2 refused in the server's frames, if anything (the connection is given up).
        self.protocol_error = None
        self.pending_ack = {}
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                # The server closed while this peer was still sending (an attack ended in
                # GOAWAY): its last frames may still be waiting to be read, so read them.
                self.pump(lambda: False, timeout=5, send=False)
                self.closed = True

    def pump(self, until, timeout=10, send=True):
        """Reads and handles frames until `until()`, the close, or `timeout`; answers what the
        frames ask for (`send`), unless the connection can no longer be written."""
        deadline = time.time() + timeout
        while not until() and not self.closed and time.time() < deadline:
            self.sock.settimeout(max(0.01, min(0.2, deadline - time.time())))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (OSError, ssl.SSLError):
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            try:
                events = self.conn.receive_data(chunk)
            except h2.exceptions.ProtocolError as error:
                self.closed = True
                self.protocol_error = str(error)
                break
            for event in events:
                self.handle(event)
            if send:
                self.flush()
        return until()

    def handle(self, event):
        if isinstance(event, h2.events.RemoteSettingsChanged):
            for code, setting in event.changed_settings.items():
                self.remote_settings[int(code)] = setting.new_value
        elif isinstance(event, h2.events.ResponseReceived):
            self.responses.setdefault(event.stream_id, []).append(dict(event.headers))
        elif isinstance(event, h2.events.InformationalResponseReceived):
            self.responses.setdefault(event.stream_id, []).append(dict(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            self.data.setdefault(event.stream_id, bytearray()).extend(event.data)
            if self.auto_ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            else:
                self.pending_ack[event.stream_id] = self.pending_ack.get(event.stream_id, 0) + event.flow_controlled_length
        elif isinstance(event, h2.events.StreamEnded):
            self.ended.add(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.resets[event.stream_id] = int(event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = {"error": int(event.error_code), "last_stream": event.last_stream_id}
            if int(event.error_code) == 0:
                # RFC 9113 §6.8: after a graceful GOAWAY the streams up to its last stream ID go
                # on. h2's state machine closes the whole connection instead; reopen it.
                self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN

    def grant(self):
        for stream, length in self.pending_ack.items():
            try:
                self.conn.acknowledge_received_data(length, stream)
            except h2.exceptions.StreamClosedError:
                pass
        self.pending_ack = {}
        self.flush()

    def status(self, stream):
        finals = [r for r in self.responses.get(stream, []) if not r.get(":status", "1").startswith("1")]
        return int(finals[0][":status"]) if finals else None

    def open_websocket(self, path, authority, subprotocols=None, origin=None, early=()):
        """Opens a WebSocket by extended CONNECT; `early` frames go out right behind the
        HEADERS, before the 200 (which RFC 6455 asks a client to wait for)."""
        self.pump(lambda: 8 in self.remote_settings)
        stream = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https" if self.tls else "http"),
            (":path", path), (":authority", authority), ("sec-websocket-version", "13"),
        ]
        if subprotocols:
            headers.append(("sec-websocket-protocol", ", ".join(subprotocols)))
        if origin:
            headers.append(("origin", origin))
        self.conn.send_headers(stream, headers)
        for frame in early:
            self.conn.send_data(stream, frame)
        self.flush()
        self.pump(lambda: self.status(stream) is not None or stream in self.resets)
        return stream

    def send(self, stream, data, end=False):
        # Within the flow-control window: wait for WINDOW_UPDATEs as needed.
        view = memoryview(data)
        while len(view) > 0:
            window = min(self.conn.local_flow_control_window(stream), self.conn.max_outbound_frame_size)
            if window <= 0:
                if not self.pump(lambda: self.conn.local_flow_control_window(stream) > 0, timeout=5):
                    return False
                continue
            self.conn.send_data(stream, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(stream)
            self.flush()
        return True

    def frames(self, stream, buffers):
        frames, rest = parse_frames(bytes(self.data.get(stream, b"")))
        self.data[stream] = bytearray(rest)
        buffers.extend(frames)
        return buffers


def echo_messages(client, stream, messages, timeout=10):
    """Sends each message as a text frame and reads its echo; returns the echoes."""
    echoes = []
    received = []
    for message in messages:
        client.send(stream, ws_frame(0x1, message.encode()))
        client.pump(lambda: len([f for f in client.frames(stream, received) if f[0] == 0x1]) > len(echoes), timeout=timeout)
        texts = [f for f in received if f[0] == 0x1]
        if len(texts) > len(echoes):
            echoes.append(texts[len(echoes)][2].decode())
        else:
            break
    return echoes, received


def close_websocket(client, stream, code, received):
    client.send(stream, ws_frame(0x8, struct.pack("!H", code)))
    client.pump(lambda: any(f[0] == 0x8 for f in client.frames(stream, received)) or stream in client.resets)
    close = [f for f in received if f[0] == 0x8]
    closed_with = struct.unpack("!H", close[0][2][:2])[0] if close and len(close[0][2]) >= 2 else None
    # RFC 8441: the stream ends with END_STREAM both ways once the close handshake is done.
    client.conn.end_stream(stream)
    client.flush()
    client.pump(lambda: stream in client.ended or stream in client.resets, timeout=5)
    return closed_with


def scenario_ws(host, port, options):
    client = Client(host, port, tls=options.get("tls", True))
    authority = options.get("authority", "localhost")
    early = options.get("early", [])
    stream = client.open_websocket(
        options.get("path", "/echo"), authority, options.get("subprotocols"), options.get("origin"),
        early=[ws_frame(0x1, message.encode()) for message in early],
    )
    result = {
        "alpn": client.alpn, "enable_connect_protocol": client.remote_settings.get(8), "status": client.status(stream),
        "headers": (client.responses.get(stream) or [{}])[-1], "reset": client.resets.get(stream),
    }
    if result["status"] == 200:
        if early:
            # The frames sent before the 200 come back first, in order.
            seen = []
            client.pump(lambda: len([f for f in client.frames(stream, seen) if f[0] == 0x1]) >= len(early), timeout=10)
            result["early_echoes"] = [f[2].decode() for f in seen if f[0] == 0x1]
        echoes, received = echo_messages(client, stream, options.get("messages", ["hello"]))
        result["echoes"] = echoes
        if options.get("admin"):
            # What the gateway shows of this WebSocket while it is open.
            result["connections"] = json.load(urllib.request.urlopen(options["admin"]))
        result["close_code"] = close_websocket(client, stream, options.get("close_code", 1000), received)
        result["ended_cleanly"] = stream in client.ended and stream not in client.resets
        result["stream_reset"] = client.resets.get(stream)
    else:
        client.pump(lambda: stream in client.ended or stream in client.resets, timeout=5)
        result["body"] = bytes(client.data.get(stream, b"")).decode(errors="replace")
    return result


def scenario_ws_many(host, port, options):
    client = Client(host, port, tls=options.get("tls", True))
    count = options.get("streams", 10)
    messages = options.get("messages", 5)
    opened = [
        client.open_websocket(options.get("path", "/echo"), "localhost", options.get("subprotocols"), options.get("origin"))
        for _ in range(count)
    ]
    statuses = [client.status(s) for s in opened]
    streams = [s for s in opened if client.status(s) == 200]
    received = {s: [] for s in streams}
    for index in range(messages):
        for stream in streams:
            client.send(stream, ws_frame(0x1, f"{stream}:{index}".encode()))

    def done():
        return all(len([f for f in client.frames(s, received[s]) if f[0] == 0x1]) >= messages for s in streams)

    client.pump(done, timeout=20)
    intact = all([f[2].decode() for f in received[s] if f[0] == 0x1][:messages] == [f"{s}:{i}" for i in range(messages)] for s in streams)
    codes = [close_websocket(client, s, 1000, received[s]) for s in streams]
    return {"statuses": statuses, "intact": intact, "close_codes": codes, "echoed": len(streams)}


def scenario_reset_mid_message(host, port, options):
    client = Client(host, port, tls=options.get("tls", True))
    stream = client.open_websocket(options.get("path", "/echo"), "localhost")
    status = client.status(stream)
    frame = ws_frame(0x2, os.urandom(1000))
    client.send(stream, frame[:100])
    time.sleep(0.2)
    client.conn.reset_stream(stream, error_code=8)
    client.flush()
    # The connection goes on: another WebSocket on it works.
    other = client.open_websocket(options.get("path", "/echo"), "localhost")
    echoes, received = echo_messages(client, other, ["after"])
    close_websocket(client, other, 1000, received)
    return {"status": status, "other_status": client.status(other), "other_echoes": echoes, "goaway": client.goaway}


def scenario_stall(host, port, options):
    """A WebSocket to a backend that sends {"bytes"} as fast as it can: the client grants no
    window for {"seconds"}, notes what came (and what the gateway read from the backend, from
    {"admin"}'s /connections), then reads everything and checks it."""
    client = Client(host, port, tls=options.get("tls", True), auto_ack=False)
    stream = client.open_websocket(options.get("path", "/flood"), "localhost")
    status = client.status(stream)
    client.pump(lambda: False, timeout=options.get("seconds", 3))
    received_while_stalled = len(client.data.get(stream, b""))
    backend_read = None
    if options.get("admin"):
        listing = json.load(urllib.request.urlopen(options["admin"]))
        backend_read = sum(c["backend_to_client"]["bytes"] for c in listing["connections"])
    client.auto_ack = True
    client.grant()
    received = []
    payload = 0
    intact = True
    # Pure-Python h2 reads 64 MiB slowly on a loaded machine: the bound is generous.
    client.pump(lambda: any(f[0] == 0x8 for f in client.frames(stream, received)), timeout=240)
    for opcode, _, data in received:
        if opcode in (0x0, 0x2):
            payload += len(data)
            intact = intact and data == b"\xab" * len(data)
    close = [f for f in received if f[0] == 0x8]
    code = struct.unpack("!H", close[0][2][:2])[0] if close else None
    return {
        "status": status, "received_while_stalled": received_while_stalled, "backend_read_while_stalled": backend_read,
        "payload": payload, "intact": intact, "close_code": code,
    }


def scenario_sse_acked(host, port, options):
    """GET {"path"} (the backend's acknowledged server-sent events): each event is acknowledged
    to the backend ({"backend"} port) as soon as it arrives."""
    client = Client(host, port, tls=options.get("tls", True))
    client.pump(lambda: 3 in client.remote_settings)
    stream = client.conn.get_next_available_stream_id()
    client.conn.send_headers(stream, [
        (":method", "GET"), (":scheme", "https" if client.tls else "http"), (":path", options["path"]), (":authority", "localhost"),
    ], end_stream=True)
    client.flush()
    seen = 0

    def progress():
        nonlocal seen
        data = bytes(client.data.get(stream, b""))
        while b"data: event %d" % seen in data:
            urllib.request.urlopen("http://127.0.0.1:%d/ack?n=%d" % (options["backend"], seen)).read()
            seen += 1
        return stream in client.ended or stream in client.resets

    client.pump(progress, timeout=30)
    data = bytes(client.data.get(stream, b""))
    acked = None
    if b"data: acked" in data:
        acked = json.loads(data[data.index(b"data: acked") + 12:].split(b"\n")[0])
    return {"status": client.status(stream), "seen": seen, "acked": acked}


class H2Socket:
    """A WebSocket on a stream of an HTTP/2 connection (RFC 8441)."""

    def __init__(self, client, path):
        self.client = client
        self.stream = client.open_websocket(path, "localhost")
        self.status = client.status(self.stream)
        self.received = []

    def send(self, data):
        self.client.send(self.stream, data)

    def pump(self, until, timeout=10, send=True):
        """Reads and handles frames until `until()`, the close, or `timeout`; answers what the
        frames ask for (`send`), unless the connection can no longer be written."""
        client, stream = self.client, self.stream
        client.pump(lambda: until(client.frames(stream, self.received)) or stream in client.resets or stream in client.ended, timeout=timeout)
        return self.received

    def close(self, code):
        if self.stream in self.client.resets or self.stream in self.client.ended:
            return None
        return close_websocket(self.client, self.stream, code, self.received)


class H1Socket:
    """A WebSocket by an HTTP/1.1 upgrade on a TCP connection of its own."""

    def __init__(self, host, port, path, tls=False):
        self.sock = socket.create_connection((host, port), timeout=10)
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["http/1.1"])
            self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, self.buffer = data.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1]) if head else None
        self.received = []
        self.closed = False

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def pump(self, until, timeout=10, send=True):
        """Reads and handles frames until `until()`, the close, or `timeout`; answers what the
        frames ask for (`send`), unless the connection can no longer be written."""
        deadline = time.time() + timeout
        while True:
            frames, self.buffer = parse_frames(self.buffer)
            self.received.extend(frames)
            if until(self.received) or self.closed or time.time() > deadline:
                return self.received
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
            self.buffer += chunk

    def close(self, code):
        if self.closed:
            return None
        self.send(ws_frame(0x8, struct.pack("!H", code)))
        self.pump(lambda frames: any(f[0] == 0x8 for f in frames), timeout=5)
        close = [f for f in self.received if f[0] == 0x8]
        return struct.unpack("!H", close[0][2][:2])[0] if close and len(close[0][2]) >= 2 else None


def scenario_cases(host, port, options):
    """Frame-level WebSocket cases, each on its own WebSocket: over RFC 8441 streams of one
    connection, or with {"h1": true} by HTTP/1.1 upgrades. What came back per case: the frames
    (opcode, fin, length), digests of the data, pongs, the close code."""
    client = None if options.get("h1") else Client(host, port, tls=options.get("tls", True))
    path = options.get("path", "/echo")
    results = {}

    def run(name, frames, expect_echo=None):
        socket_ = H1Socket(host, port, path, options.get("tls", True)) if client is None else H2Socket(client, path)
        if socket_.status not in (101, 200):
            results[name] = {"status": socket_.status}
            return
        for frame in frames:
            socket_.send(frame)

        def done(received):
            return any(f[0] == 0x8 for f in received) or (
                expect_echo is not None and len([f for f in received if f[0] in (0x1, 0x2, 0xA)]) >= expect_echo)

        received = socket_.pump(done)
        outcome = {"frames": [(f[0], f[1], len(f[2])) for f in received]}
        outcome["payloads"] = [hashlib.sha256(f[2]).hexdigest()[:16] for f in received if f[0] in (0x1, 0x2)]
        outcome["pongs"] = [f[2].decode(errors="replace")[:40] for f in received if f[0] == 0xA]
        close = [f for f in received if f[0] == 0x8]
        if close:
            outcome["close_code"] = struct.unpack("!H", close[0][2][:2])[0] if len(close[0][2]) >= 2 else None
        else:
            outcome["close_code"] = socket_.close(1000)
        results[name] = outcome

    def unmasked(opcode, payload):
        return struct.pack("!BB", 0x80 | opcode, len(payload)) + payload

    run("fragmented", [ws_frame(0x1, b"frag", fin=False), ws_frame(0x0, b"men", fin=False), ws_frame(0x0, b"ted")], expect_echo=1)
    run("ping", [ws_frame(0x9, b"are you there")], expect_echo=1)
    run("ping-inside-fragments", [ws_frame(0x1, b"a", fin=False), ws_frame(0x9, b"p"), ws_frame(0x0, b"b")], expect_echo=2)
    run("binary-64k", [ws_frame(0x2, b"\x01" * 65536)], expect_echo=1)
    run("empty-text", [ws_frame(0x1, b"")], expect_echo=1)
    run("invalid-utf8", [ws_frame(0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64")], expect_echo=1)
    run("unmasked", [unmasked(0x1, b"not masked")])
    run("reserved-opcode", [ws_frame(0x3, b"")])
    run("reserved-bit", [bytes([0xC1]) + ws_frame(0x1, b"rsv")[1:]])
    run("fragmented-control", [ws_frame(0x9, b"ping", fin=False)])
    run("oversized-control", [ws_frame(0x9, b"x" * 126)])
    run("close-1000-reason", [ws_frame(0x8, struct.pack("!H", 1000) + b"bye")])
    run("close-4000", [ws_frame(0x8, struct.pack("!H", 4000))])
    run("oversized", [ws_frame(0x2, b"\x00" * options.get("oversized", 70000))], expect_echo=1)
    run("continuation-without-start", [ws_frame(0x0, b"orphan")])
    run("text-inside-fragments", [ws_frame(0x1, b"a", fin=False), ws_frame(0x1, b"b")])
    return results


def scenario_goaway_watch(host, port, options):
    """A WebSocket echoing a numbered message every 100 ms. Prints "OPEN" once open, then goes
    on until {"echoes_after"} echoes (or {"after"} seconds) past a GOAWAY, or until the server
    closes the WebSocket (a drain reaching it): which came, in what order, and whether every
    echo came back in order."""
    client = Client(host, port, tls=options.get("tls", True))
    stream = client.open_websocket(options.get("path", "/echo"), "localhost")
    received = []
    sent = 0
    echoed_after_goaway = 0
    failures = 0
    server_close = None
    print("OPEN", flush=True)
    deadline = time.time() + options.get("timeout", 20)
    after = None
    goaway_before_close = None
    missed = None
    while time.time() < deadline:
        sent += 1
        goaway_before = client.goaway is not None
        client.send(stream, ws_frame(0x1, f"m{sent}".encode()))

        def answered(frames):
            return len([f for f in frames if f[0] == 0x1]) >= sent or any(f[0] == 0x8 for f in frames)

        client.pump(lambda: answered(client.frames(stream, received)) or stream in client.resets, timeout=options.get("echo_timeout", 10))
        close = [f for f in received if f[0] == 0x8]
        if close:
            goaway_before_close = client.goaway is not None
            server_close = struct.unpack("!H", close[0][2][:2])[0] if len(close[0][2]) >= 2 else None
            sent -= 1
            break
        if len([f for f in received if f[0] == 0x1]) < sent:
            failures += 1
            # Why the wait ended without the echo: the stream reset, the connection closed (and
            # whether h2 refused a frame), or the echo timeout.
            missed = {"message": sent, "reset": client.resets.get(stream), "closed": client.closed,
                      "protocol_error": client.protocol_error}
            break
        if goaway_before:
            echoed_after_goaway += 1
        if options.get("echoes_after") is not None and echoed_after_goaway >= options["echoes_after"]:
            break
        if client.goaway and after is None:
            after = time.time() + options.get("after", 1)
        if after and time.time() >= after and options.get("echoes_after") is None:
            break
        time.sleep(0.1)
    texts = [f[2].decode() for f in received if f[0] == 0x1]
    result = {
        "goaway": client.goaway, "sent": sent, "echoed": len(texts), "in_order": texts == [f"m{i}" for i in range(1, len(texts) + 1)],
        "echoed_after_goaway": echoed_after_goaway, "failures": failures, "server_close_code": server_close,
        "missed": missed,
    }
    if server_close is not None:
        # Answer the server's close, and end the stream as RFC 8441 asks.
        client.send(stream, ws_frame(0x8, struct.pack("!H", server_close)))
        client.conn.end_stream(stream)
        client.flush()
        client.pump(lambda: stream in client.ended or stream in client.resets, timeout=5)
    elif not client.closed and stream not in client.resets:
        result["close_code"] = close_websocket(client, stream, 1000, received)
    # Once its last stream is done, a connection that got GOAWAY is closed by the server.
    client.pump(lambda: False, timeout=options.get("linger", 3))
    result["connection_closed"] = client.closed
    # A GOAWAY that came after the WebSocket's close counts too; whether it came first is told apart.
    result["goaway"] = client.goaway
    result["goaway_before_close"] = goaway_before_close
    return result


def scenario_rapid_reset(host, port, options):
    client = Client(host, port, tls=options.get("tls", True))
    client.pump(lambda: 3 in client.remote_settings)
    count = options.get("count", 1000)
    sent = 0
    started = time.time()
    for _ in range(count):
        if client.closed or client.goaway:
            break
        stream = client.conn.get_next_available_stream_id()
        try:
            client.conn.send_headers(stream, [(":method", "GET"), (":scheme", "https"), (":path", options.get("path", "/")), (":authority", "localhost")], end_stream=True)
            client.conn.reset_stream(stream, error_code=8)
        except h2.exceptions.ProtocolError:
            break
        client.flush()
        sent += 1
        if sent % 20 == 0:
            client.pump(lambda: False, timeout=0.01)
    client.pump(lambda: client.closed, timeout=5)
    return {"resets_sent": sent, "goaway": client.goaway, "closed": client.closed, "seconds": time.time() - started}


def raw_frame(kind, flags, stream, payload):
    return struct.pack("!I", len(payload))[1:] + bytes([kind, flags]) + struct.pack("!I", stream) + payload


def flood(client, frames):
    """Writes raw frames until the server stops taking them; how many went, and the outcome."""
    sent = 0
    try:
        for frame in frames:
            client.sock.sendall(frame)
            sent += 1
    except OSError:
        pass
    client.pump(lambda: client.closed, timeout=5)
    return {"sent": sent, "goaway": client.goaway, "closed": client.closed}


def scenario_continuation_flood(host, port, options):
    client = Client(host, port, tls=options.get("tls", True))
    client.pump(lambda: 3 in client.remote_settings)
    # A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION frames.
    block = client.conn.encoder.encode([(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "localhost")])
    stream = client.conn.get_next_available_stream_id()
    frames = [raw_frame(0x1, 0x1, stream, block)] + [raw_frame(0x9, 0x0, stream, b"\x40\x01x\x01y")] * options.get("count", 1000)
    return flood(client, frames)


def scenario_ping_flood(host, port, options):
    client = Client(host, port, tls=options.get("tls", True))
    client.pump(lambda: 3 in client.remote_settings)
    count = options.get("count", 1000)
    if options.get("kind") == "settings":
        frames = [raw_frame(0x4, 0x0, 0, struct.pack("!HI", 0x3, 100))] * count
    else:
        frames = [raw_frame(0x6, 0x0, 0, struct.pack("!Q", index)) for index in range(count)]
    return flood(client, frames)


def scenario_streams(host, port, options):
    # A connection whose first stream came after the listener's idle timeout (a machine busy
    # enough to stall this peer) gets the idle GOAWAY before any stream: that is the idle
    # defence, not the stream cap under test, so such a run is made again on a new connection.
    for _ in range(3):
        result = streams_once(host, port, options)
        goaway = result["goaway"]
        if not (goaway and goaway["error"] == 0 and goaway["last_stream"] == 0 and result["answered"] == 0):
            break
    return result


def streams_once(host, port, options):
    client = Client(host, port, tls=options.get("tls", True))
    client.pump(lambda: 3 in client.remote_settings)
    advertised = client.remote_settings.get(3)
    count = options.get("count", 110)
    streams = []
    for _ in range(count):
        stream = client.conn.get_next_available_stream_id()
        # h2 itself refuses to exceed the advertised limit; the peer is made to ignore it.
        client.conn.remote_settings._settings[3] = collections.deque([1 << 30])
        client.conn.send_headers(stream, [
            (":method", "POST"), (":scheme", "https"), (":path", options.get("path", "/")), (":authority", "localhost"),
        ])
        streams.append(stream)
        client.flush()
    client.pump(lambda: len(client.resets) >= count - advertised, timeout=5)
    refused = sum(1 for s in streams if client.resets.get(s) == 7)
    # The connection still serves: end the open ones.
    for stream in streams:
        if stream not in client.resets:
            try:
                client.conn.end_stream(stream)
            except h2.exceptions.ProtocolError:
                pass
    client.flush()
    client.pump(lambda: all(s in client.ended or s in client.resets for s in streams), timeout=10)
    answered = sum(1 for s in streams if client.status(s) is not None)
    return {"advertised": advertised, "refused": refused, "answered": answered, "closed": client.closed, "goaway": client.goaway, "resets": list(client.resets.values())}


def scenario_request(host, port, options):
    client = Client(host, port, tls=options.get("tls", True), validate=False)
    client.pump(lambda: 3 in client.remote_settings)
    stream = client.conn.get_next_available_stream_id()
    headers = [
        (":method", options.get("method", "GET")), (":scheme", "https" if client.tls else "http"), (":path", options.get("path", "/")),
        (":authority", options.get("authority", "localhost")),
    ] + [tuple(h) for h in options.get("headers", [])]
    body = options.get("body")
    client.conn.send_headers(stream, headers, end_stream=body is None)
    client.flush()
    if body is not None:
        client.send(stream, body.encode(), end=True)
    client.pump(lambda: stream in client.ended or stream in client.resets, timeout=10)
    if options.get("linger"):
        # Stays connected, idle, to see whether the server ends the connection.
        client.pump(lambda: False, timeout=options["linger"])
    return {
        "status": client.status(stream), "headers": (client.responses.get(stream) or [{}])[-1], "reset": client.resets.get(stream),
        "body": bytes(client.data.get(stream, b"")).decode(errors="replace"), "goaway": client.goaway, "closed": client.closed,
    }


def scenario_vanish(host, port, options):
    """A client that fails at {"step"}: "half-headers" (HEADERS without END_HEADERS, then it
    stays, silent, {"linger"} seconds), "before-answer" (a request to a slow backend, then gone),
    "mid-response" (a large answer read in part, then gone), "mid-upload" (a body sent in part,
    then gone), "reset-mid-response" (the stream reset part-way, then another request on the same
    connection), "mid-websocket" (an RFC 8441 WebSocket open, part of a frame sent). Gone is a
    plain close, or with {"abort": true} a TCP reset."""
    client = Client(host, port, tls=options.get("tls", True))
    client.pump(lambda: 3 in client.remote_settings)
    step = options["step"]
    scheme = "https" if client.tls else "http"
    stream = client.conn.get_next_available_stream_id()
    result = {"step": step}

    def request(path, method="GET", end=True, extra=()):
        client.conn.send_headers(stream, [(":method", method), (":scheme", scheme), (":path", path), (":authority", "localhost")] + list(extra),
                                 end_stream=end)
        client.flush()

    if step == "half-headers":
        block = client.conn.encoder.encode([(":method", "GET"), (":scheme", scheme), (":path", "/app/a"), (":authority", "localhost")])
        client.sock.sendall(raw_frame(0x1, 0x0, stream, block))
        client.pump(lambda: False, timeout=options.get("linger", 3))
        result.update({"goaway": client.goaway, "closed": client.closed})
        return result
    if step == "before-answer":
        request("/app/slow")
        # Gone once the backend has the request (its {"ready"} URL answers JSON whose "slow" is
        # at least 1): before that, a loaded gateway may not have read the HEADERS when the
        # close comes, and a close with the server's frames unread is a TCP reset, which takes
        # the unread request with it (nothing to release, nothing to log).
        deadline, ready = time.time() + 20, {}
        while options.get("ready") and time.time() < deadline and ready.get("slow", 0) < 1:
            client.pump(lambda: False, timeout=0.05)
            with urllib.request.urlopen(options["ready"], timeout=5) as answer:
                ready = json.load(answer)
        result["backend_had_it"] = ready.get("slow", 0) >= 1
    elif step in ("mid-response", "reset-mid-response"):
        request("/app/download?bytes=67108864")
        client.pump(lambda: len(client.data.get(stream, b"")) >= 200000, timeout=10)
        result["received"] = len(client.data.get(stream, b""))
        if step == "reset-mid-response":
            client.conn.reset_stream(stream, error_code=8)
            client.flush()
            other = client.conn.get_next_available_stream_id()
            client.conn.send_headers(other, [(":method", "GET"), (":scheme", scheme), (":path", "/app/after"), (":authority", "localhost")],
                                     end_stream=True)
            client.flush()
            client.pump(lambda: other in client.ended or other in client.resets, timeout=10)
            result.update({"other_status": client.status(other), "goaway": client.goaway, "closed": client.closed})
    elif step == "mid-websocket":
        websocket = client.open_websocket("/echo", "localhost")
        result["status"] = client.status(websocket)
        client.send(websocket, ws_frame(0x2, os.urandom(1000))[:100])
        time.sleep(0.3)
    elif step == "mid-upload":
        request("/app/upload", method="POST", end=False, extra=[("content-length", str(10 << 20))])
        client.send(stream, b"u" * 200000)
        time.sleep(0.3)
    if options.get("abort"):
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.sock.close()
    return result


def scenario_cancel_then_request(host, port, options):
    """A request to {"path"} reset (CANCEL) once the backend has it (its {"ready"} URL answers
    JSON whose {"ready_key"} is at least 1), then, {"wait"} seconds later, a request to {"then"}
    on the same connection: both streams' outcomes, and the last answer of {"ready"}."""
    client = Client(host, port, tls=options.get("tls", True))
    client.pump(lambda: 3 in client.remote_settings)
    scheme = "https" if client.tls else "http"

    def request(path):
        stream = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream, [(":method", "GET"), (":scheme", scheme), (":path", path), (":authority", "localhost")],
                                 end_stream=True)
        client.flush()
        return stream

    first = request(options["path"])
    deadline, ready = time.time() + 20, {}
    while time.time() < deadline and ready.get(options["ready_key"], 0) < 1:
        client.pump(lambda: False, timeout=0.02)
        with urllib.request.urlopen(options["ready"], timeout=5) as answer:
            ready = json.load(answer)
    client.conn.reset_stream(first, error_code=8)
    client.flush()
    client.pump(lambda: False, timeout=options.get("wait", 1))
    second = request(options["then"])
    client.pump(lambda: second in client.ended or second in client.resets, timeout=10)
    return {
        "ready": ready, "first_status": client.status(first), "status": client.status(second),
        "body": bytes(client.data.get(second, b"")).decode(errors="replace"), "goaway": client.goaway,
    }


SCENARIOS = {
    "ws": scenario_ws, "ws-many": scenario_ws_many, "reset-mid-message": scenario_reset_mid_message, "stall": scenario_stall,
    "goaway-watch": scenario_goaway_watch, "rapid-reset": scenario_rapid_reset, "continuation-flood": scenario_continuation_flood,
    "ping-flood": scenario_ping_flood, "streams": scenario_streams, "request": scenario_request,
    "sse-acked": scenario_sse_acked, "cases": scenario_cases, "vanish": scenario_vanish,
    "cancel-then-request": scenario_cancel_then_request,
}


def main():
    exit_when_parent_goes()
    name, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    print(json.dumps(SCENARIOS[name](host, port, options)), flush=True)


if __name__ == "__main__":
    main()
