"""Mutated HTTP/1 and WebSocket traffic for the gateway's bad-input test: a backend that
answers with random and mutated responses (a valid 101 and frames behind it among them),
and clients that send random and mutated requests, frames, half-closes and early closes.

    fuzz_peer.py backend SEED         prints "PORT <n>", serves until stdin closes
    fuzz_peer.py client PORT SECONDS SEED [TLS_PORT ADMIN_PORT]
                                      prints {"requests": n, "answered": n} when done; with
                                      the two ports, also TLS clients (and garbage in place of
                                      a TLS handshake), credentials for the /auth route, and
                                      the admin API

Loopback only; every run stops by itself."""
import base64
import hashlib
import json
import random
import socket
import ssl
import struct
import sys
import threading
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def frame(opcode, payload, masked, fin=True, rsv=0):
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    n = len(payload)
    length = n if n < 126 else 126 if n < 65536 else 127
    head += bytes([(0x80 if masked else 0) | length])
    if length == 126:
        head += struct.pack("!H", n)
    elif length == 127:
        head += struct.pack("!Q", n)
    if not masked:
        return head + payload
    mask = b"\x01\x02\x03\x04"
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\n\r\nuntil close",
    b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
]
REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
]
FROM_BACKEND = [frame(1, b"hi", False), frame(2, b"\x00" * 70000, False), frame(8, b"\x03\xe8bye", False), frame(9, b"p", False),
                frame(1, b"\xff\xfe", False), frame(0, b"x", False), frame(1, b"a", False, fin=False) + frame(0, b"b", False)]
FROM_CLIENT = [frame(1, b"hi", True), frame(2, b"\x00" * 70000, True), frame(8, b"\x03\xe8bye", True), frame(10, b"p", True),
               frame(1, b"x", False), frame(1, b"a", True, rsv=0x40), frame(8, b"\x00", True),
               frame(1, b"a", True, fin=False) + frame(9, b"", True) + frame(0, b"b", True)]
SPLICES = [b"\r\n", b"\n", b"\r", b":", b" ", b"\t", b",", b"\x00", b"chunked", b"Content-Length: 9\r\n",
           b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffff", b"-1"]


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(0, 4)):
        if not data:
            break
        i = rng.randrange(len(data))
        op = rng.randint(0, 7)
        if op == 0:
            data[i] = rng.randrange(256)
        elif op == 1:
            del data[i:i + rng.randint(1, 8)]
        elif op == 2:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            data[i:i] = rng.choice(SPLICES)
        elif op == 4:
            data = data[:i]
        elif op == 5:
            data += data[i:]
        elif op == 6:
            data[i:i] = b"X-Long: " + b"a" * rng.choice([100, 5000, 70000]) + b"\r\n"
        else:
            data = data * rng.randint(1, 3)
    return bytes(data)


def backend(seed):
    rng = random.Random(seed)
    lock = threading.Lock()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    print(f"PORT {listener.getsockname()[1]}", flush=True)

    def serve(conn):
        conn.settimeout(2)
        try:
            while True:
                got = conn.recv(65536)
                if not got:
                    break
                with lock:
                    roll = rng.random()
                    response = rng.choice(RESPONSES)
                    if b"websocket" in got.lower() and rng.random() < 0.6:
                        accept = base64.b64encode(hashlib.sha1(KEY + GUID).digest())
                        response = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                    b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                        extra = rng.choice(FROM_BACKEND)
                        response += extra if rng.random() < 0.5 else mutate(rng, extra)
                    elif rng.random() < 0.6:
                        response = mutate(rng, response)
                    step = rng.choice([1, 7, 64, 1 << 20])
                    pause = rng.random() * 0.5 if 0.1 <= roll < 0.15 else 0
                    close_after = rng.random() < 0.2
                if roll < 0.1:
                    break
                time.sleep(pause)
                for offset in range(0, len(response), step):
                    conn.sendall(response[offset:offset + step])
                if close_after:
                    break
        except OSError:
            pass
        conn.close()

    def accept():
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    sys.stdin.read()  # until the test closes its end


CREDENTIALS = [b"", b"Authorization: Bearer a.b.c\r\n", b"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.xx\r\n",
               b"Authorization: Basic !!!\r\n", b"Cookie: session=zz; sluice_backend=0\r\n", b"Origin: https://evil.example\r\n"]
PATHS = [b"/", b"/auth", b"/auth/ws", b"/auth?access_token=a.b.c"]
ADMIN = [b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /connections?limit=5&sort=bytes HTTP/1.1\r\nHost: a\r\n\r\n",
         b"GET /connections/1 HTTP/1.1\r\nHost: a\r\n\r\n", b"DELETE /connections/2 HTTP/1.1\r\nHost: a\r\n\r\n",
         b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /connections?sort=zzz&limit=-1 HTTP/1.1\r\nHost: a\r\n\r\n"]


def client(port, seconds, seed, tls_port=None, admin_port=None):
    rng = random.Random(seed)
    lock = threading.Lock()
    counts = {"requests": 0, "answered": 0, "tls_answered": 0, "admin_answered": 0}
    stop = time.monotonic() + seconds
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def connect():
        """A connection to one of the listeners, and whether it is the admin one."""
        with lock:
            roll = rng.random()
            garbage = rng.random() < 0.1
        if admin_port and roll < 0.1:
            return socket.create_connection(("127.0.0.1", admin_port), timeout=3), True
        if tls_port and roll < 0.4:
            sock = socket.create_connection(("127.0.0.1", tls_port), timeout=3)
            if garbage:
                # Not a TLS handshake at all: the listener must drop it, nothing more.
                with lock:
                    hello = mutate(rng, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40))
                sock.sendall(hello)
                return sock, None
            return context.wrap_socket(sock, server_hostname="localhost"), False
        return socket.create_connection(("127.0.0.1", port), timeout=3), False

    def run():
        while time.monotonic() < stop:
            try:
                sock, admin = connect()
                if admin is None:
                    sock.close()
                    continue
                for _ in range(rng.randint(1, 4)):
                    with lock:
                        request = rng.choice(ADMIN if admin else REQUESTS)
                        if not admin and tls_port:
                            request = request.replace(b" /", b" " + rng.choice(PATHS), 1)
                            request = request.replace(b"\r\n", b"\r\n" + rng.choice(CREDENTIALS), 1)
                        if rng.random() < 0.7:
                            request = mutate(rng, request)
                        if b"websocket" in request and rng.random() < 0.7:
                            request += b"".join(rng.choice(FROM_CLIENT) if rng.random() < 0.6 else mutate(rng, rng.choice(FROM_CLIENT))
                                                for _ in range(rng.randint(1, 5)))
                        leave_early = rng.random() < 0.15
                        counts["requests"] += 1
                    sock.sendall(request)
                    if leave_early:
                        break
                    try:
                        if sock.recv(65536):
                            with lock:
                                counts["answered"] += 1
                                if admin:
                                    counts["admin_answered"] += 1
                                elif isinstance(sock, ssl.SSLSocket):
                                    counts["tls_answered"] += 1
                    except socket.timeout:
                        break
                if rng.random() < 0.5 and not isinstance(sock, ssl.SSLSocket):
                    sock.shutdown(socket.SHUT_WR)
                sock.close()
            except (OSError, ValueError):
                pass

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "backend":
        backend(int(sys.argv[2]))
    else:
        ports = [int(port) for port in sys.argv[5:7]]
        client(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), *ports)
