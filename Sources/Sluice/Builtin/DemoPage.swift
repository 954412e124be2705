/// The page the default configuration serves at `/`: it opens a WebSocket to `/echo` through
/// the gateway and shows what comes back, so a newcomer sees Sluice relay at once.
enum DemoPage {
    /// The page is served at the route's prefix (with or without a trailing `/`) and as
    /// `index.html` there; any other path under the prefix is a 404, not the page again.
    static func serves(_ path: String, prefix: String) -> Bool {
        let base = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
        return path == base || path == base + "/" || path == base + "/index.html" || (base.isEmpty && path == "/")
    }

    /// The page as Sluice answers it.
    static var answer: GatewayAnswer {
        GatewayAnswer(.ok, body: html, contentType: "text/html; charset=utf-8", headers: [("Cache-Control", "no-store")])
    }

    static let html = """
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <title>Sluice demo</title>
    <style>
    body { font: 16px/1.4 system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; }
    #log { border: 1px solid #ccc; padding: .5rem; height: 18rem; overflow-y: auto; font-family: monospace; }
    .in { color: #075; } .out { color: #036; } .info { color: #777; }
    </style>
    </head>
    <body>
    <h1>Sluice</h1>
    <p>This page opened a WebSocket to <code>/echo</code>. Sluice relays it, frame by frame, to its
    built-in echo backend. Type a message and it comes back.</p>
    <form id="form"><input id="text" size="40" value="hello through sluice" autofocus>
    <button>Send</button></form>
    <p>Status: <span id="status">connecting…</span></p>
    <div id="log"></div>
    <script>
    const log = (cls, text) => {
      const line = document.createElement("div");
      line.className = cls;
      line.textContent = text;
      document.getElementById("log").appendChild(line);
    };
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + location.host + "/echo");
    socket.onopen = () => {
      document.getElementById("status").textContent = "open";
      socket.send("hello through sluice");
      log("out", "→ hello through sluice");
    };
    socket.onmessage = (event) => log("in", "← " + event.data);
    socket.onclose = (event) => {
      document.getElementById("status").textContent = "closed (" + event.code + ")";
    };
    socket.onerror = () => log("info", "WebSocket error");
    document.getElementById("form").onsubmit = (event) => {
      event.preventDefault();
      const text = document.getElementById("text").value;
      socket.send(text);
      log("out", "→ " + text);
    };
    </script>
    </body>
    </html>

    """
}
