import Foundation
import NIOCore

/// The admin endpoints that reach beyond one connection: kicks by user (on every instance of a
/// cluster) and the cluster-wide view of live WebSockets.
extension AdminAPI {
    /// `DELETE /connections?user=alice[&code=4000][&reason=…]` closes the user's WebSockets here
    /// and, in a cluster, on every instance; `DELETE /connections?instance=gw-b&id=17` closes one
    /// connection wherever it is. The close code defaults to 1008.
    func kick(_ query: [String: String], on eventLoop: any EventLoop) -> EventLoopFuture<Response> {
        func bad(_ message: String) -> EventLoopFuture<Response> {
            eventLoop.makeSucceededFuture(.json(.badRequest, #"{"error":\#(ConnectionJSON.quoted(message))}"#))
        }
        let known: Set<String> = ["user", "instance", "id", "code", "reason"]
        if let unknown = query.keys.first(where: { !known.contains($0) }) { return bad("unknown parameter '\(unknown)'; known: \(known.sorted().joined(separator: ", "))") }
        var code = CloseCode.policyViolation
        if let text = query["code"] {
            guard let value = UInt16(text), CloseCode.isSendable(value) else { return bad("code must be a close code a peer may send: 1000-1003, 1007-1014 or 3000-4999") }
            code = value
        }
        let reason = query["reason"] ?? "closed by operator"
        guard reason.utf8.count <= 120 else { return bad("reason is at most 120 bytes (a close frame's payload is 125)") }
        let cluster = gateway.services.cluster
        let here = cluster?.configuration.instanceID
        let registry = gateway.registry
        if let user = query["user"] {
            guard query["id"] == nil, query["instance"] == nil else { return bad("give either user, or instance and id") }
            let ids = registry.ids { $0.user == user }
            for id in ids { _ = registry.close(id: id, clientCode: code, backendCode: CloseCode.goingAway, reason: reason) }
            return published(cluster?.publishKick(user: user, instance: nil, id: nil, code: code, reason: reason), closingHere: ids.count, on: eventLoop)
        }
        guard let idText = query["id"], let id = UInt64(idText) else { return bad("give user=…, or id=… (with instance=… in a cluster)") }
        let instance = query["instance"] ?? here
        if instance == nil || instance == here {
            let closed = registry.close(id: id, clientCode: code, backendCode: CloseCode.goingAway, reason: reason)
            return eventLoop.makeSucceededFuture(closed ? .json(.accepted, #"{"closing_here":1}"#) : .json(.notFound, #"{"error":"no such connection"}"#))
        }
        guard let cluster else { return bad("instance names another instance, but this one is not in a cluster") }
        return published(cluster.publishKick(user: nil, instance: instance, id: id, code: code, reason: reason), closingHere: 0, on: eventLoop)
    }

    private func published(_ publish: EventLoopFuture<Int>?, closingHere: Int, on eventLoop: any EventLoop) -> EventLoopFuture<Response> {
        guard let publish else { return eventLoop.makeSucceededFuture(.json(.accepted, #"{"closing_here":\#(closingHere)}"#)) }
        return publish.hop(to: eventLoop).map { heard in
            .json(.accepted, #"{"closing_here":\#(closingHere),"published":true,"instances_told":\#(heard)}"#)
        }.recover { error in
            .json(.serviceUnavailable, #"{"closing_here":\#(closingHere),"published":false,"error":\#(ConnectionJSON.quoted("\(error)"))}"#)
        }
    }

    /// `GET /connections?scope=cluster`: every live instance's WebSockets as admitted (route,
    /// user, client, listener, start), filtered by route, user and client.
    func clusterView(_ filter: ConnectionQuery, on eventLoop: any EventLoop) -> EventLoopFuture<Response> {
        guard let cluster = gateway.services.cluster else {
            return eventLoop.makeSucceededFuture(.json(.badRequest, #"{"error":"this instance is not in a cluster (no cluster: block)"}"#))
        }
        return cluster.view().hop(to: eventLoop).map { records in
            var matching: [(instance: String, id: Int64, text: String)] = []
            var instances = Set<String>()
            for record in records {
                guard var object = try? JSONSerialization.jsonObject(with: Data(record.utf8)) as? [String: Any],
                    let instance = object["instance"] as? String, let id = (object["id"] as? NSNumber)?.int64Value
                else { continue }
                instances.insert(instance)
                if let route = filter.route, object["route"] as? String != route { continue }
                if let user = filter.user, object["user"] as? String != user { continue }
                if let client = filter.client, object["client"] as? String != client { continue }
                // The record less the keys it counts in: what an operator reads.
                object.removeValue(forKey: "k")
                guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { continue }
                matching.append((instance, id, String(decoding: data, as: UTF8.self)))
            }
            matching.sort { ($0.instance, $0.id) < ($1.instance, $1.id) }
            let shown = matching.prefix(filter.limit).map(\.text).joined(separator: ",")
            return .json(.ok, #"{"scope":"cluster","instances":\#(ConnectionJSON.strings(instances.sorted())),"total":\#(matching.count),"connections":[\#(shown)]}"#)
        }.recover { error in
            .json(.serviceUnavailable, #"{"error":\#(ConnectionJSON.quoted("the cluster view is unavailable: \(error)"))}"#)
        }
    }
}
