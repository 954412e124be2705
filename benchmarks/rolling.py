#!/usr/bin/env python3
"""A rolling restart of three backends under steady upgrades (issue 23): how many upgrades fail
for clients, through Sluice, nginx and HAProxy, each configured at its documented best.

usage: benchmarks/rolling.py [--rate 200] [--results benchmarks/RESULTS.md]

Three WebSocket backends (`Tests/SluiceIntegrationTests/Peers/health_peer.py`, Python
`websockets`) sit behind each proxy in turn. Clients open `--rate` upgrades a second (each one
answered, a message echoed, closed). Meanwhile each backend in turn is restarted as a deploy
does it: stopped (connections refused) for 1 s, started again answering 503 while it "warms
up" for 1.5 s, then accepting but not answering for 1.5 s (still loading), then well; 2 s
later the next one. Counted: upgrades that did not end in a 101 and an echo within 10 s.

- Sluice: active checks (`websocket` mode, every 500 ms, fall 1, rise 2), passive ejection,
  retries before the 101 on refusal and 502/503/504.
- nginx (open source has no active checks): `max_fails=1 fail_timeout=5s`,
  `proxy_next_upstream error timeout http_502 http_503 http_504`, 3 tries; its one read
  timeout covers both the handshake and the WebSocket's idle time, so it is 60 s.
- HAProxy: `check inter 500ms fall 1 rise 2`, `retries 3`, `option redispatch 1`,
  `retry-on all-retryable-errors` (503 and response timeouts included), `timeout server 2s`
  for the handshake and `timeout tunnel 60s` after it.

Every target is on loopback, every run bounded (about 25 s per proxy).
"""
import argparse
import base64
import datetime
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import BIN, ROOT, free_port, replace_section, wait_listening  # noqa: E402

PEER = os.path.join(ROOT, "Tests", "SluiceIntegrationTests", "Peers", "health_peer.py")
MARK_BEGIN = "<!-- rolling.py begin -->"
MARK_END = "<!-- rolling.py end -->"


class Backends:
    """Three backends that can be stopped, started answering 503, and made well."""

    def __init__(self, work):
        self.work = work
        self.ports = [free_port() for _ in range(3)]
        self.processes = [None, None, None]
        self.log = open(os.path.join(work, "backends.log"), "a")
        for index in range(3):
            self.mode(index, "good")
            self.start(index)

    def mode(self, index, mode):
        path = os.path.join(self.work, f"mode-{index}")
        open(path + ".new", "w").write(mode)
        os.replace(path + ".new", path)

    def start(self, index):
        self.processes[index] = subprocess.Popen(
            [sys.executable, PEER, "backend", f"b{index}", os.path.join(self.work, f"mode-{index}"), str(self.ports[index])],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.log)
        wait_listening(self.ports[index])

    def stop(self, index):
        process = self.processes[index]
        if process and process.poll() is None:
            process.kill()
            process.wait()

    def roll(self):
        for index in range(3):
            self.stop(index)
            time.sleep(1)
            self.mode(index, "503")
            self.start(index)
            time.sleep(1.5)
            self.mode(index, "hang")
            time.sleep(1.5)
            self.mode(index, "good")
            time.sleep(2)

    def close(self):
        for index in range(3):
            self.stop(index)


def one_upgrade(port):
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as error:
        return f"connect: {error.__class__.__name__}"
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return "closed before the answer"
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        status = head.split(b" ")[1].decode()
        if status != "101":
            return f"status {status}"
        sock.sendall(bytes([0x81, 0x84]) + b"\x01\x02\x03\x04" + bytes(a ^ b for a, b in zip(b"ping", b"\x01\x02\x03\x04")))
        while len(rest) < 6:
            chunk = sock.recv(4096)
            if not chunk:
                return "closed before the echo"
            rest += chunk
        if rest[0] & 0x0F == 0x8:
            code = struct.unpack("!H", rest[2:4])[0] if (rest[1] & 0x7F) >= 2 else None
            return f"closed with {code} right after the 101 (its backend stopped)"
        if rest[2:6] != b"ping":
            return "wrong echo"
        sock.sendall(bytes([0x88, 0x82]) + b"\x00\x00\x00\x00" + struct.pack("!H", 1000))
        return None
    except OSError as error:
        return f"error: {error.__class__.__name__}"
    finally:
        sock.close()


def drive(port, rate, seconds):
    """`rate` upgrades a second for `seconds`; returns (attempted, failures by reason)."""
    failures, lock = {}, threading.Lock()
    attempted = 0
    with ThreadPoolExecutor(max_workers=64) as pool:
        start = time.monotonic()
        futures = []
        while time.monotonic() - start < seconds:
            due = start + attempted / rate
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            futures.append(pool.submit(one_upgrade, port))
            attempted += 1
        for future in futures:
            reason = future.result()
            if reason:
                with lock:
                    failures[reason] = failures.get(reason, 0) + 1
    return attempted, failures


def sluice_config(work, port, backends):
    path = os.path.join(work, "sluice.yaml")
    urls = ", ".join(f'"ws://127.0.0.1:{p}"' for p in backends.ports)
    open(path, "w").write(f"""log_level: error
listeners: [ {{ name: main, address: "127.0.0.1:{port}", backlog: 4096 }} ]
routes:
  - name: ws
    match: {{ path_prefix: / }}
    backends: [{urls}]
    health: {{ mode: websocket, path: /health, interval: 500ms, timeout: 400ms, fall: 1, rise: 2 }}
    balance: {{ max_fails: 1, cool_down: 2s, max_ejection_percent: 67 }}
    websocket: {{ max_connect_attempts: 3, connect_timeout: 1s, handshake_timeout: 2s }}
""")
    return [os.path.join(BIN, "sluice"), "run", "--config", path, "--event-loop-threads", "1"]


def nginx_config(work, port, backends):
    path = os.path.join(work, "nginx-rolling.conf")
    servers = "".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=5s; " for p in backends.ports)
    open(path, "w").write(f"""worker_processes 1;
daemon off;
pid {work}/nginx-rolling.pid;
error_log {work}/nginx-error.log crit;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream app {{ {servers} }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_connect_timeout 1s;
            proxy_read_timeout 60s;
            proxy_next_upstream error timeout http_502 http_503 http_504;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
""")
    return ["nginx", "-c", path, "-p", work]


def haproxy_config(work, port, backends):
    path = os.path.join(work, "haproxy-rolling.cfg")
    servers = "\n".join(f"    server b{i} 127.0.0.1:{p} check inter 500ms fall 1 rise 2" for i, p in enumerate(backends.ports))
    open(path, "w").write(f"""global
    nbthread 1
    maxconn 9000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 2s
    timeout tunnel 60s
    retries 3
    option redispatch 1
    retry-on all-retryable-errors
frontend main
    bind 127.0.0.1:{port}
    default_backend app
backend app
    option httpchk GET /health
{servers}
""")
    return ["haproxy", "-f", path]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "RESULTS.md"))
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-rolling-")
    results = {}
    for name, make in (("sluice", sluice_config), ("nginx", nginx_config), ("haproxy", haproxy_config)):
        if name != "sluice" and not shutil.which(name):
            continue
        backends = Backends(work)
        port = free_port()
        proxy = subprocess.Popen(make(work, port, backends), stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, f"{name}.log"), "a"))
        try:
            wait_listening(port)
            time.sleep(2)  # the proxies' first checks
            seconds = 18
            roller = threading.Thread(target=lambda: (time.sleep(1.5), backends.roll()))
            roller.start()
            attempted, failures = drive(port, options.rate, seconds)
            roller.join()
            results[name] = {"attempted": attempted, "failed": sum(failures.values()), "reasons": failures}
            print(f"{name:8} {attempted} upgrades, {sum(failures.values())} failed {json.dumps(failures)}", flush=True)
        finally:
            proxy.send_signal(signal.SIGTERM)
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                proxy.kill()
            backends.close()
    write_results(options, results)


def write_results(options, results):
    lines = [
        MARK_BEGIN,
        "## Rolling restart of three backends (`benchmarks/rolling.py`)",
        "",
        f"Run {datetime.date.today().isoformat()}: {options.rate} upgrades/s (each answered, one message echoed, closed) while each of",
        "three backends in turn is stopped for 1 s, started answering 503 for 1.5 s, then hanging (accepting, not answering) for 1.5 s,",
        "then well; an upgrade fails when it gets no 101 and echo within 10 s. Each proxy at its documented",
        "best: Sluice with websocket checks, ejection and retries before the 101; nginx with passive `max_fails` and",
        "`proxy_next_upstream … http_503`; HAProxy with `check`, `retries 3`, `redispatch` and `retry-on all-retryable-errors`.",
        "",
        "| proxy | upgrades | failed for clients | how |",
        "|---|---|---|---|",
    ]
    for name, result in results.items():
        lines.append(f"| {name} | {result['attempted']} | {result['failed']} | {json.dumps(result['reasons']) if result['reasons'] else '—'} |")
    lines += ["", MARK_END]
    replace_section(options.results, MARK_BEGIN, MARK_END, "\n".join(lines))


if __name__ == "__main__":
    main()
