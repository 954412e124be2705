import NIOCore
import NIOHTTP1
import SluiceConfig

/// A request being answered, for its access-log line (HTTP/1 and HTTP/2 alike).
struct RequestRecord {
    var method: String
    /// The request target as it came; logged without its query string.
    var uri: String
    /// The path without its query string, which may carry credentials.
    var path: String { String(pathSlice) }
    /// The same, as a slice of `uri` (the access log copies it from there).
    var pathSlice: Substring {
        uri.utf8.firstIndex(of: UInt8(ascii: "?")).map { uri[..<$0] } ?? uri[...]
    }
    var route: String?
    var client: IPAddress?
    var user: String?
    /// Read only when there is an access log to write it to.
    var userAgent: String?
    var startedAt: NIODeadline
    /// Why it was refused (a result label, or the limit's name).
    var rejection: String?
    /// `HTTP/2` for a request over HTTP/2; HTTP/1 lines leave it out.
    var version: String?

    /// Writes the access-log line, if there is an access log.
    func write(to accessLog: AccessLog, listener: String, status: HTTPResponseStatus, bytes: Int) {
        guard accessLog.isEnabled else { return }
        var record = AccessRecord(type: "http")
        record.set("listener", listener)
        record.set("route", route)
        record.set("client", client?.description)
        record.set("user", user)
        record.set("method", method)
        record.set("path", pathSlice)
        record.set("status", status.code)
        record.set("bytes_sent", bytes)
        record.set("duration_ms", Double((NIODeadline.now() - startedAt).nanoseconds / 1000) / 1000)
        record.set("user_agent", userAgent)
        if let version { record.set("protocol", version) }
        if let rejection { record.set("rejection", rejection) }
        accessLog.write(record)
    }
}
