import SluiceConfig

/// The path a backend sees: the route's prefix kept, stripped (`strip_prefix`) or replaced
/// (`rewrite_prefix`). The prefix always matched on a segment boundary, so what follows it is
/// empty or starts with `/` or `?`.
enum PathPrefix {
    static func rewrite(_ target: String, matched prefix: String, settings: HTTPProxySettings) -> String {
        guard settings.stripPrefix || settings.rewritePrefix != nil, prefix != "/", target.hasPrefix(prefix) else { return target }
        let rest = target.dropFirst(prefix.count)
        var base = settings.rewritePrefix ?? ""
        while base.hasSuffix("/") { base.removeLast() }
        let joined = base + rest
        if joined.isEmpty || joined.hasPrefix("?") { return "/" + joined }
        return joined
    }
}
