#!/usr/bin/env python3
"""Peers that fail on purpose, for the fault matrix: each cell is one side (client or backend)
failing in one way while the other side watches what Sluice does about it.

  fault_peer.py backend LOG [CERT,KEY]   a backend; the upgrade path /ws/SIDE/FAULT/ID says what
                                         to do: fail (SIDE=backend) or watch (SIDE=client), and
                                         what it watched goes to LOG as one JSON line per ID
  fault_peer.py vanish-backend           reads the first bytes of each connection (an upgrade,
                                         or a TLS ClientHello), then resets it
  fault_peer.py client ws|wss HOST PORT SIDE FAULT ID
                                         the client of one cell: fails, or watches and prints
                                         one JSON object

Backends print "PORT <n>" first and exit when stdin closes. Raw sockets only: the faults are
byte-level, which no WebSocket library will produce.
"""
import base64
import json
import os

from lifeline import exit_when_parent_goes
import socket
import ssl
import struct
import sys
import threading
import time

BIG = 4 << 20  # what a slow reader is sent: more than any socket buffer holds


def frame(opcode, payload, fin=True, mask=None):
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    masked = 0x80 if mask else 0
    if length < 126:
        header = struct.pack("!BB", first, masked | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, masked | 126, length)
    else:
        header = struct.pack("!BBQ", first, masked | 127, length)
    if not mask:
        return header + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_frame(code, mask=None):
    return frame(0x8, struct.pack("!H", code), mask=mask)


def reset(sock):
    """Ends the connection with a TCP RST (no close frame, no FIN, no TLS close_notify)."""
    try:
        raw = sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
    except OSError:
        pass


class Reader:
    """Frames off a socket, unmasked."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def exactly(self, n):
        while len(self.buffer) < n:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError()
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def frame(self):
        first, second = self.exactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self.exactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self.exactly(8))[0]
        mask = self.exactly(4) if second & 0x80 else None
        payload = self.exactly(length)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return first & 0x0F, payload

    def head(self):
        while b"\r\n\r\n" not in self.buffer:
            data = self.sock.recv(4096)
            if not data:
                raise EOFError()
            self.buffer += data
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head.decode("latin-1")


def watch(reader, answer, timeout, mask=None, echo=True):
    """Reads until a close frame or the end of the connection; returns what was seen:
    "close CODE" (answered when `answer`), "tcp" for a connection that ended without one, or
    "timeout". Data frames are echoed when `echo`; frames sent are masked with `mask` (a client's)."""
    reader.sock.settimeout(timeout)
    try:
        while True:
            opcode, payload = reader.frame()
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                if answer:
                    try:
                        reader.sock.sendall(close_frame(code, mask))
                    except OSError:
                        pass
                return f"close {code}"
            if opcode in (0x1, 0x2) and echo:
                try:
                    reader.sock.sendall(frame(opcode, payload, mask=mask))
                except OSError:
                    pass
            if opcode == 0x9:
                reader.sock.sendall(frame(0xA, payload, mask=mask))
    except socket.timeout:
        return "timeout"
    except (EOFError, ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
        return "tcp"


def send_in_background(sock, data):
    """Sends `data` while the caller goes on to read. A TLS socket cannot be written by one
    thread while another reads it (OpenSSL's SSL objects are not thread-safe), so there the
    peer writes until the other side stops taking bytes, then gives up the rest and reads."""
    if isinstance(sock, ssl.SSLSocket):
        timeout = sock.gettimeout()
        sock.settimeout(0.5)
        try:
            sock.sendall(data)
        except OSError:
            pass
        sock.settimeout(timeout)
        return

    def run():
        try:
            sock.sendall(data)
        except OSError:
            pass
    threading.Thread(target=run, daemon=True).start()


# ------------------------------------------------------------------ backend

def backend(log_path, tls):
    context = None
    if tls:
        cert, key = tls.split(",")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    lock = threading.Lock()

    def log(record):
        with lock, open(log_path, "a") as out:
            out.write(json.dumps(record) + "\n")

    def serve(conn):
        started = time.monotonic()
        try:
            if context:
                conn = context.wrap_socket(conn, server_side=True)
            conn.settimeout(15)
            reader = Reader(conn)
            head = reader.head()
            _, _, side, fault, ident = head.split(" ")[1].split("/")[:5]
            key = next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("sec-websocket-key:"))
        except Exception:
            conn.close()
            return
        if side == "backend" and fault == "handshake":
            return reset(conn)
        if side == "client" and fault == "handshake":
            # The 101 is held back: does Sluice let go of this connection once its client is gone?
            log({"id": ident, "observed": watch(reader, False, 8, echo=False), "elapsed": time.monotonic() - started})
            conn.close()
            return
        accept = base64.b64encode(__import__("hashlib").sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        upgraded = time.monotonic()
        if side == "client":
            if fault == "slow-reader":
                send_in_background(conn, frame(0x2, b"\x00" * BIG))
            if fault == "ignore-close":
                conn.sendall(close_frame(1000))
            observed = watch(reader, True, 12)
            log({"id": ident, "observed": observed, "elapsed": time.monotonic() - upgraded})
            try:
                conn.close()
            except OSError:
                pass
            return
        fail_backend(conn, reader, fault)

    def fail_backend(conn, reader, fault):
        # After the upgrade has gone through (a backend dying before that is the handshake cell).
        time.sleep(0.2)
        if fault == "clean":
            conn.sendall(close_frame(1000))
            watch(reader, False, 10)
            conn.close()
        elif fault == "ignore-close":
            # Reads everything and answers nothing, the close included; the TCP stays open.
            conn.settimeout(15)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            conn.close()
        elif fault == "fin":
            conn.close()
        elif fault == "rst":
            reset(conn)
        elif fault == "mid-header":
            conn.sendall(b"\x82")
            time.sleep(0.1)
            reset(conn)
        elif fault == "mid-payload":
            conn.sendall(struct.pack("!BBH", 0x82, 126, 208) + os.urandom(46))
            time.sleep(0.1)
            reset(conn)
        elif fault == "mid-fragment":
            conn.sendall(frame(0x1, b"first part ", fin=False))
            time.sleep(0.1)
            reset(conn)
        elif fault == "slow-reader":
            time.sleep(1.0)  # reads nothing while the client sends
            reset(conn)
        else:
            conn.close()

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def vanish_backend():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        conn.settimeout(5)
        try:
            conn.recv(64)
        except OSError:
            pass
        reset(conn)


# ------------------------------------------------------------------ client

def client(scheme, host, port, side, fault, ident):
    raw = socket.create_connection((host, int(port)), timeout=15)
    result = {}
    if side == "client" and fault == "tls-handshake":
        if scheme == "wss":
            # Half of a real ClientHello, then gone.
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            hello = outgoing.read()
            raw.sendall(hello[: len(hello) // 2])
        else:
            raw.sendall(b"GET /ws/client/head HTTP/1.1\r\nHo")
        time.sleep(0.1)
        reset(raw)
        print(json.dumps({"done": True}))
        return
    sock = raw
    if scheme == "wss":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(raw, server_hostname="localhost")
    if side == "client" and fault == "slow-reader":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws/{side}/{fault}/{ident} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    if side == "client" and fault == "handshake":
        time.sleep(0.3)
        reset(sock)
        print(json.dumps({"done": True}))
        return
    reader = Reader(sock)
    try:
        head = reader.head()
        result["status"] = int(head.split(" ")[1])
    except (EOFError, OSError) as error:
        result["status"] = None
        result["error"] = type(error).__name__
    if result["status"] != 101:
        print(json.dumps(result))
        return
    mask = b"\x11\x22\x33\x44"
    if side == "client":
        if fault == "clean":
            sock.sendall(close_frame(1000, mask))
            result["observed"] = watch(reader, False, 10, mask=mask, echo=False)
            sock.close()
        elif fault == "ignore-close":
            # The backend closes; this client never answers and keeps reading until Sluice
            # gives up on it.
            sock.settimeout(15)
            closed_at = None
            try:
                while True:
                    opcode, _ = reader.frame()
                    if opcode == 0x8 and closed_at is None:
                        closed_at = time.monotonic()
            except (EOFError, OSError):
                pass
            result["dropped_after"] = time.monotonic() - closed_at if closed_at else None
        elif fault == "fin":
            sock.close()
        elif fault == "rst":
            reset(sock)
        elif fault == "mid-header":
            sock.sendall(b"\x82")
            time.sleep(0.1)
            reset(sock)
        elif fault == "mid-payload":
            sock.sendall(struct.pack("!BBH", 0x82, 0x80 | 126, 208) + mask + os.urandom(46))
            time.sleep(0.1)
            reset(sock)
        elif fault == "mid-fragment":
            sock.sendall(frame(0x1, b"first part ", fin=False, mask=mask))
            time.sleep(0.1)
            reset(sock)
        elif fault == "slow-reader":
            time.sleep(1.0)  # reads nothing while the backend sends
            reset(sock)
        print(json.dumps(result))
        return
    # The backend fails; this client watches, answering a close as a well-behaved client does.
    started = time.monotonic()
    if fault == "ignore-close":
        sock.sendall(close_frame(1000, mask))
    if fault == "slow-reader":
        send_in_background(sock, frame(0x2, b"\x00" * BIG, mask=mask))
    result["observed"] = watch(reader, True, 12, mask=mask, echo=False)
    result["elapsed"] = time.monotonic() - started
    try:
        sock.close()
    except OSError:
        pass
    print(json.dumps(result))


if __name__ == "__main__":
    exit_when_parent_goes()
    role = sys.argv[1]
    if role == "backend":
        backend(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    elif role == "vanish-backend":
        vanish_backend()
    elif role == "client":
        client(*sys.argv[2:8])
