import Foundation
import Testing

/// Several `sluice` processes sharing one real `redis-server` (`cluster:`): caps and rates that
/// hold across instances under concurrent upgrades, slots an instance killed with SIGKILL gives
/// back by itself, kicks that reach every instance, the cluster view, and Redis stopped,
/// killed and restarted under both failure policies.
@Suite("Cluster through Redis")
struct ClusterTests {
    static let alice = basic("alice", "alice-password")
    static let bob = basic("bob", "bob-password")

    static func basic(_ user: String, _ password: String) -> [String: String] {
        ["Authorization": "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()]
    }

    /// Instances of one cluster, their Redis and their backends.
    final class Cluster: @unchecked Sendable {
        let redis: RedisServer
        let echo: PythonPeer
        let http: PythonPeer
        let directory: String
        var instances: [SluiceProcess] = []

        init(redis: RedisServer? = nil) async throws {
            if let redis {
                self.redis = redis
            } else {
                self.redis = try await RedisServer()
            }
            echo = try await PythonPeer(["backend", "echo"])
            http = try await PythonPeer(["http-backend", "one"])
            directory = try Scratch.directory("sluice-cluster-")
            // SHA-512-crypt: fast to check, so twenty concurrent upgrades wait on Redis, not on hashing.
            try await AuthIntegrationTests.run("/usr/bin/env", ["python3", "-W", "ignore", "-c", """
                import crypt
                with open('\(directory)/users', 'w') as f:
                    for user, password in [('alice', 'alice-password'), ('bob', 'bob-password')]:
                        f.write(user + ':' + crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512)) + '\\n')
                """])
        }

        /// Starts one instance named `gw-<n>`.
        @discardableResult
        func add(policy: String = "allow", timeout: String = "1s", ttl: String = "3s", store: String = "") throws -> SluiceProcess {
            let name = "gw-\(instances.count)"
            let process = try SluiceProcess(yaml: """
                admin: { address: "127.0.0.1:0" }
                listeners:
                  - { name: plain, address: "127.0.0.1:0", http: { versions: [h2, http/1.1] } }
                cluster: { redis: "\(redis.url)", instance_id: \(name), lease_ttl: \(ttl), on_store_failure: \(policy), timeout: \(timeout) \(store) }
                routes:
                  - name: chat
                    match: { path_prefix: /chat }
                    backends: ["ws://127.0.0.1:\(echo.port)"]
                    auth: { methods: [ { basic: { htpasswd: \(directory)/users } } ] }
                    limits: { max_websockets_per_user: 5 }
                  - name: burst
                    match: { path_prefix: /burst }
                    backends: ["ws://127.0.0.1:\(echo.port)"]
                    auth: { methods: [ { basic: { htpasswd: \(directory)/users } } ] }
                    limits: { upgrade_rate_per_user: { rate: 1/h, burst: 3 }, upgrade_rate_per_ip: { rate: 1/h, burst: 5 } }
                  - name: capped
                    match: { path_prefix: /capped }
                    backends: ["ws://127.0.0.1:\(echo.port)"]
                    limits: { max_websockets: 2 }
                  - name: api
                    match: { path_prefix: /api }
                    backends: ["http://127.0.0.1:\(http.port)"]
                    limits: { request_rate_per_ip: { rate: 1/h, burst: 4 } }
                """, waitingFor: ["admin", "plain"])
            instances.append(process)
            return process
        }

        /// `GET /connections?scope=cluster&…` on instance `index`: the whole answer, parsed.
        func view(_ session: PythonSession, on index: Int, _ query: String = "") async throws -> [String: Any] {
            let answer = try await session.send(["op": "http", "url": admin(index, "/connections?scope=cluster" + query)])
            return (try JSONSerialization.jsonObject(with: Data((answer["body"] as? String ?? "{}").utf8)) as? [String: Any]) ?? ["answer": answer]
        }

        func url(_ index: Int, _ path: String) -> String { "ws://127.0.0.1:\(instances[index].ports["plain"]!)\(path)" }
        func admin(_ index: Int, _ path: String) -> String { "http://127.0.0.1:\(instances[index].ports["admin"]!)\(path)" }

        /// Members of a Redis sorted set that have not lapsed.
        func liveLeases(_ key: String) async throws -> Int {
            let time = try await redis.command(["TIME"]).split(separator: "\n").compactMap { Int($0) }
            guard time.count == 2 else { return -1 }
            return Int(try await redis.command(["ZCOUNT", key, "(\(time[0] * 1000 + time[1] / 1000)", "+inf"])) ?? -1
        }

        /// Waits (bounded) until `key` holds `count` live leases; whether it did.
        func leases(_ key: String = "sluice:ws:chat:user:alice", reach count: Int, within timeout: Duration = .seconds(10)) async throws -> Bool {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if try await liveLeases(key) == count { return true }
                try await Task.sleep(for: .milliseconds(50))
            }
            return try await liveLeases(key) == count
        }

        func stop() {
            for instance in instances { instance.stop() }
            echo.stop()
            http.stop()
            redis.stop()
        }
    }

    static func statuses(_ answer: [String: Any]) -> [String: Int] {
        (answer["statuses"] as? [String: Any] ?? [:]).compactMapValues { ($0 as? NSNumber)?.intValue }
    }

    static func openMany(_ session: PythonSession, _ opens: [(id: String, url: String, headers: [String: String])]) async throws -> [String: Any] {
        try await session.send(["op": "open-many", "opens": opens.map { ["id": $0.id, "url": $0.url, "headers": $0.headers] }])
    }

    @Test("three instances, one Redis: 20 concurrent upgrades by a user capped at 5 admit exactly 5; closes give slots back; SIGKILL of an instance frees its slots within the lease TTL")
    func sharedCap() async throws {
        let cluster = try await Cluster()
        defer { cluster.stop() }
        for _ in 0..<3 { try cluster.add() }
        let session = try PythonSession()
        defer { session.stop() }

        let first = try await Self.openMany(session, (0..<20).map { ("a\($0)", cluster.url($0 % 3, "/chat"), Self.alice) })
        let statuses = Self.statuses(first)
        let admitted = statuses.filter { $0.value == 101 }.keys.sorted()
        #expect(admitted.count == 5, "\(first)")
        #expect(statuses.values.filter { $0 == 429 }.count == 15, "\(first)")
        #expect(try await cluster.liveLeases("sluice:ws:chat:user:alice") == 5)
        // Bob's count is his own.
        #expect(try await session.open("b0", cluster.url(1, "/chat"), headers: Self.bob)["status"] as? Int == 101)

        // Two closes: exactly two of five new attempts get in.
        for id in admitted.prefix(2) { _ = try await session.send(["op": "close", "id": id]) }
        #expect(try await cluster.leases(reach: 3))
        let second = try await Self.openMany(session, (0..<5).map { ("c\($0)", cluster.url($0 % 3, "/chat"), Self.alice) })
        #expect(Self.statuses(second).values.filter { $0 == 101 }.count == 2, "\(second)")

        // The instance holding the most of alice's five dies without a word: its slots come
        // back once its leases lapse (3 s), with no one's help.
        let view = try await cluster.view(session, on: 0, "&user=alice")
        let listed = view["connections"] as? [[String: Any]] ?? []
        #expect(listed.count == 5, "\(view)")
        let perInstance = Dictionary(grouping: listed, by: { $0["instance"] as? String ?? "" }).mapValues(\.count)
        let (victimName, held) = try #require(perInstance.max { $0.value < $1.value })
        let victim = Int(victimName.dropFirst(3))!
        cluster.instances[victim].stop()
        let killedAt = ContinuousClock.now
        // Its leases lapse within the TTL (3 s) of its last heartbeat; scheduling slack on top.
        let lapsed = try await cluster.leases(reach: 5 - held, within: .seconds(3 + 5))
        #expect(lapsed, "the slots of the instance killed with \(held) of them did not come back after \(ContinuousClock.now - killedAt)")
        let survivor = (victim + 1) % 3
        let after = try await Self.openMany(session, (0...held).map { ("d\($0)", cluster.url(survivor, "/chat"), Self.alice) })
        let afterStatuses = Self.statuses(after).values
        #expect(afterStatuses.filter { $0 == 101 }.count == held && afterStatuses.filter { $0 == 429 }.count == 1, "\(after)")
    }

    @Test("a kick by user on one instance closes the user's WebSockets on every instance with the given code; a kick by instance and id reaches one; the cluster view lists every instance's")
    func kickEverywhere() async throws {
        let cluster = try await Cluster()
        defer { cluster.stop() }
        for _ in 0..<3 { try cluster.add() }
        let session = try PythonSession()
        defer { session.stop() }
        for index in 0..<3 {
            #expect(try await session.open("alice\(index)", cluster.url(index, "/chat"), headers: Self.alice)["status"] as? Int == 101)
            #expect(try await session.open("bob\(index)", cluster.url(index, "/chat"), headers: Self.bob)["status"] as? Int == 101)
        }
        let body = try await cluster.view(session, on: 2)
        #expect(body["total"] as? Int == 6, "\(body)")
        #expect(body["instances"] as? [String] == ["gw-0", "gw-1", "gw-2"], "\(body)")

        let kick = try await session.send(["op": "http", "url": cluster.admin(0, "/connections?user=alice&code=4001&reason=bye"), "method": "DELETE"])
        #expect(kick["status"] as? Int == 202, "\(kick)")
        #expect((kick["body"] as? String ?? "").contains(#""published":true"#), "\(kick)")
        for index in 0..<3 {
            let closed = try await session.send(["op": "wait-close", "id": "alice\(index)", "timeout": 10])
            #expect(closed["close_code"] as? Int == 4001, "alice on gw-\(index): \(closed)")
            #expect(closed["close_reason"] as? String == "bye")
            let echo = try await session.send(["op": "send", "id": "bob\(index)", "data": "still here"])
            #expect(echo["echo"] as? String == "still here", "bob on gw-\(index): \(echo)")
        }

        // One of bob's, on gw-2, kicked from gw-0 by its id in the cluster view.
        let bobs = try await cluster.view(session, on: 0, "&user=bob")
        let listed = bobs["connections"] as? [[String: Any]] ?? []
        #expect(listed.count == 3, "\(bobs)")
        let onTwo = try #require(listed.first { $0["instance"] as? String == "gw-2" }, "\(listed)")
        let id = try #require(onTwo["id"] as? Int)
        let one = try await session.send(["op": "http", "url": cluster.admin(0, "/connections?instance=gw-2&id=\(id)"), "method": "DELETE"])
        #expect(one["status"] as? Int == 202, "\(one)")
        #expect(try await session.send(["op": "wait-close", "id": "bob2", "timeout": 10])["close_code"] as? Int == 1008)
        #expect(try await session.send(["op": "send", "id": "bob0", "data": "x"])["echo"] as? String == "x")
        // Bad kicks are refused with a reason.
        let bad = try await session.send(["op": "http", "url": cluster.admin(0, "/connections?user=bob&code=1006"), "method": "DELETE"])
        #expect(bad["status"] as? Int == 400, "\(bad)")
    }

    @Test("per-user and per-address upgrade rates and per-address request rates hold across instances")
    func sharedRates() async throws {
        let cluster = try await Cluster()
        defer { cluster.stop() }
        for _ in 0..<3 { try cluster.add() }
        let session = try PythonSession()
        defer { session.stop() }
        // alice: burst 3 per user; then bob from the same address: the address's burst is 5.
        var outcomes: [Int] = []
        for attempt in 0..<6 {
            let answer = try await session.open("r\(attempt)", cluster.url(attempt % 3, "/burst"), headers: Self.alice)
            outcomes.append(answer["status"] as? Int ?? 0)
            if attempt == 3 { #expect((answer["headers"] as? [String: String])?["retry-after"] != nil, "\(answer)") }
        }
        #expect(outcomes == [101, 101, 101, 429, 429, 429])
        var bobs: [Int] = []
        for attempt in 0..<3 {
            bobs.append(try await session.open("s\(attempt)", cluster.url(attempt % 3, "/burst"), headers: Self.bob)["status"] as? Int ?? 0)
        }
        #expect(bobs == [101, 101, 429])
        var requests: [Int] = []
        for attempt in 0..<6 {
            let port = cluster.instances[attempt % 3].ports["plain"]!
            requests.append(try await session.send(["op": "http", "url": "http://127.0.0.1:\(port)/api/x"])["status"] as? Int ?? 0)
        }
        #expect(requests == [200, 200, 200, 200, 429, 429])
    }

    @Test("Redis stopped mid-run: allow admits on local limits, deny answers 503, both within the call timeout; Redis killed and restarted: the leases reconcile")
    func storeFailure() async throws {
        let cluster = try await Cluster()
        defer { cluster.stop() }
        let allowing = try cluster.add(policy: "allow", timeout: "200ms")
        try cluster.add(policy: "deny", timeout: "200ms")
        let session = try PythonSession()
        defer { session.stop() }
        #expect(try await session.open("before", cluster.url(0, "/chat"), headers: Self.alice)["status"] as? Int == 101)

        cluster.redis.pause()
        let during = try await Self.openMany(session, [
            ("allowed", cluster.url(0, "/chat"), Self.alice), ("denied", cluster.url(1, "/chat"), Self.alice),
        ])
        #expect(Self.statuses(during) == ["allowed": 101, "denied": 503], "\(during)")
        let seconds = (during["seconds"] as? [String: Double]) ?? [:]
        #expect(seconds.values.allSatisfy { $0 < 5 }, "upgrades waited \(seconds)")
        // Plain requests stay bounded too, and a public page without cluster limits is served.
        let port = cluster.instances[1].ports["plain"]!
        let api = try await session.send(["op": "http", "url": "http://127.0.0.1:\(port)/api/x"])
        #expect(api["status"] as? Int == 503, "\(api)")
        let allowMetrics = try await session.metrics(cluster.admin(0, "/metrics"))
        #expect(allowMetrics.value("sluice_cluster_store_errors_total", ["operation": "admit"]) >= 1)
        #expect(allowMetrics.value("sluice_cluster_store_failure_decisions_total", ["policy": "allow"]) >= 1)
        let denyMetrics = try await session.metrics(cluster.admin(1, "/metrics"))
        #expect(denyMetrics.value("sluice_cluster_store_failure_decisions_total", ["policy": "deny"]) >= 2)
        // A close while Redis is stopped is made good later.
        _ = try await session.send(["op": "close", "id": "before"])
        cluster.redis.resume()
        // Back: the connection admitted without Redis is counted, the one closed is not.
        #expect(try await cluster.leases(reach: 1), "the leases did not reconcile after Redis came back")

        // Killed and started again empty: the instance puts its lease back.
        cluster.redis.stop()
        try await Task.sleep(for: .milliseconds(300))
        try await cluster.redis.start(port: cluster.redis.port)
        #expect(try await cluster.leases(reach: 1, within: .seconds(15)), "the lease was not restored after Redis restarted empty")
        #expect(try await session.send(["op": "send", "id": "allowed", "data": "alive"])["echo"] as? String == "alive")
        _ = try await session.send(["op": "close", "id": "allowed"])
        #expect(try await cluster.leases(reach: 0))
        #expect(!allowing.hasExited)
    }

    @Test("rediss:// verified against a CA file, with the password from a file; a wrong password leaves the store down and on_store_failure decides")
    func tlsAndPassword() async throws {
        let directory = try Scratch.directory("sluice-redis-tls-")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try TestCertificateAuthority.write(serverName: "localhost", in: directory)
        try "s3cret-redis-password\n".write(toFile: "\(directory)/redis-password", atomically: true, encoding: .utf8)
        try "not-the-password\n".write(toFile: "\(directory)/wrong-password", atomically: true, encoding: .utf8)
        let redis = try await RedisServer(password: "s3cret-redis-password", tlsDirectory: directory)
        let cluster = try await Cluster(redis: redis)
        defer { cluster.stop() }
        try cluster.add(store: ", ca_file: \(directory)/ca.pem, password_file: \(directory)/redis-password")
        let refused = try cluster.add(policy: "deny", timeout: "200ms", store: ", ca_file: \(directory)/ca.pem, password_file: \(directory)/wrong-password")
        let session = try PythonSession()
        defer { session.stop() }
        var opened: Int?
        for attempt in 0..<50 where opened != 101 {
            // The first upgrades may come before the TLS connection is up (allow: admitted, then reconciled).
            opened = try await session.open("a\(attempt)", cluster.url(0, "/chat"), headers: Self.alice)["status"] as? Int
            if opened != 101 { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(opened == 101)
        #expect(try await cluster.leases(reach: 1), "the lease did not reach Redis over TLS")
        #expect(await refused.logged("WRONGPASS"), "the refused password is not logged")
        #expect(try await session.open("b", cluster.url(1, "/chat"), headers: Self.bob)["status"] as? Int == 503)
        let metrics = try await session.metrics(cluster.admin(1, "/metrics"))
        #expect(metrics.value("sluice_cluster_store_up") == 0)
        #expect(metrics.value("sluice_cluster_store_failure_decisions_total", ["policy": "deny"]) == 1)
    }

    @Test("the heartbeat renews every lease in batches: 1,500 leases held by one instance are all renewed, and lapse once it is gone", .loadTest)
    func batchedHeartbeat() async throws {
        let cluster = try await Cluster()
        defer { cluster.stop() }
        let instance = try cluster.add()
        // Once the instance has made its first contact (a reconciliation, which would drop
        // leases it does not know), its index gets 1,500 leases as if it had admitted them.
        var joined = false
        for _ in 0..<100 where !joined {
            joined = try await cluster.redis.command(["ZSCORE", "sluice:instances", "gw-0"]) != ""
            if !joined { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(joined)
        let script = #"for i = 1, 1500 do redis.call('HSET', 'sluice:leases:gw-0', 'gw-0/x' .. i, '{"k":["sluice:ws:batch"]}') end return 1"#
        #expect(try await cluster.redis.command(["EVAL", script, "0"]) == "1")
        // Within a heartbeat (a third of the 3 s TTL), every one counts in the route's set.
        #expect(try await cluster.leases("sluice:ws:batch", reach: 1500, within: .seconds(5)))
        let session = try PythonSession()
        defer { session.stop() }
        let metrics = try await session.metrics(cluster.admin(0, "/metrics"))
        #expect(metrics.value("sluice_cluster_store_calls_total", ["operation": "heartbeat"]) >= 3, "1,500 leases take several batches of 200 (a hash of up to 512 is read in one)")
        instance.stop()
        #expect(try await cluster.leases("sluice:ws:batch", reach: 0, within: .seconds(3 + 5)))
    }

    @Test("one admission path in the cluster too: WebSockets over HTTP/2 (RFC 8441) count against a cluster-wide cap beside HTTP/1.1 ones")
    func http2() async throws {
        let cluster = try await Cluster()
        defer { cluster.stop() }
        for _ in 0..<2 { try cluster.add() }
        let session = try PythonSession()
        defer { session.stop() }
        #expect(try await session.open("h1", cluster.url(0, "/capped"), headers: [:])["status"] as? Int == 101)
        // Three streams on one h2c connection to the other instance: one place is left.
        let json = #"{"path": "/capped", "streams": 3, "messages": 1, "tls": false}"#
        let many = try await PythonPeer.run(["ws-many", "127.0.0.1", "\(cluster.instances[1].ports["plain"]!)", json], script: HTTP2Tests.peer, timeout: 60)
        #expect((many["statuses"] as? [Int])?.sorted() == [200, 503, 503], "\(many)")
        #expect(try await cluster.leases("sluice:ws:capped", reach: 1), "the h2 WebSocket's lease was not given back when it closed")
    }
}
