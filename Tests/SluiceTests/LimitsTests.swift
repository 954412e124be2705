import NIOHTTP1
import Testing
@testable import Sluice
@testable import SluiceConfig

/// Admission state machines and client-address resolution, with the clock driven by hand.
@Suite("Limits")
struct LimitsUnitTests {
    static let second: Int64 = 1_000_000_000
    let a = IPAddress("192.0.2.1")!
    let b = IPAddress("192.0.2.2")!

    @Test("a token bucket allows its burst, then one token per 1/rate seconds, and says when to retry")
    func tokenBucket() {
        var bucket = TokenBucket(RateLimit(perSecond: 2, burst: 3), now: 0)
        func take(_ now: Int64) -> Bool { bucket.take(now: now) }
        #expect((0..<3).allSatisfy { _ in take(0) })
        #expect(!take(0))
        #expect(bucket.secondsUntilToken() == 1)
        #expect(!take(Self.second / 4))
        #expect(take(Self.second / 2))
        #expect(!take(Self.second / 2))
        #expect(bucket.isFull(now: 10 * Self.second))
        var slow = TokenBucket(RateLimit(perSecond: 1.0 / 60, burst: 1), now: 0)
        let first = slow.take(now: 0), second = slow.take(now: 0)
        #expect(first && !second)
        #expect(slow.secondsUntilToken() == 60)
    }

    @Test("route admission: cap → 503, per-IP and per-user → 429, rates → 429; releases give back exactly what was taken")
    func routeAdmission() {
        var limits = RouteLimits()
        limits.maxWebSockets = 3
        limits.maxWebSocketsPerIP = 2
        limits.maxWebSocketsPerUser = 1
        limits.retryAfter = .seconds(9)
        var state = RouteAdmissionState(limits: limits, now: 0)
        func admit(_ ip: IPAddress, _ user: String?) -> LimitRejection? { state.admit(ip: ip, user: user, now: 0) }
        #expect(admit(a, "ann") == nil)
        #expect(admit(a, "ann") == .maxWebSocketsPerUser(retryAfter: 9))
        #expect(admit(a, nil) == nil)
        #expect(admit(a, nil) == .maxWebSocketsPerIP(retryAfter: 9))
        #expect(admit(b, "bob") == nil)
        let full = admit(b, nil)
        #expect(full == .maxWebSockets(retryAfter: 9))
        #expect(full?.status == .serviceUnavailable)
        #expect(LimitRejection.maxWebSocketsPerIP(retryAfter: 1).status == .tooManyRequests)
        state.release(ip: a, user: "ann")
        #expect(admit(a, "ann") == nil)
        state.release(ip: a, user: "ann")
        state.release(ip: a, user: nil)
        state.release(ip: b, user: "bob")
        #expect(state.isIdle)

        var rated = RouteLimits()
        rated.upgradeRatePerIP = RateLimit(perSecond: 1, burst: 1)
        rated.upgradeRate = RateLimit(perSecond: 1, burst: 2)
        var rate = RouteAdmissionState(limits: rated, now: 0)
        func admitRated(_ ip: IPAddress, at now: Int64 = 0) -> LimitRejection? { rate.admit(ip: ip, user: nil, now: now) }
        #expect(admitRated(a) == nil)
        #expect(admitRated(a) == .upgradeRatePerIP(retryAfter: 1))
        #expect(admitRated(b) == nil)
        #expect(admitRated(IPAddress("192.0.2.3")!) == .upgradeRate(retryAfter: 1))
        #expect(admitRated(a, at: Self.second) == nil)
    }

    @Test("plain requests spend only the request-rate buckets")
    func requestRates() {
        var limits = RouteLimits()
        limits.requestRatePerIP = RateLimit(perSecond: 1, burst: 2)
        limits.requestRate = RateLimit(perSecond: 1, burst: 3)
        limits.maxWebSockets = 1
        var state = RouteAdmissionState(limits: limits, now: 0)
        func request(_ ip: IPAddress, _ now: Int64 = 0) -> LimitRejection? { state.admitRequest(ip: ip, now: now) }
        #expect(request(a) == nil)
        #expect(request(a) == nil)
        #expect(request(a) == .requestRatePerIP(retryAfter: 1))
        #expect(request(b) == nil)
        #expect(request(b) == .requestRate(retryAfter: 1))
        #expect(request(a, Self.second) == nil)
        #expect(state.isIdle, "requests hold no connection count")
    }

    @Test("a reload that adds a request rate to a route applies it at once; one that removes it lets requests through")
    func requestRateByReload() {
        let limiter = RouteLimiter(limits: RouteLimits())
        for _ in 0..<5 { #expect(limiter.admitRequest(ip: a) == nil) }
        var limited = RouteLimits()
        limited.requestRatePerIP = RateLimit(perSecond: 0.001, burst: 1)
        limiter.update(limited)
        #expect(limiter.admitRequest(ip: a) == nil)
        // (Which limit refused, not the wait it names: that depends on the time between calls.)
        #expect({ if case .requestRatePerIP = limiter.admitRequest(ip: a) { true } else { false } }())
        var total = RouteLimits()
        total.requestRate = RateLimit(perSecond: 0.001, burst: 1)
        limiter.update(total)
        #expect(limiter.admitRequest(ip: b) == nil)
        #expect({ if case .requestRate = limiter.admitRequest(ip: a) { true } else { false } }())
        limiter.update(RouteLimits())
        #expect(limiter.admitRequest(ip: a) == nil)
    }

    @Test("a lease counts out once however many paths release it")
    func leaseOnce() {
        var limits = RouteLimits()
        limits.maxWebSockets = 1
        let limiter = RouteLimiter(limits: limits)
        guard case .success(let lease) = limiter.admit(ip: a, user: nil) else { Issue.record("not admitted"); return }
        #expect(limiter.active == 1)
        lease.release()
        lease.release()
        #expect(limiter.active == 0)
        #expect(limiter.isIdle)
    }

    @Test("the connection limiter caps the total and per address, and forgets released addresses")
    func connectionLimiter() {
        let limiter = ConnectionLimiter(limits: GlobalLimits(maxConnections: 3, maxConnectionsPerIP: 2))
        #expect(limiter.admit(a) == nil)
        #expect(limiter.admit(a) == nil)
        #expect(limiter.admit(a) == .maxConnectionsPerIP)
        #expect(limiter.admit(b) == nil)
        #expect(limiter.admit(b) == .maxConnections)
        limiter.release(a)
        limiter.release(a)
        limiter.release(b)
        #expect(limiter.total == 0 && limiter.trackedAddresses == 0)
    }

    @Test("X-Forwarded-For is believed only from trusted proxies, rightmost untrusted entry first")
    func clientAddress() throws {
        let trusted = [try CIDR("10.0.0.0/8")]
        let proxy = IPAddress("10.1.1.1")!
        var headers = HTTPHeaders([("X-Forwarded-For", "203.0.113.9, 198.51.100.4"), ("X-Forwarded-For", "10.2.2.2")])
        #expect(ClientAddress.resolve(peer: proxy, headers: headers, trusted: trusted) == IPAddress("198.51.100.4"))
        #expect(ClientAddress.resolve(peer: a, headers: headers, trusted: trusted) == a)
        #expect(ClientAddress.resolve(peer: proxy, headers: headers, trusted: []) == proxy)
        headers = HTTPHeaders([("X-Forwarded-For", "10.3.3.3")])
        #expect(ClientAddress.resolve(peer: proxy, headers: headers, trusted: trusted) == IPAddress("10.3.3.3"))
        headers = HTTPHeaders([("X-Forwarded-For", "garbage, 10.3.3.3")])
        #expect(ClientAddress.resolve(peer: proxy, headers: headers, trusted: trusted) == IPAddress("10.3.3.3"))
        headers = HTTPHeaders([("X-Forwarded-For", "[2001:db8::7]:443")])
        #expect(ClientAddress.resolve(peer: proxy, headers: headers, trusted: trusted) == IPAddress("2001:db8::7"))
        headers = HTTPHeaders([("X-Forwarded-For", "192.0.2.1:5555")])
        #expect(ClientAddress.resolve(peer: proxy, headers: headers, trusted: trusted) == a)
    }

    @Test("access-log records are JSON with every control character escaped")
    func accessRecord() {
        var record = AccessRecord(type: "http")
        record.set("path", "/a\"b\\c\n\u{1}")
        record.set("status", 404)
        record.set("user", nil as String?)
        #expect(record.json.contains(#""path":"/a\"b\\c\n\u0001""#))
        #expect(record.json.contains(#""status":404"#))
        #expect(record.json.contains(#""user":null"#))
        #expect(record.json.hasPrefix(#"{"ts":""#))
    }

    @Test("secret comparison is exact, including lengths")
    func constantTime() {
        #expect(ConstantTime.equal(Array("token".utf8), Array("token".utf8)))
        #expect(!ConstantTime.equal(Array("token".utf8), Array("tokem".utf8)))
        #expect(!ConstantTime.equal(Array("token".utf8), Array("token2".utf8)))
        #expect(!ConstantTime.equal([], Array("x".utf8)))
    }
}
