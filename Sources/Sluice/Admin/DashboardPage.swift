/// The live dashboard the admin listener serves at `/`: one self-contained page (no CDN, no
/// build step; it ships in the binary) that polls `/overview`, `/backends`, `/connections` and
/// `/metrics` every two seconds and shows listeners, routes, backends and their state, live
/// WebSockets (filterable, each with a kick button), and the rates of upgrades, messages and
/// closes by code over the last five minutes. The token, when one is set, is typed into the
/// page (or given as `#token=…`) and kept in the tab's session storage only.
enum DashboardPage {
    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Sluice</title>
    <style>
      body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
      header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex; gap: 24px; align-items: center; }
      header h1 { font-size: 18px; margin: 0; }
      header .meta { opacity: .8; }
      main { padding: 16px 20px; display: grid; gap: 16px; grid-template-columns: 1fr 1fr; }
      section { background: #fff; border-radius: 6px; padding: 12px 16px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
      section.wide { grid-column: 1 / -1; }
      h2 { font-size: 15px; margin: 0 0 8px; }
      table { border-collapse: collapse; width: 100%; font-size: 13px; }
      th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #eef0f3; white-space: nowrap; }
      th { color: #5a6275; font-weight: 600; }
      .state-up { color: #17803d; } .state-down, .state-ejected { color: #b42318; } .state-draining { color: #b54708; }
      button { font: inherit; padding: 1px 8px; cursor: pointer; }
      #error { color: #b42318; }
      svg { width: 100%; height: 120px; background: #fbfbfc; }
      .legend span { margin-right: 14px; } .legend i { display: inline-block; width: 10px; height: 3px; margin-right: 4px; vertical-align: middle; }
    </style>
    </head>
    <body>
    <header><h1>Sluice</h1><span class="meta" id="summary">loading…</span>
      <label class="meta">token <input id="token" type="password" size="18"></label><span id="error"></span></header>
    <main>
      <section><h2>Listeners</h2><table id="listeners"></table></section>
      <section><h2>Routes</h2><table id="routes"></table></section>
      <section class="wide"><h2>Backends</h2><table id="backends"></table></section>
      <section class="wide"><h2>Rates (per second, last 5 minutes)</h2>
        <div class="legend"><span><i style="background:#2563eb"></i>upgrades</span><span><i style="background:#16a34a"></i>messages</span><span><i style="background:#dc2626"></i>closes</span></div>
        <svg id="chart" viewBox="0 0 600 120" preserveAspectRatio="none"></svg>
        <div id="closes"></div></section>
      <section class="wide"><h2>Live WebSockets <input id="filter" placeholder="filter: route, user, client, backend" size="36"></h2>
        <table id="connections"></table></section>
    </main>
    <script>
    "use strict";
    const tokenInput = document.getElementById("token");
    const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromHash) { sessionStorage.setItem("sluice-token", fromHash); history.replaceState(null, "", location.pathname); }
    tokenInput.value = sessionStorage.getItem("sluice-token") || "";
    tokenInput.addEventListener("change", () => { sessionStorage.setItem("sluice-token", tokenInput.value); refresh(); });
    const filterInput = document.getElementById("filter");
    filterInput.addEventListener("input", () => renderConnections());
    const history5m = [];
    let lastTotals = null, connections = [];

    function headers() { const t = tokenInput.value; return t ? { Authorization: "Bearer " + t } : {}; }
    async function get(path, text) {
      const response = await fetch(path, { headers: headers(), cache: "no-store" });
      if (!response.ok) throw new Error(path + ": " + response.status);
      return text ? response.text() : response.json();
    }
    function cell(value) { const td = document.createElement("td"); td.textContent = value == null ? "" : String(value); return td; }
    function table(id, columns, rows, extra) {
      const element = document.getElementById(id);
      element.replaceChildren();
      const head = document.createElement("tr");
      for (const column of columns) { const th = document.createElement("th"); th.textContent = column[0]; head.append(th); }
      if (extra) head.append(document.createElement("th"));
      element.append(head);
      for (const row of rows) {
        const tr = document.createElement("tr");
        for (const column of columns) {
          const td = cell(column[1](row));
          if (column[2]) td.className = column[2](row);
          tr.append(td);
        }
        if (extra) { const td = document.createElement("td"); td.append(extra(row)); tr.append(td); }
        tr.dataset.id = row.id ?? "";
        element.append(tr);
      }
    }
    function ago(seconds) { return seconds < 60 ? seconds.toFixed(0) + " s" : seconds < 3600 ? (seconds / 60).toFixed(0) + " min" : (seconds / 3600).toFixed(1) + " h"; }
    function totals(text) {
      const sum = { upgrades: 0, messages: 0, closes: 0, codes: {} };
      for (const line of text.split("\n")) {
        if (line.startsWith("#")) continue;
        const value = parseFloat(line.slice(line.lastIndexOf(" ") + 1));
        if (line.startsWith("sluice_websocket_upgrades_total{") && line.includes('result="ok"')) sum.upgrades += value;
        else if (line.startsWith("sluice_websocket_messages_total{")) sum.messages += value;
        else if (line.startsWith("sluice_websocket_closes_total{")) {
          sum.closes += value;
          const code = (line.match(/code="([^"]*)"/) || [])[1] || "none";
          sum.codes[code] = (sum.codes[code] || 0) + value;
        }
      }
      return sum;
    }
    function chart() {
      const svg = document.getElementById("chart");
      const series = [["upgrades", "#2563eb"], ["messages", "#16a34a"], ["closes", "#dc2626"]];
      svg.replaceChildren();
      if (history5m.length < 2) return;
      const t0 = history5m[history5m.length - 1].at - 300;
      for (const [name, colour] of series) {
        const top = Math.max(1, ...history5m.map(point => point[name]));
        const points = history5m.map(point => ((point.at - t0) * 2).toFixed(1) + "," + (115 - 110 * point[name] / top).toFixed(1)).join(" ");
        const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
        line.setAttribute("points", points); line.setAttribute("fill", "none"); line.setAttribute("stroke", colour); line.setAttribute("stroke-width", "1.5");
        const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
        title.textContent = name + ": " + history5m[history5m.length - 1][name].toFixed(1) + "/s now, peak " + top.toFixed(1) + "/s";
        line.append(title); svg.append(line);
      }
    }
    function renderConnections() {
      const words = filterInput.value.toLowerCase().split(/\s+/).filter(Boolean);
      const shown = connections.filter(c => words.every(w => [c.route, c.user, c.client, c.backend, String(c.id)].join(" ").toLowerCase().includes(w)));
      table("connections", [
        ["id", c => c.id], ["route", c => c.route], ["client", c => c.client], ["user", c => c.user], ["backend", c => c.backend],
        ["protocol", c => c.protocol], ["state", c => c.state], ["age", c => ago(c.age_seconds)],
        ["messages in/out", c => (c.client_to_backend?.messages ?? 0) + " / " + (c.backend_to_client?.messages ?? 0)],
        ["bytes in/out", c => (c.client_to_backend?.bytes ?? 0) + " / " + (c.backend_to_client?.bytes ?? 0)],
      ], shown, c => {
        const button = document.createElement("button");
        button.textContent = "kick"; button.dataset.kick = c.id;
        button.onclick = async () => {
          button.disabled = true;
          await fetch("/connections/" + c.id, { method: "DELETE", headers: headers() });
          refresh();
        };
        return button;
      });
    }
    async function refresh() {
      try {
        const [overview, backends, listing, metrics] = await Promise.all([get("/overview"), get("/backends"), get("/connections?limit=500&sort=age"), get("/metrics", true)]);
        document.getElementById("error").textContent = "";
        document.getElementById("summary").textContent =
          overview.phase + " · config " + overview.config_version + " · " + overview.websockets + " WebSockets";
        table("listeners", [["name", l => l.name], ["address", l => l.address], ["tls", l => l.tls ? "yes" : "no"], ["versions", l => l.versions.join(", ")], ["open", l => l.open]], overview.listeners);
        table("routes", [["name", r => r.name], ["host", r => r.host || "any"], ["prefix", r => r.path_prefix], ["backends", r => r.backends], ["auth", r => r.auth ? "yes" : "no"]], overview.routes);
        const rows = backends.routes.flatMap(r => r.backends.map(b => Object.assign({ route: r.route }, b)));
        table("backends", [
          ["route", b => b.route], ["backend", b => b.url], ["state", b => b.state, b => "state-" + b.state], ["weight", b => b.weight],
          ["in flight", b => b.active], ["failures", b => b.failures], ["last failure", b => b.last_failure || ""],
        ], rows);
        connections = listing.connections;
        renderConnections();
        const now = Date.now() / 1000, sum = totals(metrics);
        if (lastTotals) {
          const span = Math.max(0.001, now - lastTotals.at);
          history5m.push({ at: now, upgrades: (sum.upgrades - lastTotals.upgrades) / span, messages: (sum.messages - lastTotals.messages) / span, closes: (sum.closes - lastTotals.closes) / span });
          while (history5m.length && history5m[0].at < now - 300) history5m.shift();
        }
        const codes = Object.entries(sum.codes).map(([code, n]) => code + ": " + n).join(" · ");
        document.getElementById("closes").textContent = codes ? "closes by code since start — " + codes : "";
        lastTotals = Object.assign({ at: now }, sum);
        chart();
      } catch (error) {
        document.getElementById("error").textContent = String(error.message || error) + (String(error).includes("401") ? " (token?)" : "");
      }
    }
    refresh();
    setInterval(refresh, 2000);
    </script>
    </body>
    </html>
    """#
}
