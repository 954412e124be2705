#!/usr/bin/env python3
"""Headless Chromium opens wss:// through Sluice from a page and reports, over the DevTools
protocol, what it exchanged. `--dump-dom` would return the page at its load event, before any
WebSocket result exists, so the DOM is polled instead.

usage: browser_test.py WSS_URL [PROTOCOL]   (exit 0 when every check passed)
       browser_test.py --demo HTTPS_URL      (Sluice's demo page echoes through the gateway)
       browser_test.py --page URL            (prints the JSON a page puts in its #result element)
       browser_test.py --dashboard URL ID PNG (Sluice's admin dashboard: waits for connection ID
                                               in its table, saves a screenshot, kicks it, waits
                                               for the row to go; prints JSON)
"""
import asyncio
import base64
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from websockets.asyncio.client import connect

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("chromium is not installed (apt-get install chromium)")


async def evaluate(debugger_url, expression):
    async with connect(debugger_url, max_size=None) as ws:
        await ws.send(json.dumps({"id": 1, "method": "Runtime.evaluate", "params": {"expression": expression, "returnByValue": True}}))
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("id") == 1:
                return reply.get("result", {}).get("result", {}).get("value")


async def command(debugger_url, method, params):
    async with connect(debugger_url, max_size=None) as ws:
        await ws.send(json.dumps({"id": 1, "method": method, "params": params}))
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("id") == 1:
                return reply.get("result", {})


async def run(url, protocol, page_url=None, expression="document.getElementById('result').textContent", then=None):
    # One Chromium at a time on this machine: two at once on two cores starve each other's pages.
    lock = open(os.path.join(tempfile.gettempdir(), "sluice-chromium.lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    profile = tempfile.mkdtemp(prefix="sluice-chromium-")
    query = urllib.parse.urlencode({"url": url, **({"protocol": protocol} if protocol else {})})
    page_url = page_url or f"file://{PAGE}?{query}"
    browser = subprocess.Popen([
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
        "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--window-size=1280,1000",
        page_url,
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        for _ in range(200):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        debugger = None
        for _ in range(100):
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
            pages = [t for t in targets if t.get("type") == "page" and t.get("url", "").startswith(page_url.split("?")[0].split("#")[0])]
            if pages:
                debugger = pages[0]["webSocketDebuggerUrl"]
                break
            time.sleep(0.1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = await evaluate(debugger, expression)
            if text:
                found = json.loads(text) if text.startswith("{") else {"text": text}
                return await then(debugger, found) if then else found
            await asyncio.sleep(0.2)
        return {"error": "no result in the page"}
    finally:
        # Chromium's own children (zygote, renderers) write into the profile too: the whole
        # session goes, then the profile, again until nothing writes it back.
        try:
            os.killpg(browser.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        browser.wait()
        deadline = time.time() + 5
        while True:
            shutil.rmtree(profile, ignore_errors=True)
            if not os.path.exists(profile) or time.time() > deadline:
                break
            time.sleep(0.1)


def demo(url):
    """Loads Sluice's demo page and waits for its own echo to appear in the log."""
    probe = ("(() => { const log = document.getElementById('log');"
             " return log && log.textContent.includes('\u2190 hello through sluice') ? log.textContent : ''; })()")
    outcome = asyncio.run(run(None, None, page_url=url, expression=probe))
    passed = "hello through sluice" in outcome.get("text", "")
    print(f"chromium on the demo page {url}: {'ok' if passed else 'FAIL'} {json.dumps(outcome)}")
    sys.exit(0 if passed else 1)


def page(url):
    """Loads any page and prints the JSON its #result element ends up holding."""
    print(json.dumps(asyncio.run(run(None, None, page_url=url))), flush=True)
    sys.exit(0)


def dashboard(url, ident, screenshot):
    """The admin dashboard shows connection `ident`; its kick button closes it."""
    row = f"document.querySelector('tr[data-id=\"{ident}\"]')"
    probe = f"(() => {{ const r = {row}; return r ? JSON.stringify({{row: r.textContent, summary: document.getElementById('summary').textContent, backends: document.getElementById('backends').textContent}}) : ''; }})()"

    async def kick(debugger, found):
        await asyncio.sleep(2.5)  # a second sample, so the rate chart has a line
        shot = await command(debugger, "Page.captureScreenshot", {"format": "png"})
        with open(screenshot, "wb") as out:
            out.write(base64.b64decode(shot["data"]))
        await evaluate(debugger, f"document.querySelector('button[data-kick=\"{ident}\"]').click()")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not await evaluate(debugger, f"{row} ? 'present' : ''"):
                found["row_gone"] = True
                return found
            await asyncio.sleep(0.2)
        found["row_gone"] = False
        return found

    outcome = asyncio.run(run(None, None, page_url=url, expression=probe, then=kick))
    print(json.dumps(outcome), flush=True)
    sys.exit(0)


def main():
    if sys.argv[1] == "--dashboard":
        dashboard(sys.argv[2], sys.argv[3], sys.argv[4])
    if sys.argv[1] == "--demo":
        demo(sys.argv[2])
    if sys.argv[1] == "--page":
        page(sys.argv[2])
    url = sys.argv[1]
    protocol = sys.argv[2] if len(sys.argv) > 2 else None
    outcome = asyncio.run(run(url, protocol))
    checks = {
        "text and binary echoed": outcome.get("steps") == ["text ok", "binary ok"],
        "close code 4000 came back": outcome.get("closeCode") == 4000,
        "permessage-deflate negotiated end to end": "permessage-deflate" in (outcome.get("extensions") or ""),
    }
    if protocol:
        checks[f"subprotocol {protocol} negotiated"] = outcome.get("protocol") == protocol
    print(f"chromium via {url} (protocol {protocol or 'none'}): {json.dumps(outcome)}")
    for name, passed in checks.items():
        print(f"  {'ok  ' if passed else 'FAIL'} {name}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
