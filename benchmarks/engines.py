#!/usr/bin/env python3
"""Relay engines below the WebSocket layer (issue 25, phase 1): the byte tunnel on NIO and on
io_uring (`sluice-bench tunnel --engine nio|uring`) beside nginx and HAProxy relaying the same
WebSockets, in the same run, and Sluice's own frame-aware relay beside them (issue 22's window
targets: at window 1 within 5% of the NIO tunnel, at window 16 no more CPU than the best peer).

usage: benchmarks/engines.py [--rounds 3] [--duration 5] [--results docs/relay-engine.md]

Each relay runs alone on core 1 with one thread; the echo backend and the load generator
(`sluice-bench echo`, `sluice-bench load`, release builds) share core 0. Scenarios: 64-byte
messages at window 1 and at window 16 over 50 connections, and 64 KiB messages at window 1 over
10. Per relay and scenario: messages/s, p99, the relay's CPU per message (user + system, /proc),
and its system calls per message (`perf stat -e raw_syscalls:sys_enter` on the relay process).
Medians over rounds. Every target is on loopback, every run bounded.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import BIN, ROOT, cpu_seconds, free_port, process_tree, render_template, replace_section, wait_listening  # noqa: E402

SCENARIOS = [
    ("64 B, window 1, 50 connections", ["--connections", "50", "--size", "64", "--window", "1"]),
    ("64 B, window 16, 50 connections", ["--connections", "50", "--size", "64", "--window", "16"]),
    ("64 KiB, window 1, 10 connections", ["--connections", "10", "--size", "65536", "--window", "1"]),
]


def start_relays(work, echo):
    relays, processes = {}, []
    log = open(os.path.join(work, "relays.log"), "a")
    for engine in ("nio", "uring"):
        port = free_port()
        process = subprocess.Popen(["taskset", "-c", "1", os.path.join(BIN, "sluice-bench"), "tunnel", "--engine", engine,
                                    "--listen", f"127.0.0.1:{port}", "--backend", f"127.0.0.1:{echo}", "--duration", "7200"],
                                   stdout=log, stderr=log)
        processes.append(process)
        relays[f"{engine} tunnel"] = (port, process.pid)
    port = free_port()
    config = os.path.join(work, "sluice.yaml")
    open(config, "w").write(f"""log_level: error
listeners: [ {{ name: bench, address: "127.0.0.1:{port}", backlog: 4096 }} ]
routes:
  - name: echo
    match: {{ path_prefix: / }}
    backends: ["ws://127.0.0.1:{echo}"]
    websocket: {{ idle_timeout: off }}
""")
    process = subprocess.Popen(["taskset", "-c", "1", os.path.join(BIN, "sluice"), "run", "--config", config, "--event-loop-threads", "1"],
                               stdout=log, stderr=log)
    processes.append(process)
    relays["sluice"] = (port, process.pid)
    if shutil.which("nginx"):
        port, tls = free_port(), free_port()
        cert = os.path.join(work, "cert.pem")
        key = os.path.join(work, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-keyout", key, "-out", cert], check=True, capture_output=True)
        open(os.path.join(work, "pem"), "w").write(open(cert).read() + open(key).read())
        config = render_template(work, "nginx.conf.template", {"WORKERS": 1, "WORK": work, "BACKEND": echo, "PORT": port,
                                                                 "TLSPORT": tls, "CERT": cert, "KEY": key})
        process = subprocess.Popen(["taskset", "-c", "1", "nginx", "-c", config, "-p", work], stdout=log, stderr=log)
        processes.append(process)
        relays["nginx"] = (port, process.pid)
    if shutil.which("haproxy"):
        port, tls = free_port(), free_port()
        config = render_template(work, "haproxy.cfg.template", {"WORKERS": 1, "WORK": work, "BACKEND": echo, "PORT": port,
                                                                  "TLSPORT": tls, "PEM": os.path.join(work, "pem")})
        process = subprocess.Popen(["taskset", "-c", "1", "haproxy", "-f", config], stdout=log, stderr=log)
        processes.append(process)
        relays["haproxy"] = (port, process.pid)
    for port, _ in relays.values():
        wait_listening(port)
    return relays, processes


def measure(port, pid, arguments, duration):
    pids = process_tree(pid)
    perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", ",".join(map(str, pids))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    before = cpu_seconds(pids)
    out = subprocess.run(["taskset", "-c", "0", os.path.join(BIN, "sluice-bench"), "load", "--url", f"ws://127.0.0.1:{port}/echo",
                          *arguments, "--duration", str(duration), "--json"], capture_output=True, text=True, timeout=duration + 120)
    used = cpu_seconds(pids) - before
    perf.send_signal(signal.SIGINT)
    counted = perf.communicate(timeout=30)[1]
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    messages = result["messages_per_second"] * duration
    syscalls = next((int(line.split(",")[0]) for line in counted.splitlines() if "raw_syscalls:sys_enter" in line and line.split(",")[0].isdigit()), None)
    # Each echoed message crosses the relay twice (there and back): per message means per echo.
    return {"rate": result["messages_per_second"], "p99": result["p99_us"], "errors": result["errors"],
            "cpu_us": used * 1e6 / messages if messages else None,
            "syscalls": syscalls / messages if syscalls is not None and messages else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--results", default=os.path.join(ROOT, "docs", "relay-engine.md"))
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-engines-")
    echo = free_port()
    echo_process = subprocess.Popen(["taskset", "-c", "0", os.path.join(BIN, "sluice-bench"), "echo", "--listen", f"127.0.0.1:{echo}",
                                     "--duration", "7200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(echo)
    relays, processes = start_relays(work, echo)
    samples = {}
    try:
        for round_number in range(1, options.rounds + 1):
            for scenario, arguments in SCENARIOS:
                for name, (port, pid) in relays.items():
                    result = measure(port, pid, arguments, options.duration)
                    samples.setdefault((scenario, name), []).append(result)
                    print(f"round {round_number} {scenario:34} {name:13} {result['rate']:9.0f} msgs/s  cpu {result['cpu_us'] or 0:6.2f} µs/msg  "
                          f"syscalls {result['syscalls'] or 0:5.2f}/msg  p99 {result['p99']:8.0f} µs  errors {result['errors']:.0f}", flush=True)
    finally:
        for process in processes + [echo_process]:
            process.send_signal(signal.SIGTERM)
        for process in processes + [echo_process]:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    table = {}
    for (scenario, name), results in samples.items():
        table.setdefault(scenario, {})[name] = {key: statistics.median([r[key] for r in results if r[key] is not None] or [0])
                                                 for key in ("rate", "p99", "cpu_us", "syscalls", "errors")}
    print(json.dumps(table, indent=1))
    write_results(options, table)


def write_results(options, table):
    lines = ["<!-- engines.py begin -->", "",
             f"Run {datetime.date.today().isoformat()} (`benchmarks/engines.py --rounds {options.rounds} --duration {options.duration}`), medians over rounds;",
             "each relay alone on core 1 with one thread, the echo backend and the load on core 0. \"Per message\" is per echoed",
             "message (it crosses the relay both ways).", ""]
    for scenario, rows in table.items():
        lines += [f"### {scenario}", "", "| relay | msgs/s | CPU µs/msg | syscalls/msg | p99 µs |", "|---|---|---|---|---|"]
        for name, row in rows.items():
            lines.append(f"| {name} | {row['rate']:.0f} | {row['cpu_us']:.2f} | {row['syscalls']:.2f} | {row['p99']:.0f} |")
        if "nginx" in rows and "uring tunnel" in rows and rows["nginx"]["cpu_us"]:
            lines += ["", f"io_uring tunnel / nginx CPU per message: {rows['uring tunnel']['cpu_us'] / rows['nginx']['cpu_us']:.2f}×; "
                          f"NIO tunnel / nginx: {rows['nio tunnel']['cpu_us'] / rows['nginx']['cpu_us']:.2f}×."]
        peers = [name for name in ("nginx", "haproxy") if name in rows and rows[name]["cpu_us"]]
        if "sluice" in rows and peers and rows["nio tunnel"]["cpu_us"]:
            best = min(peers, key=lambda name: rows[name]["cpu_us"])
            lines += ["", f"Sluice (the frame-aware relay) / NIO tunnel CPU per message: {rows['sluice']['cpu_us'] / rows['nio tunnel']['cpu_us']:.2f}×; "
                          f"Sluice / best peer ({best}): {rows['sluice']['cpu_us'] / rows[best]['cpu_us']:.2f}×, "
                          f"messages/s {rows['sluice']['rate'] / rows[best]['rate']:.2f}×."]
        lines.append("")
    lines.append("<!-- engines.py end -->")
    replace_section(options.results, "<!-- engines.py begin -->", "<!-- engines.py end -->", "\n".join(lines), title="# Relay engine\n")


if __name__ == "__main__":
    main()
