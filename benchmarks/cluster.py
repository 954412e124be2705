#!/usr/bin/env python3
"""What the cluster costs an upgrade (issue 24): upgrade rate and handshake latency with
`cluster:` on and off in the same run, and the Redis round trips per upgrade and per close.

usage: benchmarks/cluster.py [--connections 3000] [--rounds 3] [--paced-rate 1000] [--results benchmarks/RESULTS.md]

A release `sluice` (one event-loop thread, pinned to core 1) relays to an echo backend
(`sluice-bench echo`, core 0, a fresh one per gateway); `redis-server` runs on core 0 beside them.
Each round runs `sluice-bench hold` (core 0) against a gateway without a cluster block and one
with it (the route has a cluster-wide `max_websockets`), the order alternating by round, each
time in two runs:
`--connections` WebSockets opened as fast as the gateway takes them (the upgrade rate), and
`--connections` opened at `--paced-rate` per second (the handshake latency, p50 and p99, with no
queue in front; each handshake timed on the load generator's event loop); each run holds them a
second, then closes them. Reported per mode: the rate's median over rounds, latency quantiles of
all rounds' handshakes pooled; with the cluster, the gateway's own count of Redis round trips
(`sluice_cluster_store_calls_total`) per upgrade and per close, checked against the top-level
commands Redis says it received (`INFO commandstats`). Everything is on loopback and bounded.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import BIN, ROOT, free_port, replace_section, stop_all, wait_listening  # noqa: E402

MARK_BEGIN = "<!-- cluster.py begin -->"
MARK_END = "<!-- cluster.py end -->"


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values


def redis_commands(port):
    """Commands Redis received from clients: those Sluice sends at top level (the ones scripts run
    inside are counted by Redis under their own names and left out)."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True, text=True, check=True).stdout
    total = 0
    for line in out.splitlines():
        for command in ("evalsha", "eval", "publish", "ping", "auth", "select", "subscribe"):
            if line.startswith(f"cmdstat_{command}:"):
                total += int(line.split("calls=")[1].split(",")[0])
    return total


class Gateway:
    def __init__(self, work, name, echo, redis):
        self.port, self.admin = free_port(), free_port()
        config = f"{work}/{name}.yaml"
        cluster = f'cluster: {{ redis: "redis://127.0.0.1:{redis}/0", instance_id: bench }}\n' if redis else ""
        open(config, "w").write(f"""log_level: error
admin: {{ address: "127.0.0.1:{self.admin}" }}
listeners:
  - {{ name: bench, address: "127.0.0.1:{self.port}", backlog: 8192 }}
{cluster}routes:
  - name: echo
    match: {{ path_prefix: / }}
    backends: ["ws://127.0.0.1:{echo}"]
    websocket: {{ idle_timeout: off }}
    limits: {{ max_websockets: 100000 }}
""")
        self.log = open(f"{work}/{name}.log", "a")
        self.process = subprocess.Popen(["taskset", "-c", "1", os.path.join(BIN, "sluice"), "run", "--config", config,
                                         "--event-loop-threads", "1"], stdout=self.log, stderr=self.log)
        wait_listening(self.port)
        wait_listening(self.admin)

    def stop(self):
        stop_all([self.process], grace=15)


class Echo:
    """`sluice-bench echo` on core 0 with the load generator and Redis."""

    def __init__(self):
        self.port = free_port()
        self.process = subprocess.Popen(["taskset", "-c", "0", os.path.join(BIN, "sluice-bench"), "echo", "--listen",
                                         f"127.0.0.1:{self.port}", "--duration", "3600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port)

    def stop(self):
        stop_all([self.process], grace=15)


def bucket_quantile(before, after, selector, fraction, metric="sluice_cluster_store_call_seconds"):
    """The upper bound of the histogram bucket holding the `fraction` quantile of what `metric`
    (with the label `selector`, e.g. `operation="admit"`) timed between two scrapes, in seconds."""
    prefix = f'{metric}_bucket{{{selector},le="'
    buckets = sorted((float("inf") if key[len(prefix):-2] == "+Inf" else float(key[len(prefix):-2]), count - before.get(key, 0))
                     for key, count in after.items() if key.startswith(prefix))
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if total and count >= fraction * total:
            return bound
    return float("nan")


def hold(port, connections, open_rate, samples=False):
    """One `sluice-bench hold` run: open, hold a second, close; its JSON (with every handshake's
    duration when `samples`)."""
    out = subprocess.run(["taskset", "-c", "0", os.path.join(BIN, "sluice-bench"), "hold", "--url", f"ws://127.0.0.1:{port}/echo",
                          "--connections", str(connections), "--open-rate", str(open_rate), "--duration", "1", "--interval", "0",
                          "--json"] + (["--samples"] if samples else []), capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["opened"] != connections:
        raise RuntimeError(f"opened {result['opened']} of {connections}: {result['first_error']}")
    return result


def wait_closed(gateway, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics(gateway.admin).get("sluice_websockets_active", 0) == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("WebSockets still open after the hold ended")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paced-rate", type=int, default=1000)
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "RESULTS.md"))
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-cluster-bench-")
    processes = []
    try:
        redis = free_port()
        processes.append(subprocess.Popen(["taskset", "-c", "0", "redis-server", "--port", str(redis), "--bind", "127.0.0.1", "--save", "",
                                           "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_listening(redis)
        runs = {"off": [], "on": []}
        paced = {"off": [], "on": []}
        trips = []
        for round_index in range(options.rounds):
            # Which mode goes first alternates, so neither always meets the other's leftovers.
            for mode in (("off", "on") if round_index % 2 == 0 else ("on", "off")):
                # A fresh echo backend (a new port) per gateway: each run's 6,000 backend
                # connections leave as many sockets in TIME_WAIT, and a run dialing the same
                # address as the run before would wait on the kernel's search for a free port.
                echo = Echo()
                gateway = Gateway(work, f"{mode}-{round_index}", echo.port, redis if mode == "on" else None)
                try:
                    time.sleep(0.5)
                    before, redis_before = metrics(gateway.admin), redis_commands(redis)
                    result = hold(gateway.port, options.connections, 20000)
                    wait_closed(gateway)
                    after, redis_after = metrics(gateway.admin), redis_commands(redis)
                    runs[mode].append(result)
                    before_paced = metrics(gateway.admin)
                    paced[mode].append(hold(gateway.port, options.connections, options.paced_rate, samples=True))
                    wait_closed(gateway)
                    after_paced = metrics(gateway.admin)
                    # The handshake as Sluice sees it (request head to 101), free of the load
                    # generator's own scheduling.
                    for fraction, key in ((0.5, "server_p50_ms"), (0.99, "server_p99_ms")):
                        paced[mode][-1][key] = bucket_quantile(before_paced, after_paced, 'route="echo"', fraction,
                                                               metric="sluice_websocket_handshake_seconds") * 1000
                    if mode == "on":
                        def calls(operation):
                            key = f'sluice_cluster_store_calls_total{{operation="{operation}"}}'
                            return after.get(key, 0) - before.get(key, 0)
                        every = sum(calls(op) for op in ("admit", "release", "request", "heartbeat", "reconcile", "view", "kick"))
                        trips.append({"admit": calls("admit") / options.connections, "release": calls("release") / options.connections,
                                      "redis_per_call": (redis_after - redis_before) / max(every, 1),
                                      "admit_p99_ms": bucket_quantile(before_paced, after_paced, 'operation="admit"', 0.99) * 1000,
                                      "admit_p50_ms": bucket_quantile(before_paced, after_paced, 'operation="admit"', 0.50) * 1000})
                    print(f"round {round_index + 1} {mode}: {result['handshakes_per_second']:.0f}/s; paced p50 "
                          f"{paced[mode][-1]['handshake_p50_ms']:.2f} ms p99 {paced[mode][-1]['handshake_p99_ms']:.2f} ms", file=sys.stderr)
                finally:
                    gateway.stop()
                    echo.stop()
        median = lambda table, mode, key: statistics.median(run[key] for run in table[mode])  # noqa: E731
        # Latency quantiles from every paced handshake of every round pooled: a p99 of one run
        # rests on its 30 slowest handshakes and moves by milliseconds from run to run here.
        pooled = {mode: sorted(sample for run in paced[mode] for sample in run["handshakes_ms"]) for mode in paced}
        quantile = lambda mode, fraction: pooled[mode][min(len(pooled[mode]) - 1, int(fraction * len(pooled[mode])))]  # noqa: E731
        rows = []
        for mode in ("off", "on"):
            rows.append(f"| {'with' if mode == 'on' else 'without'} `cluster:` | {median(runs, mode, 'handshakes_per_second'):,.0f} | "
                        f"{quantile(mode, 0.5):.2f} | {quantile(mode, 0.99):.2f} | "
                        f"≤ {median(paced, mode, 'server_p50_ms'):g} | ≤ {median(paced, mode, 'server_p99_ms'):g} |")
        admit = statistics.median(t["admit"] for t in trips)
        release = statistics.median(t["release"] for t in trips)
        per_call = statistics.median(t["redis_per_call"] for t in trips)
        admit_p50 = statistics.median(t["admit_p50_ms"] for t in trips)
        admit_p99 = statistics.median(t["admit_p99_ms"] for t in trips)
        admit_p99_worst = max(t["admit_p99_ms"] for t in trips)
        p50_increase = quantile("on", 0.5) - quantile("off", 0.5)
        p99_increase = quantile("on", 0.99) - quantile("off", 0.99)
        median_p99_increase = median(paced, "on", "handshake_p99_ms") - median(paced, "off", "handshake_p99_ms")
        rate_ratio = median(runs, "on", "handshakes_per_second") / median(runs, "off", "handshakes_per_second")
        spread = lambda mode: f"{min(r['handshake_p99_ms'] for r in paced[mode]):.1f}–{max(r['handshake_p99_ms'] for r in paced[mode]):.1f}"  # noqa: E731
        section = f"""{MARK_BEGIN}
## Cluster through Redis: cost per upgrade (`benchmarks/cluster.py`)

{datetime.date.today()}, release build, one event-loop thread pinned to core 1; echo backend, load
generator and `redis-server` on core 0; {options.connections:,} WebSockets opened as fast as taken (rate),
then {options.connections:,} at {options.paced_rate:,}/s (latency; paced by the load generator's event-loop
timers, each handshake timed on its loop from connect to 101), each held 1 s and closed; {options.rounds}
rounds, which mode goes first alternating, a fresh echo backend per run. Rates: median round;
handshake latency: every paced handshake of every round pooled ({options.rounds * options.connections:,} per mode).

| gateway | handshakes/s (unpaced) | p50 handshake at {options.paced_rate:,}/s (ms) | p99 (ms) | in Sluice: p50 (ms, median round) | p99 (ms) |
|---|---|---|---|---|---|
{chr(10).join(rows)}

- Upgrade rate with the cluster: {rate_ratio:.2f}× without; handshake p50 {p50_increase:+.2f} ms, p99 {p99_increase:+.2f} ms
  (target: p99 increase < 1 ms on loopback). The p99 of single runs spans {spread("off")} ms without and
  {spread("on")} ms with the cluster here (load generator, echo and Redis share core 0; the median of
  the rounds' p99 moves by {median_p99_increase:+.2f} ms), which is why the quantiles pool the rounds; the p50
  difference is the Redis round trip.
- In Sluice (`sluice_websocket_handshake_seconds`, request head to 101; bucket bounds, median
  round), the handshake's p99 goes from ≤ {median(paced, "off", "server_p99_ms"):g} ms to ≤ {median(paced, "on", "server_p99_ms"):g} ms with the cluster.
- What the cluster adds to a handshake is its one `admit` call, which Sluice times itself
  (`sluice_cluster_store_call_seconds`), in the paced runs: p50 ≤ {admit_p50:g} ms, p99 ≤ {admit_p99:g} ms
  (bucket bounds, median round; worst round p99 ≤ {admit_p99_worst:g} ms), with Redis sharing a core with the
  load generator and the echo backend.
- Redis round trips: {admit:.2f} per upgrade and {release:.2f} per close (target ≤ 1 each), from the
  gateway's `sluice_cluster_store_calls_total`; Redis received {per_call:.2f} top-level commands per
  call counted (heartbeats included).
{MARK_END}
"""
        replace_section(options.results, MARK_BEGIN, MARK_END, section)
        print(section)
    finally:
        stop_all(processes)


if __name__ == "__main__":
    main()
