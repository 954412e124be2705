import Foundation
import Testing
@testable import SluiceConfig

/// The `cluster:` block and Redis URLs.
@Suite("Cluster configuration")
struct ClusterConfigurationTests {
    func firstError(_ yaml: String) -> String? {
        do {
            _ = try ConfigurationLoader.parse(yaml: yaml, baseDirectory: NSTemporaryDirectory())
            return nil
        } catch {
            return error.errors.first.map { "\($0.path): \($0.message)" }
        }
    }

    static func config(_ cluster: String, route: String = "") -> String {
        """
        cluster: \(cluster)
        listeners:
          - { name: public, address: 127.0.0.1:8080 }
        routes:
          - name: echo
            match: { path_prefix: /ws }
            backends: ["ws://127.0.0.1:9001"]
            \(route)
        """
    }

    @Test("Redis URLs: host, port, database, TLS, user, IPv6 in brackets; malformed ones say why")
    func urls() throws {
        let plain = try RedisAddress.parse("redis://10.0.0.5:6380/2").get()
        #expect(plain.host == "10.0.0.5" && plain.port == 6380 && plain.database == 2 && !plain.tls)
        let defaults = try RedisAddress.parse("redis://cache").get()
        #expect(defaults.port == 6379 && defaults.database == 0)
        let secure = try RedisAddress.parse("rediss://gateway@[2001:db8::1]:7000/").get()
        #expect(secure.tls && secure.host == "2001:db8::1" && secure.port == 7000 && secure.password == "gateway" && secure.username == nil)
        let user = try RedisAddress.parse("redis://sluice:secret@cache:6379/1").get()
        #expect(user.username == "sluice" && user.password == "secret")
        #expect(user.description == "redis://sluice@cache:6379/1")
        for bad in ["http://cache", "redis://", "redis://cache:0", "redis://cache:70000", "redis://cache/x", "redis://2001:db8::1", "redis://[::1", "redis://cache/1001"] {
            if case .success(let parsed) = RedisAddress.parse(bad) { Issue.record("\(bad) parsed as \(parsed)") }
        }
    }

    @Test("the cluster block decodes with its defaults; bad values name the key")
    func decode() throws {
        let configuration = try ConfigurationLoader.parse(
            yaml: Self.config(#"{ redis: "redis://127.0.0.1:6379/0", instance_id: gw-a, on_store_failure: deny, lease_ttl: 10s, timeout: 20ms, key_prefix: prod }"#,
                              route: "limits: { upgrade_rate_per_user: { rate: 10/m }, request_rate_per_user: { rate: 5/s, burst: 10 } }"),
            baseDirectory: NSTemporaryDirectory()
        )
        let cluster = try #require(configuration.cluster)
        #expect(cluster.instanceID == "gw-a" && cluster.onStoreFailure == .deny && cluster.leaseTTL == .seconds(10))
        #expect(cluster.timeout == .milliseconds(20) && cluster.keyPrefix == "prod")
        #expect(configuration.routes[0].limits.upgradeRatePerUser == RateLimit(perSecond: 10.0 / 60, burst: 1))
        #expect(configuration.routes[0].limits.requestRatePerUser == RateLimit(perSecond: 5, burst: 10))
        let defaults = try #require(try ConfigurationLoader.parse(yaml: Self.config(#"{ redis: "redis://cache" }"#), baseDirectory: "/tmp").cluster)
        #expect(defaults.onStoreFailure == .allow && defaults.leaseTTL == .seconds(30) && defaults.timeout == .milliseconds(50))
        #expect(defaults.instanceID.hasSuffix("-\(getpid())"))

        #expect(firstError(Self.config("{ instance_id: a }"))?.contains("redis") == true)
        #expect(firstError(Self.config(#"{ redis: "http://x" }"#))?.hasPrefix("cluster.redis: must start with redis://") == true)
        #expect(firstError(Self.config(#"{ redis: "redis://:pw@x" }"#))?.contains("password_file") == true)
        #expect(firstError(Self.config(#"{ redis: "redis://x", on_store_failure: maybe }"#))?.hasPrefix("cluster.on_store_failure:") == true)
        #expect(firstError(Self.config(#"{ redis: "redis://x", lease_ttl: 1s }"#))?.hasPrefix("cluster.lease_ttl:") == true)
        #expect(firstError(Self.config(#"{ redis: "redis://x", timeout: 0s }"#))?.hasPrefix("cluster.timeout:") == true)
        #expect(firstError(Self.config(#"{ redis: "redis://x", instance_id: "a b" }"#))?.hasPrefix("cluster.instance_id:") == true)
        #expect(firstError(Self.config(#"{ redis: "redis://x", ca_file: /etc/hosts }"#))?.contains("rediss://") == true)
        #expect(firstError(Self.config(#"{ redis: "redis://x", password_file: /nonexistent/redis-pw }"#)) != nil)
        #expect(firstError(Self.config(#"{ redis: "redis://x", replicas: 3 }"#)) != nil)
    }
}
