#!/usr/bin/env python3
"""Reload under load (issue 20): what a configuration reload costs a gateway holding 5,000 live
WebSockets.

usage: benchmarks/reload.py [--connections 5000] [--reloads 20] [--duration 12] [--results benchmarks/RESULTS.md]

A release `sluice` (one event-loop thread, pinned to core 1) relays to the echo backend
(`sluice-bench echo`, core 0). `sluice-bench hold` opens `--connections` WebSockets and holds
them (no traffic while holding); beside them `sluice-bench load` sends 64-byte messages at a
fixed rate (2,000/s over 20 connections) for `--duration` seconds, twice: once with no reload,
once while the configuration is reloaded `--reloads` times, alternating `POST /reload` and
SIGHUP, alternating two files (a route added and removed, the listener's certificate swapped).

Reported: reload latency (POST /reload: request to answer, which returns once the new
configuration is in force; SIGHUP: signal to `config_version` changing in `/readyz`), the
gateway's CPU per reload (the extra CPU of the reload run over the quiet run, divided by the
reloads), RSS before and after the reloads, and the load's p99 latency with and without the
reloads. At the end every held connection must still answer its echo: 0 dropped.
Every target is on loopback, every run bounded.
"""
import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import BIN, ROOT, cpu_seconds, free_port, replace_section, rss_bytes, wait_listening  # noqa: E402

MARK_BEGIN = "<!-- reload.py begin -->"
MARK_END = "<!-- reload.py end -->"
TOKEN = "reload-benchmark-token-0123456789"


def admin(port, path, method="GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"" if method == "POST" else None,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}") if response.headers.get("Content-Type", "").startswith("application/json") else response.read().decode()


def metric(port, name):
    for line in admin(port, "/metrics").splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Gateway:
    def __init__(self, work):
        self.work, self.processes = work, []
        self.log = open(os.path.join(work, "reload.log"), "a")
        for name in ("a", "b"):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                            "-subj", f"/CN=localhost-{name}", "-keyout", f"{work}/key-{name}.pem", "-out", f"{work}/cert-{name}.pem"],
                           check=True, capture_output=True)
        open(f"{work}/token", "w").write(TOKEN)
        self.echo = free_port()
        self.processes.append(subprocess.Popen(["taskset", "-c", "0", os.path.join(BIN, "sluice-bench"), "echo", "--listen",
                                                f"127.0.0.1:{self.echo}", "--duration", "3600"], stdout=self.log, stderr=self.log))
        wait_listening(self.echo)
        self.port, self.tls, self.admin = free_port(), free_port(), free_port()
        self.config = f"{work}/sluice.yaml"
        self.write_config("a")
        self.sluice = subprocess.Popen(["taskset", "-c", "1", os.path.join(BIN, "sluice"), "run", "--config", self.config,
                                        "--event-loop-threads", "1"], stdout=self.log, stderr=self.log)
        self.processes.append(self.sluice)
        wait_listening(self.port)
        wait_listening(self.admin)

    def write_config(self, variant):
        extra = "" if variant == "a" else """  - name: added
    match: { path_prefix: /added }
    backends: ["ws://127.0.0.1:%d"]
""" % self.echo
        text = f"""log_level: error
admin: {{ address: "127.0.0.1:{self.admin}", token_file: {self.work}/token }}
listeners:
  - {{ name: bench, address: "127.0.0.1:{self.port}", backlog: 8192 }}
  - name: bench-tls
    address: "127.0.0.1:{self.tls}"
    tls: {{ certificates: [ {{ cert: {self.work}/cert-{variant}.pem, key: {self.work}/key-{variant}.pem }} ] }}
routes:
{extra}  - name: echo
    match: {{ path_prefix: / }}
    backends: ["ws://127.0.0.1:{self.echo}"]
    websocket: {{ idle_timeout: off }}
"""
        temporary = self.config + ".new"
        open(temporary, "w").write(text)
        os.replace(temporary, self.config)

    def version(self):
        return admin(self.admin, "/readyz")["config_version"]

    def stop(self):
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def load(port, duration):
    out = subprocess.run(["taskset", "-c", "0", os.path.join(BIN, "sluice-bench"), "load", "--url", f"ws://127.0.0.1:{port}/echo",
                          "--connections", "20", "--size", "64", "--rate", "2000", "--duration", str(duration), "--json"],
                         capture_output=True, text=True, timeout=duration + 120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def reloads(gateway, count, spacing, latencies):
    """Alternates POST /reload and SIGHUP, alternating the two files; records each latency."""
    for index in range(count):
        time.sleep(spacing)
        gateway.write_config("b" if index % 2 == 0 else "a")
        before = gateway.version()
        started = time.monotonic()
        if index % 2 == 0:
            answer = admin(gateway.admin, "/reload", "POST")
            if not answer.get("reloaded"):
                raise RuntimeError(f"reload refused: {answer}")
            latencies["post"].append(time.monotonic() - started)
        else:
            gateway.sluice.send_signal(signal.SIGHUP)
            while gateway.version() == before:
                if time.monotonic() - started > 30:
                    raise RuntimeError("SIGHUP: the configuration did not change within 30 s")
                time.sleep(0.0005)
            latencies["sighup"].append(time.monotonic() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--duration", type=int, default=12)
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "RESULTS.md"))
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-reload-bench-")
    gateway = Gateway(work)
    holder = None
    try:
        hold_for = 2 * options.duration + 60
        holder = subprocess.Popen(["taskset", "-c", "0", os.path.join(BIN, "sluice-bench"), "hold", "--url", f"ws://127.0.0.1:{gateway.port}/held",
                                   "--connections", str(options.connections), "--duration", str(hold_for), "--interval", "0",
                                   "--open-rate", "2000", "--json"], stdout=subprocess.PIPE, stderr=gateway.log, text=True)
        deadline = time.monotonic() + 120
        while metric(gateway.admin, "sluice_websockets_active") < options.connections:
            if time.monotonic() > deadline or holder.poll() is not None:
                raise RuntimeError(f"only {metric(gateway.admin, 'sluice_websockets_active')} WebSockets open")
            time.sleep(0.2)
        time.sleep(1)
        pids = [gateway.sluice.pid]
        cpu_quiet_start = cpu_seconds(pids)
        quiet = load(gateway.port, options.duration)
        cpu_quiet = cpu_seconds(pids) - cpu_quiet_start
        rss_before = rss_bytes(pids)
        latencies = {"post": [], "sighup": []}
        spacing = max(0.05, options.duration * 0.8 / options.reloads)
        cpu_reload_start = cpu_seconds(pids)
        failure = []
        def run_reloads():
            try:
                reloads(gateway, options.reloads, spacing, latencies)
            except Exception as error:  # reported after the run
                failure.append(error)
        thread = threading.Thread(target=run_reloads)
        thread.start()
        busy = load(gateway.port, options.duration)
        thread.join()
        cpu_busy = cpu_seconds(pids) - cpu_reload_start
        if failure:
            raise RuntimeError(f"reload failed: {failure[0]}")
        rss_after = rss_bytes(pids)
        active_after = metric(gateway.admin, "sluice_websockets_active")
        held = json.loads(holder.communicate(timeout=hold_for + 120)[0].strip().splitlines()[-1])
        done = len(latencies["post"]) + len(latencies["sighup"])
        everything = latencies["post"] + latencies["sighup"]
        result = {
            "connections": options.connections, "reloads": done,
            "post_ms_median": statistics.median(latencies["post"]) * 1e3, "post_ms_max": max(latencies["post"]) * 1e3,
            "sighup_ms_median": statistics.median(latencies["sighup"]) * 1e3, "sighup_ms_max": max(latencies["sighup"]) * 1e3,
            "all_ms_median": statistics.median(everything) * 1e3,
            "cpu_ms_per_reload": max(0.0, cpu_busy - cpu_quiet) * 1e3 / done,
            "rss_before_mb": rss_before / 1e6, "rss_after_mb": rss_after / 1e6,
            "p99_quiet_us": quiet["p99_us"], "p99_reloading_us": busy["p99_us"],
            "p50_quiet_us": quiet["p50_us"], "p50_reloading_us": busy["p50_us"],
            "max_quiet_us": quiet["max_us"], "max_reloading_us": busy["max_us"],
            "load_errors": quiet["errors"] + busy["errors"],
            "held_alive": held["alive"], "held_opened": held["opened"], "active_after": active_after,
        }
        print(json.dumps(result, indent=1))
        write_results(options, result)
    finally:
        if holder and holder.poll() is None:
            holder.kill()
        gateway.stop()


def write_results(options, r):
    lines = [
        MARK_BEGIN,
        "## Reload under load (`benchmarks/reload.py`)",
        "",
        f"Run {datetime.date.today().isoformat()}: a release `sluice` (one event loop, core 1) holding {r['held_opened']:,} idle WebSockets",
        "while `sluice-bench load` sends 2,000 64-byte messages/s over 20 more; the configuration reloaded",
        f"{r['reloads']} times (alternating `POST /reload` and SIGHUP, a route added and removed, the TLS certificate swapped).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| reload latency, `POST /reload` (request → answer, new config in force) | median {r['post_ms_median']:.1f} ms, max {r['post_ms_max']:.1f} ms |",
        f"| reload latency, SIGHUP (signal → `config_version` changed in `/readyz`) | median {r['sighup_ms_median']:.1f} ms, max {r['sighup_ms_max']:.1f} ms |",
        f"| gateway CPU per reload (reload run minus quiet run) | {r['cpu_ms_per_reload']:.1f} ms |",
        f"| RSS before → after the reloads | {r['rss_before_mb']:.1f} MB → {r['rss_after_mb']:.1f} MB |",
        f"| load p50 / p99 / max latency, no reload | {r['p50_quiet_us']:.0f} / {r['p99_quiet_us']:.0f} / {r['max_quiet_us']:.0f} µs |",
        f"| load p50 / p99 / max latency, reloading | {r['p50_reloading_us']:.0f} / {r['p99_reloading_us']:.0f} / {r['max_reloading_us']:.0f} µs |",
        f"| held WebSockets alive at the end (echo answered) | {r['held_alive']:,} of {r['held_opened']:,}; load errors {r['load_errors']:.0f} |",
        "",
        MARK_END,
    ]
    replace_section(options.results, MARK_BEGIN, MARK_END, "\n".join(lines))


if __name__ == "__main__":
    main()
