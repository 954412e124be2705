#!/usr/bin/env python3
"""Side-by-side WebSocket relay benchmark: the echo backend directly, through Sluice, nginx,
HAProxy and Caddy, target after target on this machine, with each proxy's CPU time
(/proc/PID/stat) and resident memory (/proc/PID/status) read before and after.

usage: benchmarks/compare.py [--workers 1] [--duration 10] [--only S1,S4] [--pin] [--results benchmarks/RESULTS.md]

--pin puts every proxy on core 1 and the echo backend and load generator on core 0 (`taskset`),
so an A/B pair (S6) is not swayed by where the scheduler put each process.

Scenarios (issue #7): S1 64 B × 50 connections at window 1 and 16; S2 64 KiB × 10 connections,
window 4; S3 20,000 msgs/s open loop over 100 connections; S4 5,000 idle connections held 20 s
over ws and wss (RSS per connection, handshakes/s); S5 9,000 connections held 30 s with a
message every 5 s; S6 S1 w16 with Sluice's admin listener and access log on; S7 1 KiB messages,
window 16, compressed with permessage-deflate end to end; S8 5,000 WebSockets opened unpaced over
ws and wss (handshakes/s, the proxy's CPU per connection from accept to close). In S4 and S8 the
bare NIO byte tunnel (`sluice-bench tunnel`, swift-nio-ssl in front of it for wss) runs beside
the peers: what a proxy on NIO channels pays per WebSocket before any HTTP work.

Needs release builds (`swift build -c release -Xswiftc -enforce-exclusivity=unchecked`, the
production build of the README), nginx, haproxy and caddy (Debian packages) and
openssl. Every target is on loopback; every run is bounded in time.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".build", "release")
PEERS = ("nginx", "haproxy", "caddy")
FLOOR = "nio-tunnel"  # measured in S4 and S8 only: the floor of a proxy on NIO channels
# `taskset` prefixes for the proxies and for the load side, set by --pin.
PROXY_CORE, LOAD_CORE = [], []

LOAD_SCENARIOS = [
    ("S1 w1", ["--connections", "50", "--size", "64", "--window", "1"]),
    ("S1 w16", ["--connections", "50", "--size", "64", "--window", "16"]),
    ("S2", ["--connections", "10", "--size", "65536", "--window", "4"]),
    ("S3", ["--connections", "100", "--size", "64", "--rate", "20000"]),
    # Not one of the issue's scenarios: S1 w16 with every message compressed (permessage-deflate
    # negotiated end to end; the proxies pass RSV1 frames through).
    ("S7 deflate", ["--connections", "50", "--size", "1024", "--window", "16", "--deflate"]),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def process_tree(pid):
    """The process and its descendants (nginx's and Caddy's workers)."""
    found = [pid]
    for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split():
        found += process_tree(int(child))
    return found


def cpu_seconds(pids):
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / ticks


def rss_bytes(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def stop_all(processes, grace=10):
    """Terminates every process, then kills those still running after `grace` seconds."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()


def replace_section(path, begin, end, section, title="# Benchmark results\n"):
    """Writes `section` (which starts with `begin` and ends with `end`) into the file at `path`,
    in place of the one a previous run wrote, or at the end."""
    text = open(path).read() if os.path.exists(path) else title
    if begin in text:
        head, rest = text.split(begin, 1)
        # The section ends with `end` (and perhaps a newline); what followed `end` stays as it was.
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    open(path, "w").write(text)


def bench(*args, timeout):
    out = subprocess.run(LOAD_CORE + [os.path.join(BIN, "sluice-bench"), *args, "--json"], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def render_template(work, name, values):
    """Writes benchmarks/NAME with its __KEY__ placeholders filled into `work`."""
    text = open(os.path.join(ROOT, "benchmarks", name)).read()
    for key, value in values.items():
        text = text.replace(f"__{key}__", str(value))
    path = os.path.join(work, name.replace(".template", ""))
    open(path, "w").write(text)
    return path


class Targets:
    """Starts the echo backend and every proxy in front of it, plain and TLS."""

    def __init__(self, work, workers):
        self.work, self.workers, self.processes, self.targets = work, workers, [], {}
        self.cert, self.key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-keyout", self.key, "-out", self.cert], check=True, capture_output=True)
        self.pem = os.path.join(work, "combined.pem")
        open(self.pem, "w").write(open(self.cert).read() + open(self.key).read())

    def start(self, name, command, port, tls_port=None, env=None):
        log = open(os.path.join(self.work, f"{name}.log"), "a")
        process = subprocess.Popen(PROXY_CORE + command, stdout=log, stderr=log, env={**os.environ, **(env or {})})
        self.processes.append(process)
        wait_listening(port)
        if tls_port:
            wait_listening(tls_port)
        self.targets[name] = {"port": port, "tls_port": tls_port, "pid": process.pid}

    def template(self, name, values):
        return render_template(self.work, name, values)

    def start_all(self, include_admin):
        echo = free_port()
        log = open(os.path.join(self.work, "echo.log"), "a")
        self.processes.append(subprocess.Popen(LOAD_CORE + [os.path.join(BIN, "sluice-bench"), "echo", "--listen", f"127.0.0.1:{echo}", "--duration", "7200"],
                                               stdout=log, stderr=log))
        wait_listening(echo)
        self.targets["direct"] = {"port": echo, "tls_port": None, "pid": None}
        self.start_sluice("sluice", echo, admin=False)
        # The floor for the per-connection scenarios (S4, S8): NIO's two channels relaying the
        # same bytes, an accept and a backend connect per WebSocket, no HTTP work at all; on its
        # TLS port swift-nio-ssl terminates TLS in front of it, as in Sluice.
        port, tls = free_port(), free_port()
        self.start(FLOOR, [os.path.join(BIN, "sluice-bench"), "tunnel", "--listen", f"127.0.0.1:{port}", "--backend", f"127.0.0.1:{echo}",
                           "--tls-listen", f"127.0.0.1:{tls}", "--cert", self.cert, "--key", self.key,
                           "--threads", str(self.workers), "--duration", "7200"], port, tls)
        if include_admin:
            self.start_sluice("sluice+admin", echo, admin=True)
        common = {"WORKERS": self.workers, "WORK": self.work, "BACKEND": echo, "CERT": self.cert, "KEY": self.key, "PEM": self.pem}
        if shutil.which("nginx"):
            port, tls = free_port(), free_port()
            config = self.template("nginx.conf.template", {**common, "PORT": port, "TLSPORT": tls})
            self.start("nginx", ["nginx", "-c", config, "-p", self.work], port, tls)
        if shutil.which("haproxy"):
            port, tls = free_port(), free_port()
            config = self.template("haproxy.cfg.template", {**common, "PORT": port, "TLSPORT": tls})
            self.start("haproxy", ["haproxy", "-f", config], port, tls)
        if shutil.which("caddy"):
            port, tls = free_port(), free_port()
            config = self.template("caddy.template", {**common, "PORT": port, "TLSPORT": tls})
            self.start("caddy", ["caddy", "run", "--config", config, "--adapter", "caddyfile"], port, tls,
                       env={"GOMAXPROCS": str(self.workers), "HOME": self.work, "XDG_DATA_HOME": self.work, "XDG_CONFIG_HOME": self.work})

    def start_sluice(self, name, echo, admin):
        port, tls = free_port(), free_port()
        extra = ""
        if admin:
            extra = f"admin: {{ address: \"127.0.0.1:{free_port()}\" }}\naccess_log: {self.work}/access.log\n"
        path = os.path.join(self.work, f"{name}.yaml")
        open(path, "w").write(f"""log_level: error
{extra}listeners:
  - {{ name: bench, address: "127.0.0.1:{port}", backlog: 4096 }}
  - name: bench-tls
    address: "127.0.0.1:{tls}"
    backlog: 4096
    tls: {{ certificates: [ {{ cert: {self.cert}, key: {self.key} }} ] }}
routes:
  - name: echo
    match: {{ path_prefix: / }}
    backends: ["ws://127.0.0.1:{echo}"]
    websocket: {{ idle_timeout: off }}
""")
        self.start(name, [os.path.join(BIN, "sluice"), "run", "--config", path, "--event-loop-threads", str(self.workers)], port, tls)

    def stop(self):
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def run_load(targets, name, args, duration, only=None):
    rows = {}
    for target, info in targets.targets.items():
        if only and target not in only:
            continue
        pids = process_tree(info["pid"]) if info["pid"] else []
        before = cpu_seconds(pids)
        result = bench("load", "--url", f"ws://127.0.0.1:{info['port']}/", "--duration", str(duration), *args, timeout=duration + 120)
        used = cpu_seconds(pids) - before
        messages = result["messages_per_second"] * duration
        result["cpu_us_per_msg"] = used * 1e6 / messages if pids and messages else None
        result["cpu_s_per_gb"] = used / (messages * result["size"] / 1e9) if pids and messages else None
        rows[target] = result
        print(f"{name:8} {target:13} {result['messages_per_second']:>9.0f} msgs/s {result['megabytes_per_second']:>7.1f} MB/s "
              f"p50 {result['p50_us']:>7.0f}µs p99 {result['p99_us']:>7.0f}µs p99.9 {result['p999_us']:>7.0f}µs "
              f"cpu {result['cpu_us_per_msg'] or 0:>6.2f}µs/msg errors {result['errors']:.0f}", flush=True)
    return rows


def run_hold(targets, name, connections, duration, interval, tls):
    rows = {}
    for target, info in targets.targets.items():
        if target == "sluice+admin" or (tls and not info["tls_port"]) or (target == FLOOR and not name.startswith("S4")):
            continue
        pids = process_tree(info["pid"]) if info["pid"] else []
        scheme, port = ("wss", info["tls_port"]) if tls else ("ws", info["port"])
        rss_before = rss_bytes(pids)
        command = [os.path.join(BIN, "sluice-bench"), "hold", "--url", f"{scheme}://127.0.0.1:{port}/", "--connections", str(connections),
                   "--duration", str(duration), "--interval", str(interval), "--open-rate", "3000", "--source-addresses", "32", "--json"]
        holder = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Sample the proxy's memory in the middle of the hold, every connection open and idle.
        time.sleep(connections / 3000 + 3 + duration / 2)
        rss_during = rss_bytes(pids)
        out, err = holder.communicate(timeout=duration + connections / 100 + 120)
        if holder.returncode != 0:
            raise RuntimeError(err[-2000:])
        result = json.loads(out.strip().splitlines()[-1])
        opened = max(1, result["opened"])
        result["rss_per_connection_kib"] = (rss_during - rss_before) / opened / 1024 if pids else None
        result["rss_mib"] = rss_during / 1048576 if pids else None
        rows[target] = result
        print(f"{name:8} {target:13} opened {result['opened']}/{connections} failed {result['failed']} alive {result['alive']} "
              f"{result['handshakes_per_second']:>7.0f} handshakes/s rss/conn {result['rss_per_connection_kib'] or 0:>6.1f} KiB", flush=True)
        time.sleep(2)
    return rows


def run_handshakes(targets, name, connections, tls, rounds=3):
    """S8: `connections` WebSockets opened as fast as each target takes them (64 in flight),
    held a second and closed, `rounds` times per target in turn; handshakes/s and the target's
    CPU per connection (its whole life: accept, upgrade, backend connect, close), medians."""
    rows = {}
    for _ in range(rounds):
        for target, info in targets.targets.items():
            if target in ("sluice+admin", "direct") or (tls and not info["tls_port"]):
                continue
            pids = process_tree(info["pid"])
            scheme, port = ("wss", info["tls_port"]) if tls else ("ws", info["port"])
            cpu_before = cpu_seconds(pids)
            command = [os.path.join(BIN, "sluice-bench"), "hold", "--url", f"{scheme}://127.0.0.1:{port}/", "--connections", str(connections),
                       "--duration", "1", "--interval", "0", "--open-rate", "100000", "--source-addresses", "32", "--json"]
            out = subprocess.run(command, capture_output=True, text=True, timeout=connections / 100 + 120)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-2000:])
            result = json.loads(out.stdout.strip().splitlines()[-1])
            time.sleep(2)  # the closes reach the target and its backend connections
            result["cpu_us_per_connection"] = (cpu_seconds(pids) - cpu_before) * 1e6 / max(1, result["opened"])
            rows.setdefault(target, []).append(result)
            print(f"{name:8} {target:13} opened {result['opened']}/{connections} {result['handshakes_per_second']:>7.0f} handshakes/s "
                  f"{result['cpu_us_per_connection']:>6.0f} µs CPU per connection", flush=True)
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    return {target: {"opened": min(r["opened"] for r in runs), "failed": sum(r["failed"] for r in runs),
                     "handshakes_per_second": median([r["handshakes_per_second"] for r in runs]),
                     "handshake_p99_ms": median([r["handshake_p99_ms"] for r in runs]),
                     "cpu_us_per_connection": median([r["cpu_us_per_connection"] for r in runs])} for target, runs in rows.items()}


def write_http_config(work, name, port, backend):
    """Sluice's configuration for scenario H1: one route on `port` proxying everything to the
    static nginx on `backend`. Returns its path."""
    path = os.path.join(work, f"{name}.yaml")
    with open(path, "w") as config:
        config.write(f"""log_level: error
listeners: [ {{ name: bench, address: "127.0.0.1:{port}", backlog: 4096 }} ]
routes:
  - name: app
    match: {{ path_prefix: / }}
    backends: ["http://127.0.0.1:{backend}"]
    http: {{ pool: {{ max_idle: 64 }} }}
""")
    return path


def run_http(work, options):
    """Scenario H1: wrk with keep-alive against a fast backend directly, through Sluice, through
    nginx (same number of workers), and through a bare NIO byte tunnel (the floor)."""
    processes, rows = [], {}
    try:
        backend = free_port()
        static = render_template(work, "nginx-static.conf.template", {"WORK": work, "BACKEND": backend})
        processes.append(subprocess.Popen(["nginx", "-c", static, "-p", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_listening(backend)
        targets = {"direct": (backend, None)}
        port = free_port()
        path = write_http_config(work, "sluice-http", port, backend)
        sluice = subprocess.Popen([os.path.join(BIN, "sluice"), "run", "--config", path, "--event-loop-threads", str(options.workers)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(sluice)
        wait_listening(port)
        targets["sluice"] = (port, sluice.pid)
        port = free_port()
        proxy = render_template(work, "nginx-http.conf.template",
                                 {"WORK": work, "BACKEND": backend, "PORT": port, "WORKERS": options.workers})
        nginx = subprocess.Popen(["nginx", "-c", proxy, "-p", work], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(nginx)
        wait_listening(port)
        targets["nginx"] = (port, nginx.pid)
        # The floor: NIO relaying the same bytes with no HTTP work at all (one backend
        # connection per client connection, same threads).
        port = free_port()
        tunnel = subprocess.Popen([os.path.join(BIN, "sluice-bench"), "tunnel", "--listen", f"127.0.0.1:{port}",
                                   "--backend", f"127.0.0.1:{backend}", "--threads", str(options.workers), "--duration", "7200"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(tunnel)
        wait_listening(port)
        targets["nio-tunnel"] = (port, tunnel.pid)
        for name, (port, pid) in targets.items():
            pids = process_tree(pid) if pid else []
            before = cpu_seconds(pids)
            out = subprocess.run(["wrk", "-t1", "-c50", f"-d{options.duration}s", "--latency", f"http://127.0.0.1:{port}/"],
                                 capture_output=True, text=True, timeout=options.duration + 60).stdout
            used = cpu_seconds(pids) - before
            rate = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
            latency = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip().startswith(("50%", "99%"))}
            errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
            non2xx = next((int(line.split()[-1]) for line in out.splitlines() if "Non-2xx" in line), 0)
            rows[name] = {"requests_per_second": rate, "p50": latency.get("50%", "?"), "p99": latency.get("99%", "?"),
                          "cpu_us_per_request": used * 1e6 / (rate * options.duration) if pids and rate else None,
                          "errors": errors + non2xx}
            print(f"H1       {name:13} {rate:>9.0f} req/s p50 {rows[name]['p50']} p99 {rows[name]['p99']} "
                  f"cpu {rows[name]['cpu_us_per_request'] or 0:.2f}µs/req errors {rows[name]['errors']}", flush=True)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--only", default="S1,S2,S3,S4,S5,S6,S7,S8,H1")
    parser.add_argument("--s6-pairs", type=int, default=4)
    parser.add_argument("--pin", action="store_true", help="proxies on core 1, echo and load on core 0")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "RESULTS.md"))
    options = parser.parse_args()
    wanted = set(options.only.split(","))
    if options.pin:
        PROXY_CORE.extend(["taskset", "-c", "1"])
        LOAD_CORE.extend(["taskset", "-c", "0"])
    work = tempfile.mkdtemp(prefix="sluice-compare-")
    targets = Targets(work, options.workers)
    sections = []
    try:
        targets.start_all(include_admin="S6" in wanted)
        for name, args in LOAD_SCENARIOS:
            if name.split()[0] in wanted:
                only = [t for t in targets.targets if t not in ("sluice+admin", FLOOR)]
                sections.append(("load", name, args, run_load(targets, name, args, options.duration, only)))
        if "S4" in wanted:
            sections.append(("hold", "S4 ws", "5,000 idle connections held 20 s", run_hold(targets, "S4 ws", 5000, 20, 0, tls=False)))
            sections.append(("hold", "S4 wss", "5,000 idle connections held 20 s over TLS", run_hold(targets, "S4 wss", 5000, 20, 0, tls=True)))
        if "S8" in wanted:
            sections.append(("handshake", "S8 ws", "5,000 WebSockets opened unpaced, held 1 s, closed; 3 rounds, medians",
                             run_handshakes(targets, "S8 ws", 5000, tls=False)))
            sections.append(("handshake", "S8 wss", "the same over TLS", run_handshakes(targets, "S8 wss", 5000, tls=True)))
        if "S5" in wanted:
            sections.append(("hold", "S5", "9,000 connections held 30 s, a message each every 5 s", run_hold(targets, "S5", 9000, 30, 5, tls=False)))
        if "S6" in wanted:
            # Alternate off/on several times: one pair of 10-second runs swings ±20% here.
            args = LOAD_SCENARIOS[1][1]
            runs = [run_load(targets, "S6", args, options.duration, ["sluice", "sluice+admin"]) for _ in range(options.s6_pairs)]
            merged = {}
            for target in ("sluice", "sluice+admin"):
                samples = [run[target] for run in runs]
                merged[target] = {key: sum(sample[key] or 0 for sample in samples) / len(samples) for key in samples[0] if isinstance(samples[0][key], (int, float))}
                merged[target]["cpu_us_per_msg"] = merged[target].get("cpu_us_per_msg")
                merged[target]["cpu_s_per_gb"] = merged[target].get("cpu_s_per_gb")
                merged[target]["rates"] = [sample["messages_per_second"] for sample in samples]
            sections.append(("load", "S6", args + [f"(mean of {options.s6_pairs} alternating pairs)"], merged))
    finally:
        targets.stop()
    if "H1" in wanted and shutil.which("wrk"):
        sections.append(("http", "H1", "wrk -t1 -c50 keep-alive, 64-byte responses from nginx", run_http(work, options)))
    write_results(options, sections)
    shutil.rmtree(work, ignore_errors=True)


def ratio(value, best):
    return f"{value / best:.2f}×" if value is not None and best else "—"


def write_results(options, sections):
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    versions = {
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip() if shutil.which("nginx") else "absent",
        "haproxy": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0] if shutil.which("haproxy") else "absent",
        "caddy": subprocess.run(["caddy", "version"], capture_output=True, text=True).stdout.strip() if shutil.which("caddy") else "absent",
    }
    lines = [
        "# Benchmark results", "",
        f"`benchmarks/compare.py --workers {options.workers} --duration {options.duration}{' --pin' if options.pin else ''}` on {datetime.date.today().isoformat()}, "
        f"commit {commit}, `nproc` {os.cpu_count()} ({cpu}).",
        f"Peers: {versions['nginx']}; {versions['haproxy']}; {versions['caddy']}.",
        "The load generator and echo backend (`sluice-bench`, release build) share the machine with the proxy under test, so",
        "absolute numbers drift between runs; the ratios to the best peer in the same run are the figures to read.",
        f"Every proxy ran {options.workers} worker / event-loop thread (Caddy: GOMAXPROCS={options.workers}).", "",
    ]
    for kind, name, args, rows in sections:
        peers = {p: rows[p] for p in PEERS if p in rows}
        if kind == "load":
            lines += [f"## {name} (`{' '.join(args)}`)", "",
                      "| target | msgs/s | MB/s | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/msg | proxy CPU s/GB | errors |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for target, r in rows.items():
                cpu_msg = f"{r['cpu_us_per_msg']:.2f}" if r["cpu_us_per_msg"] is not None else "—"
                cpu_gb = f"{r['cpu_s_per_gb']:.2f}" if r["cpu_s_per_gb"] is not None else "—"
                lines.append(f"| {target} | {r['messages_per_second']:.0f} | {r['megabytes_per_second']:.1f} | {r['p50_us']:.0f} | "
                             f"{r['p99_us']:.0f} | {r['p999_us']:.0f} | {cpu_msg} | {cpu_gb} | {r['errors']:.0f} |")
            s = rows.get("sluice")
            if peers and s:
                best_rate = max(p["messages_per_second"] for p in peers.values())
                best_cpu = min((p["cpu_us_per_msg"] for p in peers.values() if p["cpu_us_per_msg"]), default=None)
                best_p99 = min(p["p99_us"] for p in peers.values())
                best_p999 = min(p["p999_us"] for p in peers.values())
                lines += ["", f"**Sluice / best peer:** throughput {ratio(s['messages_per_second'], best_rate)} (target ≥ 1.10×), "
                              f"CPU per message {ratio(s['cpu_us_per_msg'], best_cpu)} (≤ 1.00×), p99 {ratio(s['p99_us'], best_p99)}, "
                              f"p99.9 {ratio(s['p999_us'], best_p999)} (≤ 1.00×)."]
            if name == "S6" and "sluice+admin" in rows and s:
                spread = lambda rates: f"{min(rates):.0f}–{max(rates):.0f}" if rates else "?"
                lines += ["", f"**Registry, metrics endpoint and access log on vs off:** throughput "
                              f"{rows['sluice+admin']['messages_per_second'] / s['messages_per_second']:.3f}×, CPU per message "
                              f"{ratio(rows['sluice+admin']['cpu_us_per_msg'], s['cpu_us_per_msg'])} (target: cost under 3%); "
                              f"single runs ranged {spread(s.get('rates', []))} msgs/s off and {spread(rows['sluice+admin'].get('rates', []))} on."]
        elif kind == "handshake":
            lines += [f"## {name} ({args})", "", "| target | opened | failed | handshakes/s | p99 handshake ms | proxy CPU µs per connection |",
                      "|---|---|---|---|---|---|"]
            for target, r in rows.items():
                lines.append(f"| {target} | {r['opened']} | {r['failed']} | {r['handshakes_per_second']:.0f} | {r['handshake_p99_ms']:.1f} | "
                             f"{r['cpu_us_per_connection']:.0f} |")
            s = rows.get("sluice")
            if peers and s:
                best_hs = max(p["handshakes_per_second"] for p in peers.values())
                best_cpu = min(p["cpu_us_per_connection"] for p in peers.values())
                target_hs = "≥ 1.10×" if "wss" in name else "≥ 1.00×"
                lines += ["", f"**Sluice / best peer:** handshakes/s {ratio(s['handshakes_per_second'], best_hs)} (target {target_hs}), "
                              f"CPU per connection {ratio(s['cpu_us_per_connection'], best_cpu)} (target ≤ 1.00×)."]
                floor = rows.get(FLOOR)
                if floor:
                    lines += ["", f"**NIO byte tunnel / best peer** (an accept{', a TLS handshake' if 'wss' in name else ''} and a backend "
                                  f"connect per WebSocket, no HTTP work: the floor of a proxy on NIO channels): handshakes/s {ratio(floor['handshakes_per_second'], best_hs)}, CPU per "
                                  f"connection {ratio(floor['cpu_us_per_connection'], best_cpu)}; Sluice / the tunnel: CPU per connection "
                                  f"{ratio(s['cpu_us_per_connection'], floor['cpu_us_per_connection'])}."]
        elif kind == "http":
            lines += [f"## {name} ({args})", "", "| target | requests/s | p50 | p99 | proxy CPU µs/request | errors |", "|---|---|---|---|---|---|"]
            for target, r in rows.items():
                cpu_req = f"{r['cpu_us_per_request']:.2f}" if r["cpu_us_per_request"] is not None else "—"
                lines.append(f"| {target} | {r['requests_per_second']:.0f} | {r['p50']} | {r['p99']} | {cpu_req} | {r['errors']} |")
            if "sluice" in rows and "nginx" in rows:
                lines += ["", f"**Sluice / nginx:** requests/s {rows['sluice']['requests_per_second'] / rows['nginx']['requests_per_second']:.2f}× (target ≥ 1.00×), "
                              f"CPU per request {ratio(rows['sluice']['cpu_us_per_request'], rows['nginx']['cpu_us_per_request'])}."]
            if "nio-tunnel" in rows and "nginx" in rows:
                lines += ["", f"**NIO byte tunnel / nginx** (no HTTP work; the floor of a proxy built on NIO channels): requests/s "
                              f"{rows['nio-tunnel']['requests_per_second'] / rows['nginx']['requests_per_second']:.2f}×, CPU per request "
                              f"{ratio(rows['nio-tunnel']['cpu_us_per_request'], rows['nginx']['cpu_us_per_request'])}."]
        else:
            lines += [f"## {name} ({args})", "",
                      "| target | opened | failed | alive at the end | handshakes/s | proxy RSS MiB (held) | RSS per connection KiB |",
                      "|---|---|---|---|---|---|---|"]
            for target, r in rows.items():
                per = f"{r['rss_per_connection_kib']:.1f}" if r["rss_per_connection_kib"] is not None else "—"
                rss = f"{r['rss_mib']:.1f}" if r["rss_mib"] is not None else "—"
                lines.append(f"| {target} | {r['opened']} | {r['failed']} | {r['alive']} | {r['handshakes_per_second']:.0f} | {rss} | {per} |")
            s = rows.get("sluice")
            if peers and s and name.startswith("S4"):
                best_rss = min((p["rss_per_connection_kib"] for p in peers.values() if p["rss_per_connection_kib"]), default=None)
                best_hs = max(p["handshakes_per_second"] for p in peers.values())
                lines += ["", f"**Sluice / best peer:** RSS per connection {ratio(s['rss_per_connection_kib'], best_rss)}, "
                              f"handshakes/s {ratio(s['handshakes_per_second'], best_hs)}."]
                floor = rows.get(FLOOR)
                if floor and floor["rss_per_connection_kib"]:
                    lines += ["", f"**NIO byte tunnel** (two channels per WebSocket{' and swift-nio-ssl' if 'wss' in name else ''}, nothing "
                                  f"else): {floor['rss_per_connection_kib']:.1f} KiB "
                                  f"per connection, {ratio(floor['rss_per_connection_kib'], best_rss)} the best peer; Sluice / the tunnel "
                                  f"{ratio(s['rss_per_connection_kib'], floor['rss_per_connection_kib'])}."]
            elif s:
                # S5 runs after S4 in the same processes: their RSS already holds S4's peak, so only
                # the counts are compared here; memory per connection is S4's figure.
                lines += ["", f"**Sluice:** {s['alive']} of {s['opened']} alive at the end, {s['failed']} failed (target: all {s['opened']} alive)."]
        lines.append("")
    notes = os.path.join(ROOT, "benchmarks", "notes.md")
    if os.path.exists(notes):
        lines += ["", open(notes).read()]
    with open(options.results, "w") as out:
        out.write("\n".join(lines))
    print(f"wrote {options.results}")


if __name__ == "__main__":
    main()
