#!/usr/bin/env python3
"""A long-lived test driver: WebSocket clients (Python's `websockets`) opened, used and closed
one command at a time, so a Swift test can hold connections open across its own checks.

Reads one JSON command per line on stdin and answers each with one JSON line on stdout:
  {"op": "open", "id": "a", "url": "ws://...", "headers": {...}}   -> {"status": 101} or
                                                                       {"status": 429, "headers": {...}, "body": "..."}
  {"op": "send", "id": "a", "data": "text", "echo": true}           -> {"echo": "text"}
  {"op": "close", "id": "a", "code": 1000}                          -> {"close_code": ..., "close_reason": ...}
  {"op": "kill", "id": "a"}                                         -> {} (TCP abort, no close frame)
  {"op": "wait-close", "id": "a", "timeout": 10}                    -> {"close_code": ..., "close_reason": ...}
  {"op": "metrics", "url": "http://.../metrics", "token": "...", "timeout": 10} -> {"samples": [[name, labels, value], ...]}
  {"op": "http", "url": "...", "method": "GET", "headers": {...}, "timeout": 10} -> {"status": ..., "body": "...", "headers": {...}}
  {"op": "churn", "url": ..., "count": N, "concurrency": C, ...}    -> {"paths": {...}}
  {"op": "open-many", "opens": [{"id": .., "url": .., "headers": {..}}, ...]}
                                                                    -> {"statuses": {id: status}, "seconds": {id: s}}
      (all at once; the ones answered 101 stay open under their ids)
"""
import asyncio
import time
import json
import os
import socket
import sys
import urllib.request
import urllib.error

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

connections = {}


async def open_connection(command):
    try:
        ws = await connect(command["url"], additional_headers=command.get("headers", {}), max_size=None,
                           subprotocols=command.get("subprotocols"),
                           ping_interval=None, open_timeout=30, close_timeout=5, compression=None)
    except InvalidStatus as error:
        response = error.response
        return {"status": response.status_code, "body": response.body.decode("utf-8", "replace"),
                "headers": {k.lower(): v for k, v in response.headers.raw_items()}}
    connections[command["id"]] = ws
    return {"status": 101}


async def open_many(command):
    async def one(item):
        started = time.monotonic()
        try:
            result = await open_connection(item)
            status = result["status"]
        except Exception as error:
            status = f"{type(error).__name__}: {error}"
        return item["id"], status, time.monotonic() - started
    results = await asyncio.gather(*(one(item) for item in command["opens"]))
    return {"statuses": {i: s for i, s, _ in results}, "seconds": {i: t for i, _, t in results}}


def close_result(ws):
    rcvd = ws.protocol.close_rcvd
    return {"close_code": rcvd.code if rcvd else None, "close_reason": rcvd.reason if rcvd else None}


async def wait_close(ws, timeout):
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed:
        pass
    except asyncio.TimeoutError:
        return {"timeout": True}
    return close_result(ws)


def http(command):
    request = urllib.request.Request(command["url"], method=command.get("method", "GET"), headers=command.get("headers", {}))
    try:
        with urllib.request.urlopen(request, timeout=command.get("timeout", 10)) as response:
            return {"status": response.status, "body": response.read().decode("utf-8", "replace"),
                    "headers": {k.lower(): v for k, v in response.headers.items()}}
    except urllib.error.HTTPError as error:
        return {"status": error.code, "body": error.read().decode("utf-8", "replace"),
                "headers": {k.lower(): v for k, v in error.headers.items()}}


def metrics(command):
    from prometheus_client.parser import text_string_to_metric_families
    headers = {"Authorization": f"Bearer {command['token']}"} if command.get("token") else {}
    answer = http({"url": command["url"], "headers": headers, "timeout": command.get("timeout", 10)})
    if answer["status"] != 200:
        return answer
    samples = []
    for family in text_string_to_metric_families(answer["body"]):
        for sample in family.samples:
            samples.append([sample.name, sample.labels, sample.value])
    return {"status": 200, "samples": samples, "content_type": answer["headers"].get("content-type")}


async def churn(command):
    """Opens and ends `count` connections, `concurrency` at a time, each ending a different
    way: a clean close, a TCP abort, a protocol violation, an idle timeout, a refused upgrade,
    a request head that never completes. Returns how many took each path, and of the
    operations that failed on the client's side (`error`), which way each was meant to end."""
    url = command["url"]
    host, port = command["host"], command["port"]
    paths = {"clean": 0, "abort": 0, "violation": 0, "idle": 0, "refused": 0, "half-request": 0, "error": 0}
    kinds = ["clean", "abort", "violation", "idle", "half-request"] + (["backend-down"] if command.get("dead_url") else [])
    paths["backend-down"] = 0
    semaphore = asyncio.Semaphore(command.get("concurrency", 50))

    async def one(index):
        kind = kinds[index % len(kinds)]
        async with semaphore:
            try:
                if kind == "half-request":
                    reader, writer = await asyncio.open_connection(host, port)
                    writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.01)
                    writer.transport.abort()
                    paths[kind] += 1
                    return
                target = command["dead_url"] if kind == "backend-down" else url
                try:
                    # 30 s: one Python process opening 60 at a time beside the whole suite on
                    # two cores has waited past 10 s for a handshake the gateway had answered.
                    ws = await connect(target, ping_interval=None, open_timeout=30, close_timeout=2, compression=None)
                except InvalidStatus as error:
                    status = error.response.status_code
                    codes[f"{kind}:{status}"] = codes.get(f"{kind}:{status}", 0) + 1
                    paths["backend-down" if kind == "backend-down" and status == 502 else "refused"] += 1
                    return
                if kind == "clean":
                    await ws.send("hi")
                    await ws.recv()
                    await ws.close()
                elif kind == "abort":
                    await ws.send("hi")
                    ws.transport.abort()
                elif kind == "violation":
                    # A frame with a reserved opcode: the gateway must close with 1002.
                    ws.transport.write(bytes([0x83, 0x80, 1, 2, 3, 4]))
                    await wait_close(ws, 5)
                elif kind == "idle":
                    closed = await wait_close(ws, 5)
                    code = closed.get("close_code")
                    codes[f"idle:{code}"] = codes.get(f"idle:{code}", 0) + 1
                paths[kind] += 1
            except Exception as error:
                paths["error"] += 1
                failed[kind] = failed.get(kind, 0) + 1
                if len(errors) < 5:
                    errors.append(f"{kind}: {type(error).__name__}: {error}")

    errors, codes, failed = [], {}, {}
    await asyncio.gather(*(one(i) for i in range(command["count"])))
    return {"paths": paths, "errors": errors, "codes": codes, "failed": failed}


async def main():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        op = command["op"]
        try:
            if op == "open":
                answer = await open_connection(command)
            elif op == "send":
                ws = connections[command["id"]]
                await ws.send(command["data"])
                answer = {"echo": await asyncio.wait_for(ws.recv(), 10)} if command.get("echo", True) else {}
            elif op == "close":
                ws = connections.pop(command["id"])
                await ws.close(command.get("code", 1000), command.get("reason", ""))
                answer = close_result(ws)
            elif op == "kill":
                connections.pop(command["id"]).transport.abort()
                answer = {}
            elif op == "wait-close":
                answer = await wait_close(connections[command["id"]], command.get("timeout", 10))
            elif op == "metrics":
                answer = await asyncio.to_thread(metrics, command)
            elif op == "http":
                answer = await asyncio.to_thread(http, command)
            elif op == "churn":
                answer = await churn(command)
            elif op == "open-many":
                answer = await open_many(command)
            else:
                answer = {"error": f"unknown op {op}"}
        except Exception as error:  # reported to the test, which asserts on it
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    import signal
    # The test process may spawn us with signals blocked. No PR_SET_PDEATHSIG here: it fires
    # when the spawning *thread* exits, and pool threads come and go; stdin reaching EOF is
    # how this session learns the test is gone.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    asyncio.run(main())
