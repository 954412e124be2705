#!/usr/bin/env python3
"""Side-by-side WebSocket relay benchmark: the echo backend directly, through Sluice, nginx and
HAProxy, target after target on this machine, with each proxy's CPU time read from /proc.

usage: benchmarks/compare.py [--workers 1] [--duration 10] [--results benchmarks/RESULTS.md]

Needs release builds (`swift build -c release`), nginx and haproxy (Debian packages). Every
target is on loopback; every run is bounded by --duration.
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

SCENARIOS = [
    ("S1 w1", ["--connections", "50", "--size", "64", "--window", "1"]),
    ("S1 w16", ["--connections", "50", "--size", "64", "--window", "16"]),
    ("S2", ["--connections", "10", "--size", "65536", "--window", "4"]),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def cpu_seconds(pids):
    """utime + stime of the processes, from /proc/PID/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total / ticks


def process_tree(pid):
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [int(c) for c in children]


def load(url, args, duration):
    out = subprocess.run([os.path.join(BIN, "sluice-bench"), "load", "--url", url, "--duration", str(duration), "--json"] + args,
                         capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "RESULTS.md"))
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-compare-")
    processes = []

    def start(command, **kwargs):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "stderr.log"), "a"), **kwargs)
        processes.append(process)
        return process

    try:
        echo_port = free_port()
        start([os.path.join(BIN, "sluice-bench"), "echo", "--listen", f"127.0.0.1:{echo_port}", "--duration", "3600"])
        wait_listening(echo_port)
        targets = {"direct": (echo_port, None)}

        sluice_port = free_port()
        with open(os.path.join(work, "sluice.yaml"), "w") as config:
            config.write(f"""log_level: error
listeners:
  - {{ name: bench, address: "127.0.0.1:{sluice_port}", backlog: 4096 }}
routes:
  - name: echo
    match: {{ path_prefix: / }}
    backends: ["ws://127.0.0.1:{echo_port}"]
    websocket: {{ idle_timeout: off }}
""")
        sluice = start([os.path.join(BIN, "sluice"), "run", "--config", os.path.join(work, "sluice.yaml"),
                        "--event-loop-threads", str(options.workers)])
        wait_listening(sluice_port)
        targets["sluice"] = (sluice_port, sluice.pid)

        template_dir = os.path.join(ROOT, "benchmarks")
        if shutil.which("nginx"):
            port = free_port()
            text = open(os.path.join(template_dir, "nginx.conf.template")).read()
            text = text.replace("__WORKERS__", str(options.workers)).replace("__WORK__", work)
            text = text.replace("__BACKEND__", str(echo_port)).replace("__PORT__", str(port))
            open(os.path.join(work, "nginx.conf"), "w").write(text)
            nginx = start(["nginx", "-c", os.path.join(work, "nginx.conf"), "-p", work])
            wait_listening(port)
            targets["nginx"] = (port, nginx.pid)
        if shutil.which("haproxy"):
            port = free_port()
            text = open(os.path.join(template_dir, "haproxy.cfg.template")).read()
            text = text.replace("__WORKERS__", str(options.workers)).replace("__BACKEND__", str(echo_port)).replace("__PORT__", str(port))
            open(os.path.join(work, "haproxy.cfg"), "w").write(text)
            haproxy = start(["haproxy", "-f", os.path.join(work, "haproxy.cfg")])
            wait_listening(port)
            targets["haproxy"] = (port, haproxy.pid)

        tables = []
        for name, args in SCENARIOS:
            rows = {}
            for target, (port, pid) in targets.items():
                pids = process_tree(pid) if pid else []
                before = cpu_seconds(pids)
                result = load(f"ws://127.0.0.1:{port}/", args, options.duration)
                after = cpu_seconds(pids)
                messages = result["messages_per_second"] * options.duration
                result["cpu_us_per_msg"] = (after - before) * 1e6 / messages if pid and messages else None
                result["cpu_s_per_gb"] = (after - before) / (messages * result["size"] / 1e9) if pid and messages else None
                rows[target] = result
                print(f"{name:8} {target:8} {result['messages_per_second']:>10.0f} msgs/s {result['megabytes_per_second']:>8.1f} MB/s "
                      f"p50 {result['p50_us']:>7.0f}µs p99 {result['p99_us']:>7.0f}µs "
                      f"cpu {result['cpu_us_per_msg'] or 0:>6.2f}µs/msg", flush=True)
            tables.append((name, args, rows))
        write_results(options, tables)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


def write_results(options, tables):
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `benchmarks/compare.py --workers {options.workers} --duration {options.duration}` on "
        f"{datetime.date.today().isoformat()}, commit {commit}, {os.cpu_count()} cores ({cpu}).",
        "Load generator and echo backend: `sluice-bench` (release build), on the same machine as the proxies,",
        f"so absolute numbers drift; compare ratios. Each proxy ran {options.workers} worker(s)/event-loop thread(s).",
        "",
    ]
    for name, args, rows in tables:
        peers = [rows[p] for p in ("nginx", "haproxy") if p in rows]
        lines += [f"## {name} (`{' '.join(args)}`)", "",
                  "| target | msgs/s | MB/s | p50 µs | p99 µs | proxy CPU µs/msg | proxy CPU s/GB |", "|---|---|---|---|---|---|---|"]
        for target, r in rows.items():
            cpu_msg = f"{r['cpu_us_per_msg']:.2f}" if r["cpu_us_per_msg"] is not None else "—"
            cpu_gb = f"{r['cpu_s_per_gb']:.2f}" if r["cpu_s_per_gb"] is not None else "—"
            lines.append(f"| {target} | {r['messages_per_second']:.0f} | {r['megabytes_per_second']:.1f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {cpu_msg} | {cpu_gb} |")
        if peers and "sluice" in rows:
            best_rate = max(p["messages_per_second"] for p in peers)
            best_cpu = min(p["cpu_us_per_msg"] for p in peers if p["cpu_us_per_msg"])
            best_p99 = min(p["p99_us"] for p in peers)
            s = rows["sluice"]
            lines += ["", f"Sluice / best peer: throughput {s['messages_per_second'] / best_rate:.2f}×, "
                          f"CPU per message {s['cpu_us_per_msg'] / best_cpu:.2f}×, p99 {s['p99_us'] / best_p99:.2f}×."]
        lines.append("")
    with open(options.results, "w") as out:
        out.write("\n".join(lines))
    print(f"wrote {options.results}")


if __name__ == "__main__":
    main()
