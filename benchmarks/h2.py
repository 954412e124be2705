#!/usr/bin/env python3
"""HTTP/2 side by side (issue 21): requests over h2 through Sluice, nginx and HAProxy, and
WebSockets over HTTP/2 (RFC 8441) against the same over HTTP/1.1.

usage: benchmarks/h2.py [--rounds 5] [--duration 5] [--results benchmarks/RESULTS.md]

H2 requests: h2load (nghttp2) over TLS with ALPN h2, 10 connections with 1 and with 100 streams
each, to a static nginx answering 64 bytes, through each proxy with keep-alive HTTP/1.1
upstreams. Up to 1,000 requests are in flight, each on its own upstream connection: HAProxy keeps
every idle one by default (`http-reuse always`, no `pool-max-conn`), so Sluice's pool is given the
same room (`max_idle: 1024`); nginx's `keepalive 64` is the usual setting of its own. RFC 8441: `sluice-bench load --http2` (one h2 connection per WebSocket, 50 of them,
64-byte messages, 16 in flight each) to the echo backend, through Sluice and through HAProxy
(nginx has no RFC 8441), against `sluice-bench load` over HTTP/1.1 through the same proxy.
Beside the proxies, NIO's own h2 floor: `sluice-bench h2floor`, answering by itself over TLS
with a child channel per stream (as Sluice does) and on the connection's frames (no child channels),
and proxying on the connection's frames to the same backend with nothing but the HTTP/1.1 exchange
(`--mode proxy`): the least any HTTP/2 proxy on NIOHTTP2 costs; and the same answering and proxying
with no NIOHTTP2 (`--mode raw`, `raw-proxy`: on Sluice's own frame reader, connection state,
field checks and defences), the least an HTTP/2 layer of Sluice's own on NIO channels and NIOSSL
would cost.

Each proxy runs alone on core 1 with one event-loop thread (nginx: one worker; HAProxy: one
thread); the load generator and the backends share core 0. Every round measures each target in
turn; the medians over rounds of requests (or messages) per second and of the proxy's CPU per
request (user + system, /proc) are reported, with the ratios read within rounds. Needs release
builds (the README's production build), nginx, haproxy, h2load and openssl; every target is on loopback, every run bounded.
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import BIN, ROOT, cpu_seconds, free_port, process_tree, render_template, replace_section, wait_listening  # noqa: E402

MARK_BEGIN = "<!-- h2.py begin -->"
MARK_END = "<!-- h2.py end -->"


def pinned(command, core, log):
    return subprocess.Popen(["taskset", "-c", str(core)] + command, stdout=log, stderr=log)


def h2load(port, connections, streams, duration, path="/"):
    out = subprocess.run(
        ["taskset", "-c", "0", "h2load", "-t1", "-c", str(connections), "-m", str(streams), "-D", str(duration),
         f"https://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=duration + 60,
    ).stdout
    rate = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
    done = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    protocol = re.search(r"Application protocol: (\S+)", out)
    return {"rate": rate, "succeeded": int(done.group(2)), "failed": int(done.group(3)) + int(done.group(4)),
            "protocol": protocol.group(1) if protocol else "?"}


def ws_load(port, http2, duration):
    command = ["taskset", "-c", "0", os.path.join(BIN, "sluice-bench"), "load", "--url", f"wss://127.0.0.1:{port}/echo",
               "--connections", "50", "--size", "64", "--window", "16", "--duration", str(duration), "--json"]
    if http2:
        command.append("--http2")
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"rate": result["messages_per_second"], "p99": result["p99_us"], "failed": int(result["errors"])}


def measured(pid, run, duration):
    pids = process_tree(pid)
    before = cpu_seconds(pids)
    result = run()
    used = cpu_seconds(pids) - before
    result["cpu_us"] = used * 1e6 / (result["rate"] * duration) if result["rate"] else None
    return result


class Targets:
    def __init__(self, work):
        self.work, self.processes, self.ports = work, [], {}
        self.log = open(os.path.join(work, "h2.log"), "a")
        cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        pem = os.path.join(work, "combined.pem")
        open(pem, "w").write(open(cert).read() + open(key).read())
        backend, echo = free_port(), free_port()
        static = render_template(work, "nginx-static.conf.template", {"WORK": work, "BACKEND": backend})
        self.processes.append(pinned(["nginx", "-c", static, "-p", work], 0, self.log))
        self.processes.append(pinned([os.path.join(BIN, "sluice-bench"), "echo", "--listen", f"127.0.0.1:{echo}", "--duration", "7200"], 0, self.log))
        wait_listening(backend)
        wait_listening(echo)
        # Sluice on its own HTTP/2 layer (the default, `http2.engine: wire`), and on NIOHTTP2.
        for name, engine in (("sluice", "wire"), ("sluice-nio", "nio")):
            port = free_port()
            config = os.path.join(work, f"{name}-h2.yaml")
            open(config, "w").write(f"""log_level: error
listeners:
  - name: bench
    address: "127.0.0.1:{port}"
    backlog: 4096
    tls: {{ certificates: [ {{ cert: {cert}, key: {key} }} ] }}
    http2: {{ engine: {engine} }}
routes:
  - name: echo
    match: {{ path_prefix: /echo }}
    backends: ["ws://127.0.0.1:{echo}"]
    websocket: {{ idle_timeout: off }}
  - name: app
    match: {{ path_prefix: / }}
    backends: ["http://127.0.0.1:{backend}"]
    http: {{ pool: {{ max_idle: 1024 }} }}
""")
            self.start(name, [os.path.join(BIN, "sluice"), "run", "--config", config, "--event-loop-threads", "1"], port)
        values = {"WORK": work, "BACKEND": backend, "ECHO": echo, "CERT": cert, "KEY": key, "PEM": pem, "WORKERS": 1}
        port = free_port()
        self.start("nginx", ["nginx", "-c", render_template(work, "nginx-h2.conf.template", {**values, "PORT": port}), "-p", work], port)
        port = free_port()
        self.start("haproxy", ["haproxy", "-f", render_template(work, "haproxy-h2.cfg.template", {**values, "PORT": port})], port)
        # NIO's own h2 cost: answering itself (streams, frames) and proxying with nothing else
        # (proxy), the floors Sluice's HTTP/2 stands on.
        for mode in ("streams", "frames", "proxy", "raw", "raw-proxy"):
            port = free_port()
            self.start(f"floor-{mode}", [os.path.join(BIN, "sluice-bench"), "h2floor", "--listen", f"127.0.0.1:{port}",
                                         "--cert", cert, "--key", key, "--mode", mode, "--backend", f"127.0.0.1:{backend}"], port)

    def start(self, name, command, port):
        process = pinned(command, 1, self.log)
        self.processes.append(process)
        wait_listening(port)
        self.ports[name] = (port, process.pid)

    def stop(self):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


# The h2 request targets: the proxies (Sluice on its own layer and on NIOHTTP2), then NIO's h2 floor answering by itself with a
# child channel per stream (Sluice's shape) and on the connection's frames, and proxying on the
# connection's frames; then the same two without NIOHTTP2 (frames read and written as bytes).
H2_TARGETS = ("sluice", "sluice-nio", "nginx", "haproxy", "floor-streams", "floor-frames", "floor-proxy", "floor-raw", "floor-raw-proxy")


def median(rows, key):
    values = [row[key] for row in rows if row.get(key) is not None]
    return statistics.median(values) if values else None


def run(options):
    work = tempfile.mkdtemp(prefix="sluice-h2-bench-")
    targets = Targets(work)
    cases = {
        "h2 ×1": [(name, lambda port: h2load(port, 10, 1, options.duration)) for name in H2_TARGETS],
        "h2 ×100": [(name, lambda port: h2load(port, 10, 100, options.duration)) for name in H2_TARGETS],
        "ws": [
            ("sluice h1", lambda port: ws_load(port, False, options.duration)),
            ("sluice RFC 8441", lambda port: ws_load(port, True, options.duration)),
            ("sluice-nio RFC 8441", lambda port: ws_load(port, True, options.duration)),
            ("haproxy h1", lambda port: ws_load(port, False, options.duration)),
            ("haproxy RFC 8441", lambda port: ws_load(port, True, options.duration)),
        ],
    }
    results = {case: {name: [] for name, _ in runs} for case, runs in cases.items()}
    try:
        for round_index in range(options.rounds):
            for case, runs in cases.items():
                for name, runner in runs:
                    port, pid = targets.ports[name.split()[0]]
                    runner(port)  # warm-up, not counted
                    row = measured(pid, lambda: runner(port), options.duration)
                    results[case][name].append(row)
                    print(f"round {round_index + 1} {case:8} {name:17} {row['rate']:>10.0f}/s cpu {row['cpu_us'] or 0:>6.2f}µs "
                          f"failed {row['failed']}{' ' + row['protocol'] if 'protocol' in row else ''}", flush=True)
    finally:
        targets.stop()
    return results


def ratio(rows_a, rows_b, key):
    """The median over rounds of a/b, round by round."""
    pairs = [(a[key], b[key]) for a, b in zip(rows_a, rows_b) if a.get(key) and b.get(key)]
    return statistics.median(a / b for a, b in pairs) if pairs else None


def render(results, options):
    nginx_version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    haproxy_version = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [MARK_BEGIN, "", f"## H2 and RFC 8441 (`benchmarks/h2.py --rounds {options.rounds} --duration {options.duration}`)", "",
             f"{datetime.date.today()}, commit {commit}, `nproc` {os.cpu_count()}. {nginx_version}; {haproxy_version}. "
             "Each proxy alone on core 1 with one thread; h2load, sluice-bench and the backends on core 0. "
             "Medians over rounds; ratios are medians of per-round ratios.", ""]
    for case in ("h2 ×1", "h2 ×100"):
        rows = results[case]
        lines += [f"### Requests over h2, 10 connections × {case.split('×')[1]} streams (h2load, 64-byte answers)", "",
                  "| target | req/s | proxy CPU µs/req | failed |", "|---|---|---|---|"]
        for name, runs in rows.items():
            lines.append(f"| {name} | {median(runs, 'rate'):.0f} | {median(runs, 'cpu_us'):.2f} | {sum(r['failed'] for r in runs)} |")
        best = max(("nginx", "haproxy"), key=lambda name: median(rows[name], "rate"))
        lines += ["", f"**Sluice / best peer ({best}):** requests/s {ratio(rows['sluice'], rows[best], 'rate'):.2f}× (target ≥ 1.0×), "
                  f"CPU per request {ratio(rows['sluice'], rows[best], 'cpu_us'):.2f}×. "
                  f"**Sluice on NIOHTTP2** (`sluice-nio`, `http2.engine: nio`): requests/s "
                  f"{ratio(rows['sluice-nio'], rows[best], 'rate'):.2f}×, CPU per request {ratio(rows['sluice-nio'], rows[best], 'cpu_us'):.2f}×. "
                  f"**NIO's h2 floor** (no backend; `floor-streams` a child channel per stream as in Sluice, `floor-frames` none): "
                  f"CPU per request {median(rows['floor-streams'], 'cpu_us'):.2f} and {median(rows['floor-frames'], 'cpu_us'):.2f} µs, "
                  f"{ratio(rows['floor-streams'], rows[best], 'cpu_us'):.2f}× and {ratio(rows['floor-frames'], rows[best], 'cpu_us'):.2f}× "
                  f"the best peer's with its proxying. **NIO's h2 proxying floor** (`floor-proxy`: frames, each request sent to "
                  f"the same backend, nothing else): requests/s {ratio(rows['floor-proxy'], rows[best], 'rate'):.2f}×, "
                  f"CPU per request {median(rows['floor-proxy'], 'cpu_us'):.2f} µs, {ratio(rows['floor-proxy'], rows[best], 'cpu_us'):.2f}× "
                  f"the best peer's. **Without NIOHTTP2** (`floor-raw`, `floor-raw-proxy`: on Sluice's own HTTP/2 layer, "
                  f"`Sources/Sluice/HTTP2/Wire`, its HPACK decoder for requests): CPU per request {median(rows['floor-raw'], 'cpu_us'):.2f} "
                  f"µs answering, {median(rows['floor-raw-proxy'], 'cpu_us'):.2f} µs proxying; proxying requests/s "
                  f"{ratio(rows['floor-raw-proxy'], rows[best], 'rate'):.2f}× the best peer's.", ""]
    rows = results["ws"]
    lines += ["### WebSocket echo, 50 connections, 64-byte messages, 16 in flight (sluice-bench), over TLS", "",
              "| target | msgs/s | proxy CPU µs/msg | failed |", "|---|---|---|---|"]
    for name, runs in rows.items():
        lines.append(f"| {name} | {median(runs, 'rate'):.0f} | {median(runs, 'cpu_us'):.2f} | {sum(r['failed'] for r in runs)} |")
    lines += ["", f"**RFC 8441 / HTTP/1.1 through Sluice:** CPU per message {ratio(rows['sluice RFC 8441'], rows['sluice h1'], 'cpu_us'):.2f}× "
              f"(target ≤ 1.10×), messages/s {ratio(rows['sluice RFC 8441'], rows['sluice h1'], 'rate'):.2f}×. "
              f"**Sluice / HAProxy over RFC 8441:** messages/s {ratio(rows['sluice RFC 8441'], rows['haproxy RFC 8441'], 'rate'):.2f}×, "
              f"CPU per message {ratio(rows['sluice RFC 8441'], rows['haproxy RFC 8441'], 'cpu_us'):.2f}×. "
              f"**RFC 8441 on NIOHTTP2 / on Sluice's layer:** CPU per message "
              f"{ratio(rows['sluice-nio RFC 8441'], rows['sluice RFC 8441'], 'cpu_us'):.2f}×.", "", MARK_END]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "RESULTS.md"))
    options = parser.parse_args()
    results = run(options)
    section = render(results, options)
    print(section)
    replace_section(options.results, MARK_BEGIN, MARK_END, section.rstrip("\n"))


if __name__ == "__main__":
    main()
