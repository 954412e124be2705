/// The filters, order and limit of `GET /connections`.
struct ConnectionQuery {
    enum Sort: String, CaseIterable {
        /// Oldest first.
        case id, age
        /// Most bytes (both directions) first.
        case bytes
        /// Most messages (both directions) first.
        case messages
        /// Longest idle first.
        case idle
    }

    struct Invalid: Error {
        var message: String
    }

    var route: String?
    var user: String?
    var client: String?
    var limit = 100
    var sort = Sort.id
    /// `cluster`: every instance's WebSockets, from the cluster's store.
    var clusterWide = false

    init(_ query: [String: String]) throws(Invalid) {
        let known: Set<String> = ["route", "user", "client", "limit", "sort", "scope"]
        if let unknown = query.keys.first(where: { !known.contains($0) }) {
            throw Invalid(message: "unknown parameter '\(unknown)'; known: route, user, client, limit, sort, scope")
        }
        if let scope = query["scope"] {
            guard scope == "cluster" || scope == "instance" else { throw Invalid(message: "scope is 'instance' (the default) or 'cluster'") }
            clusterWide = scope == "cluster"
        }
        route = query["route"]
        user = query["user"]
        client = query["client"]
        if let text = query["limit"] {
            guard let value = Int(text), (1...100_000).contains(value) else { throw Invalid(message: "limit must be 1 to 100000") }
            limit = value
        }
        if let text = query["sort"] {
            guard let value = Sort(rawValue: text) else {
                throw Invalid(message: "sort must be one of \(Sort.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            sort = value
        }
    }

    /// The matching connections, ordered and cut to `limit`, and how many matched in all.
    func apply(_ snapshots: [ConnectionSnapshot]) -> ([ConnectionSnapshot], Int) {
        let matching = snapshots.filter { snapshot in
            (route == nil || snapshot.info.route == route) && (user == nil || snapshot.info.user == user)
                && (client == nil || snapshot.info.client == client)
        }
        let ordered: [ConnectionSnapshot]
        switch sort {
        case .id, .age: ordered = matching.sorted { $0.info.id < $1.info.id }
        case .bytes: ordered = matching.sorted { ($0.fromClient.bytes + $0.fromBackend.bytes, $1.info.id) > ($1.fromClient.bytes + $1.fromBackend.bytes, $0.info.id) }
        case .messages: ordered = matching.sorted { ($0.fromClient.messages + $0.fromBackend.messages, $1.info.id) > ($1.fromClient.messages + $1.fromBackend.messages, $0.info.id) }
        case .idle: ordered = matching.sorted { ($0.lastActivity, $0.info.id) < ($1.lastActivity, $1.info.id) }
        }
        return (Array(ordered.prefix(limit)), matching.count)
    }
}

/// The JSON shapes of `/connections`.
enum ConnectionJSON {
    static func list(_ snapshots: [ConnectionSnapshot], matching total: Int) -> String {
        "{\"total\":\(total),\"connections\":[" + snapshots.map(object).joined(separator: ",") + "]}"
    }

    static func object(_ snapshot: ConnectionSnapshot) -> String {
        let info = snapshot.info
        let now = WallClock.now()
        var fields: [String] = [
            "\"id\":\(info.id)",
            "\"route\":\(quoted(info.route))",
            "\"listener\":\(quoted(info.listener))",
            "\"client\":\(quoted(info.client))",
            "\"user\":\(info.user.map(quoted) ?? "null")",
            "\"backend\":\(quoted(info.backend))",
            "\"subprotocol\":\(info.subprotocol.map(quoted) ?? "null")",
            "\"extensions\":[\(info.extensions.map(quoted).joined(separator: ","))]",
            "\"protocol\":\(quoted(info.clientProtocol))",
            "\"state\":\(quoted(snapshot.state))",
            "\"started_at\":\(seconds(info.startedAt))",
            "\"age_seconds\":\(seconds(now - info.startedAt))",
            "\"last_activity\":\(seconds(snapshot.lastActivity))",
            "\"idle_seconds\":\(seconds(max(0, now - snapshot.lastActivity)))",
        ]
        fields.append("\"client_to_backend\":\(traffic(snapshot.fromClient))")
        fields.append("\"backend_to_client\":\(traffic(snapshot.fromBackend))")
        return "{" + fields.joined(separator: ",") + "}"
    }

    static func traffic(_ counters: TrafficCounters) -> String {
        "{\"bytes\":\(counters.bytes),\"frames\":\(counters.frames),\"messages\":\(counters.messages),\"pings\":\(counters.pings),\"pongs\":\(counters.pongs)}"
    }

    static func seconds(_ value: Double) -> String {
        String((value * 1000).rounded() / 1000)
    }

    /// A JSON array of strings.
    static func strings(_ values: [String]) -> String {
        "[" + values.map(quoted).joined(separator: ",") + "]"
    }

    static func quoted(_ text: String) -> String {
        var out = ""
        AccessRecord.appendQuoted(text, to: &out)
        return out
    }
}
