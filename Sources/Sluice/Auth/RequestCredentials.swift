import NIOHTTP1

/// Cookies by name from `Cookie` headers (RFC 6265 §5.4: `name=value` pairs split by `;`).
enum CookieHeader {
    static func value(named name: String, in headers: HTTPHeaders) -> String? {
        for header in headers[canonicalForm: "cookie"] {
            for pair in header.split(separator: ";") {
                let trimmed = pair.drop { $0 == " " }
                guard let equals = trimmed.firstIndex(of: "="), trimmed[..<equals] == name[...] else { continue }
                var value = trimmed[trimmed.index(after: equals)...]
                if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 { value = value.dropFirst().dropLast() }
                return String(value)
            }
        }
        return nil
    }
}

/// Query strings: reading a parameter, and removing one (a token) before the backend sees it.
enum QueryString {
    static func value(of name: String, in query: String) -> String? {
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if AdminAPI.percentDecode(String(parts[0])) == name { return parts.count > 1 ? AdminAPI.percentDecode(String(parts[1])) : "" }
        }
        return nil
    }

    /// `target` (path and query) without any `name=` parameter.
    static func removing(_ name: String, from target: String) -> String {
        guard let question = target.firstIndex(of: "?") else { return target }
        let path = target[..<question]
        let kept = target[target.index(after: question)...].split(separator: "&", omittingEmptySubsequences: false).filter { pair in
            let key = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            return AdminAPI.percentDecode(key) != name
        }
        return kept.isEmpty ? String(path) : "\(path)?\(kept.joined(separator: "&"))"
    }
}
