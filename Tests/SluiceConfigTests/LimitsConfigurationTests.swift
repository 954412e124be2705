import Foundation
import Testing
@testable import SluiceConfig

/// Limits, trusted proxies, the admin token and the access log in the config.
@Suite("Limits configuration")
struct LimitsConfigurationTests {
    func parse(_ yaml: String) throws(ConfigErrors) -> Configuration {
        try ConfigurationLoader.parse(yaml: yaml, baseDirectory: NSTemporaryDirectory())
    }

    func firstError(_ yaml: String) -> String? {
        do {
            _ = try parse(yaml)
            return nil
        } catch {
            return error.errors.first.map { "\($0.path): \($0.message)" }
        }
    }

    static func config(top: String = "", route: String = "") -> String {
        """
        \(top)
        listeners:
          - name: public
            address: 127.0.0.1:8080
        routes:
          - name: echo
            match: { path_prefix: /ws }
            backends: ["ws://127.0.0.1:9001"]
            \(route)
        """
    }

    @Test("global and route limits decode; rates read as per second; burst defaults to one second's worth")
    func decode() throws {
        let configuration = try parse(Self.config(
            top: "limits: { max_connections: 100, max_connections_per_ip: 10, trusted_proxies: [10.0.0.0/8, \"2001:db8::/32\", 192.0.2.7] }\naccess_log: stdout",
            route: "limits: { max_websockets: 50, max_websockets_per_ip: 5, max_websockets_per_user: 2, upgrade_rate: { rate: 600/m }, upgrade_rate_per_ip: { rate: 20/s, burst: 40 }, retry_after: 30s }"
        ))
        #expect(configuration.limits.maxConnections == 100)
        #expect(configuration.limits.maxConnectionsPerIP == 10)
        #expect(configuration.limits.trustedProxies.map(\.description) == ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"])
        #expect(configuration.accessLog == .stdout)
        let limits = configuration.routes[0].limits
        #expect(limits.maxWebSockets == 50 && limits.maxWebSocketsPerIP == 5 && limits.maxWebSocketsPerUser == 2)
        #expect(limits.upgradeRate == RateLimit(perSecond: 10, burst: 10))
        #expect(limits.upgradeRatePerIP == RateLimit(perSecond: 20, burst: 40))
        #expect(limits.retryAfter == .seconds(30))
        #expect(try parse(Self.config()).routes[0].limits.isEmpty)
        #expect(try parse(Self.config()).accessLog == .off)
    }

    @Test("bad limits are refused with the key path")
    func refusals() {
        #expect(firstError(Self.config(top: "limits: { trusted_proxies: [10.0.0.0/33] }"))?.contains("prefix length") == true)
        #expect(firstError(Self.config(top: "limits: { trusted_proxies: [example.com] }"))?.hasPrefix("limits.trusted_proxies[0]") == true)
        #expect(firstError(Self.config(top: "limits: { max_connections: 0 }"))?.hasPrefix("limits.max_connections") == true)
        #expect(firstError(Self.config(top: "limits: { max_conections: 5 }"))?.contains("max_conections") == true)
        #expect(firstError(Self.config(route: "limits: { upgrade_rate: { rate: 20 } }"))?.contains("20/s") == true)
        #expect(firstError(Self.config(route: "limits: { upgrade_rate: { rate: 5/d } }")) != nil)
        #expect(firstError(Self.config(route: "limits: { max_websockets: 5, max_websockets_per_ip: 6 }"))?.contains("larger than max_websockets") == true)
        #expect(firstError(Self.config(top: "limits: { max_connections: 5, max_connections_per_ip: 6 }"))?.contains("larger than max_connections") == true)
        #expect(firstError(Self.config(top: "access_log: /no/such/dir/access.log"))?.contains("does not exist") == true)
    }

    @Test("an admin token file must exist and hold at least 16 characters")
    func adminToken() throws {
        let file = NSTemporaryDirectory() + "sluice-token-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: file) }
        try "short".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(firstError(Self.config(top: "admin: { address: 127.0.0.1:9090, token_file: \(file) }"))?.contains("shorter than 16") == true)
        try "0123456789abcdef0123\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try parse(Self.config(top: "admin: { address: 127.0.0.1:9090, token_file: \(file) }")).admin?.tokenFile == file)
        #expect(firstError(Self.config(top: "admin: { address: 127.0.0.1:9090, token_file: /no/such/token }"))?.contains("does not exist") == true)
    }

    @Test("IP addresses and ranges: parsing, IPv4-mapped IPv6, membership, RFC 5952 text")
    func addresses() throws {
        #expect(IPAddress("192.0.2.1")?.bytes == [192, 0, 2, 1])
        #expect(IPAddress("::ffff:192.0.2.1") == IPAddress("192.0.2.1"))
        #expect(IPAddress("2001:db8::1")?.description == "2001:db8::1")
        #expect(IPAddress("::1")?.description == "::1")
        #expect(IPAddress("2001:db8:0:0:1:0:0:1")?.description == "2001:db8::1:0:0:1")
        #expect(IPAddress("256.0.0.1") == nil)
        #expect(IPAddress("1.2.3") == nil)
        #expect(IPAddress("example.com") == nil)
        #expect(IPAddress("1::2::3") == nil)
        let range = try CIDR("10.0.0.0/8")
        #expect(range.contains(IPAddress("10.255.1.2")!))
        #expect(!range.contains(IPAddress("11.0.0.1")!))
        #expect(!range.contains(IPAddress("::1")!))
        #expect(try CIDR("2001:db8::/32").contains(IPAddress("2001:db8:ffff::1")!))
        #expect(try CIDR("192.0.2.128/25").contains(IPAddress("192.0.2.200")!))
        #expect(try !CIDR("192.0.2.128/25").contains(IPAddress("192.0.2.100")!))
        #expect(try CIDR("0.0.0.0/0").contains(IPAddress("8.8.8.8")!))
        #expect(throws: ValueError.self) { try CIDR("10.0.0.0/x") }
    }
}
