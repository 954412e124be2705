import SluiceConfig

/// Picks the route for a request by host, then by the longest path prefix.
///
/// Hosts are tried from the most specific tier to the least: the exact host, then wildcard
/// patterns from the longest suffix down, then routes without a host. The first tier with a
/// matching prefix wins, and within it the longest prefix on a segment boundary (`/ws` matches
/// `/ws` and `/ws/x`, never `/wsx`). Built once per listener and configuration; lookups allocate
/// nothing but the lower-cased host.
public struct Router: Sendable {
    struct Entry: Sendable {
        let prefix: String
        /// Position in `routes`.
        let index: Int
    }

    /// The routes as given (some may be scoped to other listeners): entries point into it.
    private let routes: [RouteConfiguration]
    private var exact: [String: [Entry]] = [:]
    private var wildcards: [(suffix: String, entries: [Entry])] = []
    private var anyHost: [Entry] = []

    /// Builds the table for `listener`; routes scoped to other listeners are left out.
    public init(routes: [RouteConfiguration], listener: String) {
        var wildcardTable: [String: [Entry]] = [:]
        self.routes = routes
        for (index, route) in routes.enumerated() where route.listeners.isEmpty || route.listeners.contains(listener) {
            let entry = Entry(prefix: route.match.pathPrefix, index: index)
            switch route.match.host {
            case nil:
                anyHost.append(entry)
            case let host? where host.hasPrefix("*."):
                wildcardTable[String(host.dropFirst(1)), default: []].append(entry)
            case let host?:
                exact[host, default: []].append(entry)
            }
        }
        let byLongestPrefix: (Entry, Entry) -> Bool = { $0.prefix.utf8.count > $1.prefix.utf8.count }
        exact = exact.mapValues { $0.sorted(by: byLongestPrefix) }
        anyHost.sort(by: byLongestPrefix)
        wildcards = wildcardTable
            .map { (suffix: $0.key, entries: $0.value.sorted(by: byLongestPrefix)) }
            .sorted { $0.suffix.utf8.count > $1.suffix.utf8.count }
    }

    /// The route for `host` (a `Host` header value, port allowed) and a normalised `path`.
    public func route(host: String?, path: String) -> RouteConfiguration? {
        index(host: host, path: path).map { routes[$0] }
    }

    /// Where in the routes the router was built from the route for `host` and `path` is. Without host-scoped routes the host is not even read.
    func index(host: String?, path: String) -> Int? {
        if let host, !exact.isEmpty || !wildcards.isEmpty {
            let name = Self.hostName(from: host)
            if let entries = exact[name], let entry = Self.longestPrefix(entries, path) { return entry.index }
            for wildcard in wildcards where name.hasSuffix(wildcard.suffix) && name.utf8.count > wildcard.suffix.utf8.count {
                if let entry = Self.longestPrefix(wildcard.entries, path) { return entry.index }
            }
        }
        return Self.longestPrefix(anyHost, path)?.index
    }

    /// Lower-cased host without port; bracketed IPv6 literals lose their brackets.
    static func hostName(from header: String) -> String {
        var value = Substring(header)
        if value.hasPrefix("[") {
            if let close = value.firstIndex(of: "]") { value = value[value.index(after: value.startIndex)..<close] }
        } else if let colon = value.lastIndex(of: ":") {
            value = value[..<colon]
        }
        if value.hasSuffix(".") { value = value.dropLast() }
        return value.lowercased()
    }

    private static func longestPrefix(_ entries: [Entry], _ path: String) -> Entry? {
        entries.first { matches(prefix: $0.prefix, path: path) }
    }

    /// Segment-boundary prefix match.
    static func matches(prefix: String, path: String) -> Bool {
        if prefix.utf8.count == 1 && prefix.utf8.first == UInt8(ascii: "/") { return true }
        guard path.utf8.starts(with: prefix.utf8) else { return false }
        let rest = path.utf8.dropFirst(prefix.utf8.count)
        return rest.isEmpty || rest.first == UInt8(ascii: "/")
    }
}
