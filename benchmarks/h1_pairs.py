#!/usr/bin/env python3
"""Scenario H1 in alternating pairs with pinned cores: the way to compare two builds of Sluice,
or Sluice with nginx, on a machine whose speed drifts.

usage: benchmarks/h1_pairs.py [--against nginx | --against PATH/TO/OTHER/sluice] [--sluice PATH]
                              [--floor] [--answer-floor] [--bench PATH/TO/sluice-bench] [--rounds 8] [--duration 5]
                              [--connections 50] [--request get|post|large|close]

Against nginx it prints Sluice/nginx; against another build B it prints B/A (A is --sluice).
With --floor (against nginx only), every round also measures `sluice-bench tunnel`, NIO relaying
the same bytes through two channels with no HTTP work, and prints tunnel/nginx: the ceiling of a
proxy whose hot path is NIO channel handlers, measured in the same rounds. With --answer-floor,
every round also measures `sluice-bench h1floor`, NIO answering each request itself with no
backend: for `--request close` the floor of what a NIO server pays per new connection (accept,
pipeline, read, write, close), which the tunnel, opening a backend connection per client, is not.

Each proxy runs alone on core 1 (one event-loop thread, one nginx worker); wrk and the static
nginx backend share core 0. Every round measures one, then the other, each after a one-second warm-up, and
prints requests/s and the proxy's CPU per request (user and system, from /proc). The medians of
the per-round ratios B/A are the figures to read: single rounds swing by a third on these
machines, and a drift hits both halves of a round alike. Needs two cores, nginx and wrk; every
target is on loopback and every run is bounded in time.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import BIN, cpu_seconds, free_port, process_tree, render_template, stop_all, wait_listening, write_http_config  # noqa: E402


def start(command, core):
    return subprocess.Popen(["taskset", "-c", str(core)] + command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(port, pid, duration, connections=50, shape=()):
    """requests/s and CPU µs per request of the proxy at `pid`, after a warm-up. `shape` is the
    request's path (first) and wrk's further arguments."""
    path, extra = (shape[0], list(shape[1:])) if shape else ("/", [])
    url = f"http://127.0.0.1:{port}{path}"
    subprocess.run(["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", "-d1s"] + extra + [url], capture_output=True, timeout=60)
    pids = process_tree(pid)
    before = cpu_seconds(pids)
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{duration}s"] + extra + [url],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    used = cpu_seconds(pids) - before
    failed = [line.strip() for line in out.splitlines() if "Non-2xx" in line]
    if failed:
        sys.exit(f"{url}: {failed[0]}: the comparison would count failures as requests")
    rate = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
    return rate, used * 1e6 / (rate * duration)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sluice", default=os.path.join(BIN, "sluice"))
    parser.add_argument("--against", default="nginx", help="nginx, or the path of another sluice binary")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50,
                        help="wrk's connections; above the pool's max_idle (64, nginx's keepalive 64) they show how each proxy bears a burst")
    parser.add_argument("--request", choices=["get", "post", "large", "close"], default="get",
                        help="get: 64-byte answers (scenario H1); post: 1 KiB POST bodies; large: 100 KB answers; "
                             "close: a new client connection per request (Connection: close)")
    parser.add_argument("--floor", action="store_true", help="also measure the bare NIO tunnel each round (against nginx)")
    parser.add_argument("--answer-floor", action="store_true",
                        help="also measure `sluice-bench h1floor` each round (against nginx): NIO answering every "
                             "request itself, no backend; for a new connection per request the tunnel, which opens "
                             "a backend connection per client, is not the floor")
    parser.add_argument("--bench", default=os.path.join(BIN, "sluice-bench"), help="the sluice-bench binary for --floor")
    options = parser.parse_args()
    if (options.floor or options.answer_floor) and options.against != "nginx":
        sys.exit("--floor and --answer-floor compare a floor with nginx: use them with --against nginx")
    if (os.cpu_count() or 1) < 2:
        sys.exit("h1_pairs needs two cores: one for the proxy, one for wrk and the backend")
    work = tempfile.mkdtemp(prefix="sluice-h1-pairs-")
    os.chmod(work, 0o755)  # nginx's workers read the large answer from here
    with open(os.path.join(work, "100k.bin"), "wb") as large:
        large.write(os.urandom(100_000))
    with open(os.path.join(work, "post.lua"), "w") as script:
        script.write('wrk.method = "POST"\nwrk.body = string.rep("x", 1024)\nwrk.headers["Content-Type"] = "text/plain"\n')
    shape = {"get": ("/",), "post": ("/", "-s", os.path.join(work, "post.lua")), "large": ("/100k.bin",),
             "close": ("/", "-H", "Connection: close")}[options.request]
    processes = []
    try:
        backend = free_port()
        static = render_template(work, "nginx-static.conf.template", {"WORK": work, "BACKEND": backend})
        processes.append(start(["nginx", "-c", static, "-p", work], 0))
        wait_listening(backend)

        def sluice(binary, name):
            port = free_port()
            path = write_http_config(work, name, port, backend)
            process = start([binary, "run", "--config", path, "--event-loop-threads", "1"], 1)
            processes.append(process)
            wait_listening(port)
            return port, process.pid

        # Ratios are second/first: Sluice against nginx, or the --against build against --sluice.
        if options.against == "nginx":
            port = free_port()
            proxy = render_template(work, "nginx-http.conf.template", {"WORK": work, "BACKEND": backend, "PORT": port, "WORKERS": 1})
            nginx = start(["nginx", "-c", proxy, "-p", work], 1)
            processes.append(nginx)
            wait_listening(port)
            a, b, labels = (port, nginx.pid), sluice(options.sluice, "sluice"), ("nginx", "sluice")
        else:
            a, b, labels = sluice(options.sluice, "a"), sluice(options.against, "b"), ("A", "B")
        floor = None
        if options.floor:
            port = free_port()
            tunnel = start([options.bench, "tunnel", "--listen", f"127.0.0.1:{port}", "--backend", f"127.0.0.1:{backend}",
                            "--threads", "1", "--duration", str(options.rounds * (options.duration + 2) * 3 + 60)], 1)
            processes.append(tunnel)
            wait_listening(port)
            floor = (port, tunnel.pid)
        answer = None
        if options.answer_floor:
            port = free_port()
            server = start([options.bench, "h1floor", "--listen", f"127.0.0.1:{port}",
                            "--duration", str(options.rounds * (options.duration + 2) * 4 + 60)], 1)
            processes.append(server)
            wait_listening(port)
            answer = (port, server.pid)
        rates, cpus, floor_rates, floor_cpus, answer_rates, answer_cpus = [], [], [], [], [], []
        for round_number in range(1, options.rounds + 1):
            rate_a, cpu_a = measure(*a, options.duration, options.connections, shape)
            rate_b, cpu_b = measure(*b, options.duration, options.connections, shape)
            rates.append(rate_b / rate_a)
            cpus.append(cpu_b / cpu_a)
            line = (f"round {round_number}: {labels[0]} {rate_a:8.0f} req/s {cpu_a:6.1f} µs/req   "
                    f"{labels[1]} {rate_b:8.0f} req/s {cpu_b:6.1f} µs/req   {labels[1]}/{labels[0]} {rates[-1]:.2f}× {cpus[-1]:.2f}× CPU")
            if floor:
                rate_f, cpu_f = measure(*floor, options.duration, options.connections, shape)
                floor_rates.append(rate_f / rate_a)
                floor_cpus.append(cpu_f / cpu_a)
                line += f"   tunnel {rate_f:8.0f} req/s {cpu_f:6.1f} µs/req   tunnel/{labels[0]} {floor_rates[-1]:.2f}× {floor_cpus[-1]:.2f}× CPU"
            if answer:
                rate_n, cpu_n = measure(*answer, options.duration, options.connections, shape)
                answer_rates.append(rate_n / rate_a)
                answer_cpus.append(cpu_n / cpu_a)
                line += f"   h1floor {rate_n:8.0f} req/s {cpu_n:6.1f} µs/req   h1floor/{labels[0]} {answer_rates[-1]:.2f}× {answer_cpus[-1]:.2f}× CPU"
            print(line, flush=True)
        print(f"median {labels[1]}/{labels[0]}: requests/s {statistics.median(rates):.2f}× "
              f"(rounds {min(rates):.2f}–{max(rates):.2f}×), CPU per request {statistics.median(cpus):.2f}×")
        if floor:
            print(f"median tunnel/{labels[0]}: requests/s {statistics.median(floor_rates):.2f}× "
                  f"(rounds {min(floor_rates):.2f}–{max(floor_rates):.2f}×), CPU per request {statistics.median(floor_cpus):.2f}×")
        if answer:
            print(f"median h1floor/{labels[0]}: requests/s {statistics.median(answer_rates):.2f}× "
                  f"(rounds {min(answer_rates):.2f}–{max(answer_rates):.2f}×), CPU per request {statistics.median(answer_cpus):.2f}×")
    finally:
        stop_all(processes)


if __name__ == "__main__":
    main()
