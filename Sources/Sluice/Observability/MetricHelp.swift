/// The `# HELP` line of every `sluice_*` metric. Metrics made through swift-metrics carry no
/// help text of their own, so `GatewayMetrics.render()` adds it from here before each `# TYPE`
/// line that has none; a test holds every `sluice_*` family in the output to having one.
enum MetricHelp {
    static let texts: [String: String] = [
        "sluice_connections_accepted_total": "TCP connections accepted, by listener.",
        "sluice_connections_active": "Client connections open now, by listener.",
        "sluice_http_connections_total": "Client connections by the HTTP version they spoke (h2, http/1.1).",
        "sluice_http2_connection_errors_total": "HTTP/2 connections ended by a GOAWAY with an error, by code.",
        "sluice_http_requests_total": "Plain HTTP requests answered, by listener, route and status.",
        "sluice_tls_handshake_failures_total": "TLS handshakes that failed, by listener.",
        "sluice_proxy_protocol_errors_total": "Connections refused at their PROXY protocol header, by listener and reason.",
        "sluice_cluster_store_calls_total": "Round trips to the cluster's Redis, by operation (admit, release, request, heartbeat, reconcile, view, kick).",
        "sluice_cluster_store_call_seconds": "Time to an answer of each Redis call of the cluster store, by operation.",
        "sluice_cluster_store_errors_total": "Redis calls of the cluster store that gave no usable answer, by operation and reason.",
        "sluice_cluster_store_failure_decisions_total": "Upgrades and requests decided by on_store_failure because Redis could not answer, by policy.",
        "sluice_limit_rejections_total": "Requests and upgrades refused by a limit, by limit.",
        "sluice_websocket_upgrades_total": "WebSocket upgrades by route and result (ok, or why it failed).",
        "sluice_websockets_active": "WebSockets relayed now, by route.",
        "sluice_websocket_messages_total": "WebSocket messages relayed, by route and direction (live connections included).",
        "sluice_websocket_frames_total": "WebSocket frames relayed, by route and direction (live connections included).",
        "sluice_websocket_bytes_total": "WebSocket payload bytes relayed, by route and direction (live connections included).",
        "sluice_websocket_closes_total": "Ended WebSockets by route, close code, who ended them and how.",
        "sluice_websocket_idle_timeouts_total": "WebSockets closed by the idle timeout, by route.",
        "sluice_websocket_duration_seconds": "How long WebSockets lived, by route.",
        "sluice_upstream_connect_seconds": "Time to connect to a backend, by route.",
        "sluice_upstream_handshake_seconds": "Time from the backend connection to its 101, by route.",
        "sluice_websocket_handshake_seconds": "Time from a client's upgrade request to the 101 it is sent (admission included), by route.",
        "sluice_upstream_response_seconds": "Time from a proxied request to the backend's response head, by route.",
        "sluice_config_reloads_total": "Configuration reloads, by result.",
        "sluice_backend_up": "1 when the backend takes new connections (not down, ejected or draining).",
        "sluice_backend_check_duration_seconds": "Time an active health check took, passed or failed.",
        "sluice_backend_ejections_total": "Times passive health ejected the backend.",
        "sluice_backend_retries_total": "Requests and upgrades tried again on another backend after this one failed before anything reached the client.",
    ]

    /// `text` (Prometheus exposition) with a `# HELP` line before each `# TYPE` line of a
    /// family that has none.
    static func addingMissing(to text: [UInt8]) -> [UInt8] {
        let lines = String(decoding: text, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        var helped = Set<Substring>()
        for line in lines where line.hasPrefix("# HELP ") {
            if let name = line.dropFirst(7).split(separator: " ").first { helped.insert(name) }
        }
        var out = ""
        out.reserveCapacity(text.count + 2048)
        for line in lines {
            if line.hasPrefix("# TYPE "), let name = line.dropFirst(7).split(separator: " ").first, !helped.contains(name),
                let help = texts[String(name)]
            {
                out += "# HELP \(name) \(help)\n"
            }
            out += line
            out += "\n"
        }
        if out.hasSuffix("\n\n") { out.removeLast() }
        return Array(out.utf8)
    }
}
