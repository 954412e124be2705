/// A request target reduced to the form routes are matched against.
///
/// Normalisation happens once, before matching, so `/public/../admin`, `/public/%2e%2e/admin` and
/// `//admin` all reach the route for `/admin` and cannot slip past its policy. The normalised
/// path is also what the backend receives.
public struct RequestPath: Sendable, Equatable {
    /// Normalised path: starts with `/`, no dot segments, no empty segments, unreserved characters
    /// decoded, other percent escapes upper-cased and kept.
    public var path: String
    /// The query string without `?`, as received; `nil` when absent.
    public var query: String?

    /// The target as received, when it is `path?query` exactly (kept so that `target` makes
    /// no string); nil when normalisation changed it.
    private var received: String?

    public init(path: String, query: String?) {
        self.path = path
        self.query = query
    }

    private init(path: String, query: String?, received: String) {
        self.path = path
        self.query = query
        self.received = received
    }

    /// The target to send upstream.
    public var target: String { received ?? query.map { "\(path)?\($0)" } ?? path }

    public static func == (a: RequestPath, b: RequestPath) -> Bool { a.path == b.path && a.query == b.query }

    /// Why a request target cannot be routed.
    public enum Problem: Error, Sendable, Equatable {
        case notOriginForm
        case badPercentEncoding
    }

    /// The authority of an absolute-form target (`http://h:8080/a` → `h:8080`), which stands
    /// for the request's host in place of its `Host` field (RFC 9112 §3.2.2); nil for any
    /// other form. Only the first byte is looked at for the usual origin-form.
    public static func authority(of uri: String) -> String? {
        absoluteForm(Substring(uri)).map { String($0.authority) }
    }

    /// An absolute-form target with a web scheme, split after its authority; nil for any other
    /// form or scheme (which `parse` then refuses as not origin-form).
    private static func absoluteForm(_ target: Substring) -> (authority: Substring, rest: Substring)? {
        guard target.utf8.first != UInt8(ascii: "/"), let schemeEnd = target.range(of: "://") else { return nil }
        let scheme = target[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "http" || scheme == "https" || scheme == "ws" || scheme == "wss" else { return nil }
        let afterScheme = target[schemeEnd.upperBound...]
        let end = afterScheme.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? afterScheme.endIndex
        return (afterScheme[..<end], afterScheme[end...])
    }

    /// Parses and normalises an origin-form (`/a/b?q`) or absolute-form (`http://h/a`) target.
    public static func parse(_ uri: String) throws(Problem) -> RequestPath {
        if let simple = simpleOriginForm(uri) { return simple }
        var target = Substring(uri)
        if let (_, rest) = absoluteForm(target) {
            target = rest.hasPrefix("/") ? rest : Substring("/" + rest)
        }
        guard target.utf8.first == UInt8(ascii: "/") else { throw .notOriginForm }
        if let hash = target.utf8.firstIndex(of: UInt8(ascii: "#")) { target = target[..<hash] }
        var query: String?
        var rawPath = target
        if let mark = target.utf8.firstIndex(of: UInt8(ascii: "?")) {
            rawPath = target[..<mark]
            query = String(target[target.utf8.index(after: mark)...])
        }
        let decoded = try decodeUnreserved(rawPath)
        return RequestPath(path: removeDotSegments(decoded), query: query)
    }

    /// Most targets, in one scan of their bytes: origin-form, no fragment, no escape in the
    /// path, the path already normalised. Nil for anything else (`parse` does the rest).
    private static func simpleOriginForm(_ uri: String) -> RequestPath? {
        HTTPSyntax.withBytes(of: uri) { bytes in
            guard bytes.first == UInt8(ascii: "/") else { return nil }
            var pathEnd = bytes.count
            for index in bytes.indices {
                switch bytes[index] {
                case UInt8(ascii: "#"): return nil
                case UInt8(ascii: "%") where pathEnd == bytes.count: return nil
                case UInt8(ascii: "?") where pathEnd == bytes.count: pathEnd = index
                default: break
                }
            }
            let path = UnsafeBufferPointer(rebasing: bytes[..<pathEnd])
            guard isNormalised(path) else { return nil }
            guard pathEnd < bytes.count else { return RequestPath(path: uri, query: nil, received: uri) }
            // Made from the bytes already in hand (valid UTF-8: they are a `String`'s), where
            // slicing `uri` by its indices cost as much again as the scan.
            let query = UnsafeBufferPointer(rebasing: bytes[(pathEnd + 1)...])
            return RequestPath(path: String(decoding: path, as: UTF8.self), query: String(decoding: query, as: UTF8.self), received: uri)
        }
    }

    /// Decodes `%XX` escapes of unreserved characters (RFC 3986 §2.3) and upper-cases the rest.
    static func decodeUnreserved(_ path: Substring) throws(Problem) -> String {
        guard path.utf8.contains(UInt8(ascii: "%")) else { return String(path) }
        var bytes = Array(path.utf8)
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "%") {
                guard index + 2 < bytes.count, let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) else {
                    throw .badPercentEncoding
                }
                let value = high << 4 | low
                if isUnreserved(value) {
                    output.append(value)
                } else {
                    output.append(contentsOf: [UInt8(ascii: "%"), hexDigit(high), hexDigit(low)])
                }
                index += 3
            } else {
                output.append(byte)
                index += 1
            }
        }
        bytes = output
        return String(decoding: bytes, as: UTF8.self)
    }

    /// RFC 3986 §5.2.4, with empty segments merged (`//a` is `/a`), as nginx's `merge_slashes`.
    static func removeDotSegments(_ path: String) -> String {
        isNormalised(path) ? path : mergingSegments(path)
    }

    /// `removeDotSegments` done segment by segment.
    static func mergingSegments(_ path: String) -> String {
        var segments: [Substring] = []
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        for part in parts {
            switch part {
            case ".": continue
            case "..": if !segments.isEmpty { segments.removeLast() }
            default: segments.append(part)
            }
        }
        var result = "/" + segments.joined(separator: "/")
        let endsWithSlash = path.hasSuffix("/") || path.hasSuffix("/.") || path.hasSuffix("/..")
        if endsWithSlash && !segments.isEmpty { result += "/" }
        return result
    }

    /// Starts with `/` and has no empty, `.` or `..` segment: most paths, returned as they are.
    static func isNormalised(_ path: String) -> Bool {
        HTTPSyntax.withBytes(of: path) { isNormalised($0) }
    }

    private static func isNormalised(_ path: UnsafeBufferPointer<UInt8>) -> Bool {
        var bytes = path.makeIterator()
        guard bytes.next() == UInt8(ascii: "/") else { return false }
        var segmentLength = 0
        var segmentDots = 0
        var ended = false
        while !ended {
            let byte = bytes.next()
            ended = byte == nil
            if byte == nil || byte == UInt8(ascii: "/") {
                // An empty segment is only allowed as the whole path ("/") or after a final "/".
                if segmentLength == 0 && !ended { return false }
                if segmentLength > 0 && segmentLength == segmentDots && segmentDots <= 2 { return false }
                segmentLength = 0
                segmentDots = 0
            } else {
                segmentLength += 1
                if byte == UInt8(ascii: ".") { segmentDots += 1 }
            }
        }
        return true
    }

    private static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "A") + value - 10
    }
}
