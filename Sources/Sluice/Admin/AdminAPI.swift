import NIOCore
import NIOHTTP1
import Foundation
import SluiceConfig

/// The admin endpoints as plain request → response functions, apart from the socket handling.
struct AdminAPI: Sendable {
    struct Response {
        var status: HTTPResponseStatus
        var contentType = "application/json"
        var headers: [(String, String)] = []
        var body: [UInt8]

        static func json(_ status: HTTPResponseStatus, _ text: String) -> Response {
            Response(status: status, body: Array((text + "\n").utf8))
        }

        static func text(_ status: HTTPResponseStatus, _ text: String) -> Response {
            Response(status: status, contentType: "text/plain; charset=utf-8", body: Array((text + "\n").utf8))
        }
    }

    let gateway: Gateway
    /// Bearer token for everything but the probes; `nil` = open (the listener is loopback).
    /// Read from the gateway at each request, so a reload can rotate it.
    var token: String? { gateway.adminToken }

    func answer(_ head: HTTPRequestHead, on eventLoop: any EventLoop) -> EventLoopFuture<Response> {
        let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(parts.first ?? "")
        let query = Self.parseQuery(parts.count > 1 ? String(parts[1]) : "")
        let segments = path.split(separator: "/").map(String.init)
        let isRead = head.method == .GET || head.method == .HEAD

        switch segments.first {
        case nil,
            "dashboard" where segments.count == 1:
            // The page holds no data; what it fetches needs the token.
            guard isRead else { return eventLoop.makeSucceededFuture(methodNotAllowed("GET, HEAD")) }
            var page = Response(status: .ok, contentType: "text/html; charset=utf-8", body: Array(DashboardPage.html.utf8))
            page.headers = [("Cache-Control", "no-store"), ("X-Frame-Options", "DENY")]
            return eventLoop.makeSucceededFuture(page)
        case "healthz" where segments.count == 1:
            guard isRead else { return eventLoop.makeSucceededFuture(methodNotAllowed("GET, HEAD")) }
            return eventLoop.makeSucceededFuture(.text(.ok, "ok"))
        case "readyz" where segments.count == 1:
            guard isRead else { return eventLoop.makeSucceededFuture(methodNotAllowed("GET, HEAD")) }
            let phase = gateway.phase
            let body = #"{"status":"\#(phase)","config_version":"\#(gateway.configurationVersion)"}"#
            return eventLoop.makeSucceededFuture(.json(phase == .ready ? .ok : .serviceUnavailable, body))
        case "metrics" where segments.count == 1,
            "connections",
            "reload" where segments.count == 1,
            "drain" where segments.count == 1,
            "backends" where segments.count == 1 || segments.count == 4,
            "overview" where segments.count == 1:
            if let refusal = authorize(head) { return eventLoop.makeSucceededFuture(refusal) }
        default:
            return eventLoop.makeSucceededFuture(.text(.notFound, "not found; try / (the dashboard), /overview, /metrics, /connections, /backends, /reload, /drain, /healthz or /readyz"))
        }

        if segments == ["overview"] {
            guard isRead else { return eventLoop.makeSucceededFuture(methodNotAllowed("GET, HEAD")) }
            return eventLoop.makeSucceededFuture(.json(.ok, gateway.overviewJSON()))
        }
        if segments.first == "backends" {
            return eventLoop.makeSucceededFuture(backends(head, segments: segments, query: query, isRead: isRead))
        }

        if segments == ["reload"] {
            guard head.method == .POST else { return eventLoop.makeSucceededFuture(methodNotAllowed("POST")) }
            let promise = eventLoop.makePromise(of: Response.self)
            let gateway = self.gateway
            promise.completeWithTask {
                switch await gateway.reloadFromFile() {
                case .success(let report):
                    return .json(.ok, #"{"reloaded":true,"config_version":"\#(report.version)","listeners_added":\#(ConnectionJSON.strings(report.added)),"listeners_removed":\#(ConnectionJSON.strings(report.removed))}"#)
                case .failure(let failure):
                    return .json(.unprocessableEntity, #"{"reloaded":false,"config_version":"\#(gateway.configurationVersion)","errors":\#(ConnectionJSON.strings(failure.errors.map(\.description)))}"#)
                }
            }
            return promise.futureResult
        }
        if segments == ["drain"] {
            guard head.method == .POST else { return eventLoop.makeSucceededFuture(methodNotAllowed("POST")) }
            let code = query["code"].map { UInt16($0) } ?? CloseCode.goingAway
            guard let code, code == CloseCode.goingAway || code == CloseCode.serviceRestart else {
                return eventLoop.makeSucceededFuture(.json(.badRequest, #"{"error":"code is 1001 (going away) or 1012 (service restart)"}"#))
            }
            gateway.requestDrain(code: code)
            return eventLoop.makeSucceededFuture(.json(.accepted, #"{"draining":true,"close_code":\#(code)}"#))
        }

        if segments == ["metrics"] {
            guard isRead else { return eventLoop.makeSucceededFuture(methodNotAllowed("GET, HEAD")) }
            // Live connections add their traffic to the route counters first, so the counters
            // are current to this moment, not to the last close.
            let metrics = gateway.metrics
            gateway.updateLimitMetrics()
            return gateway.registry.snapshots(on: eventLoop).map { _ in
                Response(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.render())
            }
        }
        if segments.count == 1, head.method == .DELETE {
            return kick(query, on: eventLoop)
        }
        if segments.count == 1 {
            guard isRead else { return eventLoop.makeSucceededFuture(methodNotAllowed("GET, HEAD, DELETE")) }
            let filter: ConnectionQuery
            do {
                filter = try ConnectionQuery(query)
            } catch {
                return eventLoop.makeSucceededFuture(.json(.badRequest, #"{"error":\#(ConnectionJSON.quoted(error.message))}"#))
            }
            if filter.clusterWide { return clusterView(filter, on: eventLoop) }
            return gateway.registry.snapshots(on: eventLoop).map { snapshots in
                let (selected, total) = filter.apply(snapshots)
                return .json(.ok, ConnectionJSON.list(selected, matching: total))
            }
        }
        guard segments.count == 2, let id = UInt64(segments[1]) else {
            return eventLoop.makeSucceededFuture(.json(.notFound, #"{"error":"no such connection"}"#))
        }
        switch head.method {
        case .GET, .HEAD:
            return gateway.registry.snapshots(ids: [id], on: eventLoop).map { snapshots in
                guard let snapshot = snapshots.first else { return .json(.notFound, #"{"error":"no such connection"}"#) }
                return .json(.ok, ConnectionJSON.object(snapshot))
            }
        case .DELETE:
            let closed = gateway.registry.close(
                id: id, clientCode: CloseCode.policyViolation, backendCode: CloseCode.goingAway, reason: "closed by operator"
            )
            return eventLoop.makeSucceededFuture(
                closed ? .json(.accepted, #"{"closing":\#(id)}"#) : .json(.notFound, #"{"error":"no such connection"}"#)
            )
        default:
            return eventLoop.makeSucceededFuture(methodNotAllowed("GET, HEAD, DELETE"))
        }
    }

    /// `GET /backends`; `POST /backends/{route}/{backend}/drain[?window=30s]` and `…/enable`.
    private func backends(_ head: HTTPRequestHead, segments: [String], query: [String: String], isRead: Bool) -> Response {
        if segments.count == 1 {
            guard isRead else { return methodNotAllowed("GET, HEAD") }
            return .json(.ok, gateway.backendsJSON())
        }
        guard head.method == .POST else { return methodNotAllowed("POST") }
        let route = segments[1].removingPercentEncoding ?? segments[1]
        let name = segments[2].removingPercentEncoding ?? segments[2]
        let refused = { (error: Gateway.BackendCommandError) in
            Response.json(HTTPResponseStatus(statusCode: error.status), #"{"error":\#(ConnectionJSON.quoted(error.message))}"#)
        }
        switch segments[3] {
        case "drain":
            var window: Duration?
            if let text = query["window"] {
                guard let value = ValueParsing.duration(text), value >= .zero, value <= .seconds(3600) else {
                    return .json(.badRequest, #"{"error":"window is a duration up to 1h, such as 30s"}"#)
                }
                window = value
            }
            switch gateway.drainBackend(route: route, named: name, window: window) {
            case .success(let count): return .json(.accepted, #"{"draining":true,"websockets":\#(count)}"#)
            case .failure(let error): return refused(error)
            }
        case "enable":
            switch gateway.enableBackend(route: route, named: name) {
            case .success: return .json(.ok, #"{"enabled":true}"#)
            case .failure(let error): return refused(error)
            }
        default:
            return .json(.notFound, #"{"error":"try /backends/{route}/{backend}/drain or /enable"}"#)
        }
    }

    private func methodNotAllowed(_ allow: String) -> Response {
        var response = Response.text(.methodNotAllowed, "method not allowed")
        response.headers = [("Allow", allow)]
        return response
    }

    /// `nil` when the request may proceed.
    private func authorize(_ head: HTTPRequestHead) -> Response? {
        guard let token else { return nil }
        let presented = head.headers.first(name: "authorization").flatMap { value -> String? in
            let parts = value.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
            return parts[1].trimmingSpacesAndTabs()
        }
        if let presented, ConstantTime.equal(Array(presented.utf8), Array(token.utf8)) { return nil }
        var response = Response.text(.unauthorized, "a bearer token is required")
        response.headers = [("WWW-Authenticate", #"Bearer realm="sluice-admin""#)]
        return response
    }

    static func parseQuery(_ query: String) -> [String: String] {
        var result: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = Self.percentDecode(String(parts[0]))
            result[key] = parts.count > 1 ? Self.percentDecode(String(parts[1])) : ""
        }
        return result
    }

    static func percentDecode(_ text: String) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
            } else if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Comparison of secrets whose time does not depend on where they differ.
enum ConstantTime {
    static func equal(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: lhs.count ^ rhs.count)
        let count = max(lhs.count, rhs.count)
        for index in 0..<count {
            let left = index < lhs.count ? lhs[index] : 0
            let right = index < rhs.count ? rhs[index] : 0
            difference |= left ^ right
        }
        return difference == 0 && lhs.count == rhs.count
    }
}
