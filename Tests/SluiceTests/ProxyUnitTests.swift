import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOSSL
import Testing
@testable import Sluice
@testable import SluiceConfig

/// The pool's rules, header filtering and backend choice, with no sockets.
@Suite("Reverse proxy units")
struct ProxyUnitTests {
    @Test("the pool reuses the warmest idle connection, caps idle ones after the grace, expires old ones, never keeps an unclean one")
    func poolState() {
        var pool = ConnectionPoolState<Int>(maxIdle: 2, idleTimeout: 100, burstGrace: 5)
        #expect(pool.checkin(1, reusable: true, now: 0) == .keep)
        #expect(pool.checkin(2, reusable: true, now: 10) == .keep)
        #expect(pool.checkin(3, reusable: true, now: 20) == .keep)
        #expect(pool.checkin(4, reusable: false, now: 20) == .close)
        // One above the cap: the oldest goes once idle for the grace, the rest wait for the timeout.
        #expect(pool.expire(now: 4).isEmpty)
        #expect(pool.expire(now: 25) == [1])
        let (warmest, expired) = pool.checkout(now: 30)
        #expect(warmest == 3 && expired.isEmpty)
        #expect(pool.expire(now: 109).isEmpty)
        #expect(pool.expire(now: 115) == [2])
        #expect(pool.checkout(now: 115).0 == nil)
        var none = ConnectionPoolState<Int>(maxIdle: 0, idleTimeout: 100)
        #expect(none.checkin(1, reusable: true, now: 0) == .close)
        _ = pool.checkin(5, reusable: true, now: 200)
        pool.remove(5)
        #expect(pool.idle.isEmpty)
        // The grace never outlasts the idle timeout.
        #expect(ConnectionPoolState<Int>(maxIdle: 1, idleTimeout: 3, burstGrace: 5).burstGrace == 3)
    }

    @Test("a backend's announced keep-alive shortens how long its connection is kept, by the margin; one too short is not kept")
    func poolBackendKeepAlive() {
        let second: Int64 = 1_000_000_000
        #expect(ConnectionPoolState<Int>.backendMargin == second)
        var pool = ConnectionPoolState<Int>(maxIdle: 4, idleTimeout: 30 * second)
        // Node's `Keep-Alive: timeout=5`: kept for 4 s, not the pool's 30.
        #expect(pool.checkin(1, reusable: true, backendKeepAlive: 5 * second, now: 0) == .keep)
        #expect(pool.idle.map(\.limit) == [4 * second])
        #expect(pool.armSweep() == 4 * second)
        // A timeout no longer than the margin: closed at once, never reused.
        #expect(pool.checkin(2, reusable: true, backendKeepAlive: second, now: 0) == .close)
        #expect(pool.checkin(3, reusable: true, backendKeepAlive: 0, now: 0) == .close)
        // Longer than the pool's own timeout: the pool's holds.
        #expect(pool.checkin(4, reusable: true, backendKeepAlive: 300 * second, now: second) == .keep)
        // The one behind a longer-lived neighbour is still checked before it is handed out.
        #expect(pool.checkin(5, reusable: true, backendKeepAlive: 3 * second, now: 2 * second) == .keep)
        let (reused, expired) = pool.checkout(now: 4 * second + 1)
        #expect(reused == 4 && Set(expired) == [1, 5])
        #expect(pool.idle.isEmpty)
        #expect(pool.checkout(now: 31 * second).0 == nil)
    }

    @Test("a burst past the cap is kept for the grace and reused; then the oldest above the cap close")
    func poolBurst() {
        var pool = ConnectionPoolState<Int>(maxIdle: 2, idleTimeout: 1_000, burstGrace: 10)
        for id in 1...6 { _ = pool.checkin(id, reusable: true, now: 100) }
        // The next burst within the grace takes them all again: nothing was closed or opened.
        for id in (1...6).reversed() { #expect(pool.checkout(now: 105).0 == id) }
        for id in 1...6 { _ = pool.checkin(id, reusable: true, now: 105 + Int64(id)) }
        #expect(pool.armSweep() == 116)
        let trimmed = pool.sweep(now: 120, scheduledFor: 116)
        #expect(trimmed.expired == [1, 2, 3, 4] && pool.idle.map(\.id) == [5, 6])
        // Back at the cap: the next sweep is the idle timeout's.
        #expect(trimmed.next == 1_110)
    }

    @Test("a sweep is scheduled once, brought forward by a burst, and stops when nothing is idle")
    func poolSweepState() {
        var pool = ConnectionPoolState<Int>(maxIdle: 2, idleTimeout: 100, burstGrace: 10)
        #expect(pool.armSweep() == nil)
        _ = pool.checkin(1, reusable: true, now: 0)
        _ = pool.checkin(2, reusable: true, now: 50)
        #expect(pool.armSweep() == 100)
        #expect(pool.armSweep() == nil)
        // A third connection puts the pool above the cap: a sooner sweep supersedes the first.
        _ = pool.checkin(3, reusable: true, now: 60)
        #expect(pool.armSweep() == 10)
        #expect(pool.armSweep() == nil)
        let burst = pool.sweep(now: 60, scheduledFor: 10)
        #expect(burst.expired == [1] && burst.next == 150)
        // The superseded sweep finds nothing to do and schedules nothing.
        #expect(pool.sweep(now: 100, scheduledFor: 100) == ([], nil))
        let first = pool.sweep(now: 150, scheduledFor: 150)
        #expect(first.expired == [2] && first.next == 160)
        let second = pool.sweep(now: 160, scheduledFor: 160)
        #expect(second.expired == [3] && second.next == nil && pool.sweepDue == nil)
        _ = pool.checkin(4, reusable: true, now: 200)
        #expect(pool.armSweep() == 300)
    }

    @Test("backends share pooled connections only with identical backends: same URL, TLS context and server name")
    func poolIdentity() throws {
        func backend(_ text: String, tls: NIOSSLContext? = nil, serverName: String? = nil) throws -> Backend {
            let url = try BackendURL.parse(text)
            return Backend(url: url, host: "127.0.0.1", port: 8080, path: "/", tls: tls, serverName: serverName)
        }
        let one = try backend("http://127.0.0.1:8080"), same = try backend("http://127.0.0.1:8080")
        #expect(one.poolIdentity == same.poolIdentity && one.poolIdentity.hashValue == same.poolIdentity.hashValue)
        #expect(one.poolIdentity != (try backend("http://127.0.0.1:8081")).poolIdentity)
        let context = try NIOSSLContext(configuration: .makeClientConfiguration())
        let other = try NIOSSLContext(configuration: .makeClientConfiguration())
        let verified = try backend("https://127.0.0.1:8080", tls: context, serverName: "a.example")
        #expect(verified.poolIdentity == (try backend("https://127.0.0.1:8080", tls: context, serverName: "a.example")).poolIdentity)
        #expect(verified.poolIdentity != (try backend("https://127.0.0.1:8080", tls: other, serverName: "a.example")).poolIdentity)
        #expect(verified.poolIdentity != (try backend("https://127.0.0.1:8080", tls: context, serverName: "b.example")).poolIdentity)
        #expect(verified.poolIdentity != (try backend("https://127.0.0.1:8080", tls: context)).poolIdentity)
        #expect(try backend("http://127.0.0.1:8080").hostHeader == "127.0.0.1:8080")
    }

    static func plainBackend() throws -> Backend {
        Backend(url: try BackendURL.parse("http://127.0.0.1:8080"), host: "127.0.0.1", port: 8080, path: "/", tls: nil, serverName: nil)
    }

    /// A backend connection the pool can hold: an embedded channel that counts as open.
    static func openConnection(on loop: EmbeddedEventLoop) throws -> UpstreamConnection {
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
        return UpstreamConnection(channel: channel, handler: UpstreamHTTPHandler())
    }

    @Test("routes sharing a backend keep idle connections under their own max_idle, not another route's")
    func poolPerRouteRules() throws {
        let loop = EmbeddedEventLoop()
        let backend = try Self.plainBackend()
        let roomy = PoolSettings(maxIdle: 3, idleTimeout: 60_000_000_000, connectTimeout: .seconds(1))
        let tight = PoolSettings(maxIdle: 1, idleTimeout: 60_000_000_000, connectTimeout: .seconds(1))
        func connection() throws -> UpstreamConnection { try Self.openConnection(on: loop) }
        let pool = UpstreamPool()
        let kept = try (0..<3).map { _ in try connection() }
        for each in kept { pool.release(each, backend: backend, settings: roomy, reusable: true) }
        let evicted = try connection()
        pool.release(evicted, backend: backend, settings: tight, reusable: true)
        loop.advanceTime(by: .milliseconds(1))
        let newest = try connection()
        pool.release(newest, backend: backend, settings: tight, reusable: true)
        #expect(evicted.channel.isActive, "closed before the burst grace")
        loop.advanceTime(by: .milliseconds(999))
        // The tight route's cap of one closed its own older connection and none of the other's.
        #expect(kept.allSatisfy { $0.channel.isActive })
        #expect(!evicted.channel.isActive && newest.channel.isActive)
        #expect(pool.takeIdle(backend, settings: tight, on: loop) === newest)
        #expect(pool.takeIdle(backend, settings: tight, on: loop) == nil)
        #expect(pool.takeIdle(backend, settings: roomy, on: loop) === kept[2])
        pool.closeAll()
        #expect(!kept[0].channel.isActive && !kept[1].channel.isActive)
    }

    @Test("idle connections close at the idle timeout though no request comes to take or return one")
    func poolIdleTimeoutWithoutTraffic() throws {
        let loop = EmbeddedEventLoop()
        let backend = try Self.plainBackend()
        let settings = PoolSettings(maxIdle: 4, idleTimeout: 1_000_000_000, connectTimeout: .seconds(1))
        func connection() throws -> UpstreamConnection { try Self.openConnection(on: loop) }
        let pool = UpstreamPool()
        let early = try connection()
        pool.release(early, backend: backend, settings: settings, reusable: true)
        loop.advanceTime(by: .milliseconds(600))
        let late = try connection()
        pool.release(late, backend: backend, settings: settings, reusable: true)
        loop.advanceTime(by: .milliseconds(399))
        #expect(early.channel.isActive && late.channel.isActive)
        loop.advanceTime(by: .milliseconds(1))
        #expect(!early.channel.isActive && late.channel.isActive)
        loop.advanceTime(by: .milliseconds(600))
        #expect(!late.channel.isActive)
        // Nothing idle: the sweep stopped, and the next connection arms it again.
        let again = try connection()
        pool.release(again, backend: backend, settings: settings, reusable: true)
        loop.advanceTime(by: .seconds(1))
        #expect(!again.channel.isActive)
        #expect(pool.takeIdle(backend, settings: settings, on: loop) == nil)
    }

    @Test("a cancelled request's response is read and dropped: its connection goes back to the pool, unless it runs past the bounds or asks to close")
    func drainAfterCancel() throws {
        let loop = EmbeddedEventLoop()
        let set = Self.backends(1, BalancingConfiguration())
        let backend = set.backend(0)
        let settings = PoolSettings(maxIdle: 4, idleTimeout: 60_000_000_000, connectTimeout: .seconds(1))
        let pool = UpstreamPool()
        /// A connection whose request went out, left to a drain; `answer` is what the backend sends.
        func drained(_ answer: String..., after wait: TimeAmount = .zero) throws -> UpstreamConnection {
            let handler = UpstreamHTTPHandler()
            let channel = EmbeddedChannel(handler: handler, loop: loop)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
            let connection = UpstreamConnection(channel: channel, handler: handler)
            handler.expectResponse(toHEAD: false)
            UpstreamDrain.start(connection, head: nil, from: set, 0, settings: settings, pool: pool)
            loop.advanceTime(by: wait)
            for part in answer where channel.isActive { try channel.writeInbound(ByteBuffer(string: part)) }
            return connection
        }

        let small = try drained("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe", "llo")
        #expect(small.channel.isActive)
        #expect(pool.takeIdle(backend, settings: settings, on: loop) === small, "a small answer read to its end: the connection is pooled")

        let big = try drained("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", String(repeating: "x", count: UpstreamDrain.maxBytes + 1))
        #expect(!big.channel.isActive, "more than maxBytes of an answer no one reads: closed")

        let closing = try drained("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        #expect(pool.takeIdle(backend, settings: settings, on: loop) == nil, "an answer that closes its connection is not pooled")
        #expect(!closing.channel.isActive)

        let silent = try drained()
        loop.advanceTime(by: UpstreamDrain.maxTime - .milliseconds(1))
        #expect(silent.channel.isActive)
        loop.advanceTime(by: .milliseconds(1))
        #expect(!silent.channel.isActive, "a backend that does not answer within maxTime: closed")

        let late = try drained("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", after: UpstreamDrain.maxTime)
        #expect(!late.channel.isActive && pool.takeIdle(backend, settings: settings, on: loop) == nil)
        #expect(small.channel.isActive)
        pool.closeAll()
    }

    @Test("a cancelled request's answer counts toward its backend's passive health as the exchange's would")
    func drainCountsTowardHealth() throws {
        let loop = EmbeddedEventLoop()
        let settings = PoolSettings(maxIdle: 4, idleTimeout: 60_000_000_000, connectTimeout: .seconds(1))
        let pool = UpstreamPool()
        defer { pool.closeAll() }
        /// Drains `answer` on a connection to backend `index` of `set`.
        func drain(_ answer: String, from set: BackendSet, _ index: Int) throws {
            let handler = UpstreamHTTPHandler()
            let channel = EmbeddedChannel(handler: handler, loop: loop)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9000 + index)).wait()
            handler.expectResponse(toHEAD: false)
            UpstreamDrain.start(UpstreamConnection(channel: channel, handler: handler), head: nil, from: set, index, settings: settings, pool: pool)
            try channel.writeInbound(ByteBuffer(string: answer))
            // The drain's flush waits in this thread's `DeferredFlushes` batch for the loop:
            // run it, or the batch stays pending for another test's loop on this thread.
            loop.run()
        }
        let unavailable = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        let fine = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

        var counting = BalancingConfiguration()
        counting.maxFails = 2
        counting.plainErrorsFail = true
        let set = Self.backends(2, counting)
        try drain(unavailable, from: set, 0)
        try drain(fine, from: set, 0)
        try drain(unavailable, from: set, 0)
        #expect(!set.isSkipped(0), "an answer below 500 in between starts the failures in a row again")
        try drain(unavailable, from: set, 0)
        #expect(set.isSkipped(0), "max_fails 5xx answers in a row to cancelled requests eject the backend")
        #expect(!set.isSkipped(1))

        var plain = counting
        plain.plainErrorsFail = false
        let lenient = Self.backends(2, plain)
        for _ in 0..<3 { try drain(unavailable, from: lenient, 0) }
        #expect(!lenient.isSkipped(0), "without plain_errors_fail a 5xx is an answer, as for an exchange")
    }

    @Test("names and tokens compare without ASCII case, and only letters fold")
    func caseInsensitiveBytes() {
        func equal(_ a: String, _ b: StaticString) -> Bool {
            Array(a.utf8).withUnsafeBytes { HTTPSyntax.equalsIgnoringCase($0[...], b) }
        }
        #expect(equal("Content-Length", "content-length") && equal("CONNECTION", "connection") && equal("", ""))
        #expect(!equal("content-lengt", "content-length") && !equal("content-lengthx", "content-length"))
        // '@' and '`', '[' and '{' differ by the case bit but are not letters.
        #expect(!equal("@", "`") && !equal("[", "{") && !equal("keep_alive", "keep-alive"))
        #expect(Array("xx-Upgrade".utf8).withUnsafeBytes { HTTPSyntax.equalsIgnoringCase($0[3...], "upgrade") })
        #expect(HeaderTokens.equalIgnoringASCIICase("Keep-Alive", "keep-alive"))
        #expect(HeaderTokens.equalIgnoringASCIICase("Host"[...], "host"))
        #expect(!HeaderTokens.equalIgnoringASCIICase("@host", "`host") && !HeaderTokens.equalIgnoringASCIICase("host", "hosts"))
        // A substring after a multi-byte character compares from its own start.
        #expect(HeaderTokens.equalIgnoringASCIICase("ÄHost".dropFirst(), "HOST"))
    }

    @Test("a Host is a reg-name, IPv4 address or IP literal with an optional port; anything else is refused")
    func hostSyntax() {
        for good in ["", "example.com", "EXAMPLE.com:8443", "127.0.0.1:80", "[::1]", "[::1]:8080", "[fe80::1%25eth0]", "xn--bcher-kva.de", "a_b.c~d", "host:"] {
            #expect(HTTPSyntax.isValidHost(good), "\(good)")
        }
        for bad in ["a b", "a/b", "user@host", "host:80x", "[::1", "[::1]x", "[::1]:8o", "[]", "\"q\"", "h\u{7F}", "bücher.de", "a:b:c"] {
            #expect(!HTTPSyntax.isValidHost(bad), "\(bad)")
        }
    }

    @Test("hop-by-hop headers and any named in Connection are removed; end-to-end ones stay")
    func hopByHop() {
        let headers = HTTPHeaders([
            ("Connection", "keep-alive, X-Private"), ("Keep-Alive", "timeout=5"), ("X-Private", "1"), ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("Proxy-Connection", "x"), ("Trailer", "x"),
            ("Content-Length", "5"), ("Cookie", "a=b"), ("X-Other", "2"),
        ])
        let kept = ForwardedHeaders.endToEnd(headers)
        #expect(kept.map(\.name).sorted() == ["Content-Length", "Cookie", "X-Other"])
        let upstream = ForwardedHeaders.endToEnd(headers, dropping: ["cookie", "host"])
        #expect(upstream.map(\.name) == ["Content-Length", "X-Other"], "order kept, named fields dropped")
    }

    @Test("a field name set matches its names in any case and nothing else, at every length")
    func fieldNameSet() {
        let long = String(repeating: "x", count: 70)
        let names = FieldNameSet(["X-Sluice-User", "host", "te", long, "x-forwarded-for"])
        for present in ["x-sluice-user", "X-SLUICE-USER", "Host", "TE", long.uppercased(), "X-Forwarded-For"] {
            #expect(names.contains(present), "\(present)")
        }
        // Same lengths as names in the set (the mask passes them on), different bytes; a long
        // name of another length that shares the 63-and-over bit; a near miss in the last byte.
        for absent in ["x-sluice-usex", "hose", "tf", String(repeating: "x", count: 64), String(repeating: "x", count: 69) + "y", "", "x-forwarded-fo"] {
            #expect(!names.contains(absent), "\(absent)")
        }
        #expect(!FieldNameSet([String]()).contains("") && !FieldNameSet([String]()).contains("host"))
        #expect(FieldNameSet(["A", "a"]).contains("a") && FieldNameSet(["Host"]).contains("host"), "stored lower-cased")
        #expect(ForwardedHeaders.hopByHop.contains("Transfer-Encoding") && !ForwardedHeaders.hopByHop.contains("User-Agent"))
        // The same answers for a name read in place from bytes (a backend's response head).
        for (name, expected) in [("TRAILER", true), ("Proxy-Connection", true), ("Trailers", false), ("X-Te", false)] {
            let found = Array(name.utf8).withUnsafeBytes { ForwardedHeaders.hopByHop.contains($0[...]) }
            #expect(found == expected, "\(name)")
        }
        // Not ASCII: compared byte for byte.
        #expect(FieldNameSet(["ü"]).contains("ü") && !FieldNameSet(["ü"]).contains("Ü"))
    }

    @Test("request framing is read in one pass: lengths, chunked, Host count, size, and the smuggling verdicts")
    func framing() {
        func read(_ fields: [(String, String)]) -> RequestFraming { RequestFraming.read(HTTPHeaders(fields)) }
        let plain = read([("Host", "h"), ("content-length", "5")])
        #expect(plain.problem == nil && plain.contentLength == 5 && plain.hasBody && !plain.chunked && plain.hostCount == 1)
        #expect(plain.fieldCount == 2 && plain.fieldBytes == "Host".utf8.count + 1 + 4 + "content-length".utf8.count + 1 + 4)
        #expect(read([("Content-Length", "5, 5")]).problem == nil)
        #expect(read([("Content-Length", "0")]).hasBody == false)
        #expect(read([("Content-Length", "5"), ("Content-Length", "6")]).problem == .conflictingLengths)
        #expect(read([("Content-Length", "5"), ("Transfer-Encoding", "chunked")]).problem == .lengthAndTransferEncoding)
        #expect(read([("Transfer-Encoding", "gzip, chunked")]).problem == .unsupportedTransferEncoding)
        #expect(read([("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")]).problem == .unsupportedTransferEncoding)
        let chunked = read([("TRANSFER-ENCODING", " Chunked ")])
        #expect(chunked.problem == nil && chunked.chunked && chunked.hasBody && chunked.contentLength == nil)
        #expect(read([("Host", "a, b")]).hostCount == 2)
        #expect(read([("Host", "a"), ("host", "a")]).hostCount == 2)
        #expect(read([("Host", "")]).hostCount == 0)
        // What the exchange and admission read from the same pass instead of scanning again.
        #expect(read([("Expect", "foo, 100-Continue")]).expectsContinue)
        #expect(read([("expect", "x"), ("EXPECT", "100-continue")]).expectsContinue)
        #expect(!read([("Expect", "100-continued")]).expectsContinue && !plain.expectsContinue)
        #expect(read([("Upgrade", "websocket"), ("upgrade", "h2c")]).upgradeCount == 2 && plain.upgradeCount == 0)
    }

    @Test("header lists are split on commas and trimmed, across repeated fields, without case")
    func tokens() {
        let headers = HTTPHeaders([("Connection", " keep-alive ,, Upgrade\t"), ("connection", "X-A"), ("Other", "close")])
        #expect(HeaderTokens.list(headers, "connection") == ["keep-alive", "Upgrade", "X-A"])
        #expect(HeaderTokens.contains(headers, "CONNECTION", token: "upgrade"))
        #expect(!HeaderTokens.contains(headers, "connection", token: "close"))
        #expect(HeaderTokens.list(headers, "absent").isEmpty)
        #expect(" \t a b \t".trimmingSpacesAndTabs() == "a b" && "   ".trimmingSpacesAndTabs().isEmpty)
    }

    /// What a backend receives of `headers` on a route with `auth`, with Sluice's forwarding fields.
    static func upstream(
        _ headers: HTTPHeaders, client: ForwardedHeaders.Client, auth: RouteAuthConfiguration = RouteAuthConfiguration(), identity: Identity? = nil
    ) -> HTTPHeaders {
        var kept: [(String, String)] = []
        UpstreamFields(auth: auth, identityHeaders: ["x-sluice-user", "x-user-id"]).forEach(headers, client: client, identity: identity) { kept.append(($0, $1)) }
        var written = ByteBuffer()
        ForwardedHeaders.write(client, chains: ForwardedHeaders.incomingChains(headers, client: client), into: &written)
        for line in String(buffer: written).split(separator: "\r\n") {
            let (name, value) = (line.prefix { $0 != ":" }, line.drop { $0 != ":" }.dropFirst(2))
            kept.append((String(name), String(value)))
        }
        return HTTPHeaders(kept)
    }

    @Test("forwarding headers: a client's own X-Forwarded-For and X-Real-IP are dropped unless it is a trusted proxy")
    func forwarding() {
        let headers = Self.upstream(
            HTTPHeaders([("X-Forwarded-For", "10.0.0.9"), ("Forwarded", "for=10.0.0.9"), ("X-Real-IP", "10.0.0.9")]),
            client: .init(address: "192.0.2.1", host: "h", tls: true)
        )
        #expect(headers["x-forwarded-for"] == ["192.0.2.1"])
        #expect(headers["forwarded"] == [#"for=192.0.2.1;host="h";proto=https"#])
        #expect(headers["x-real-ip"] == [])
        let trusted = Self.upstream(
            HTTPHeaders([("X-Forwarded-For", "10.0.0.9"), ("X-Real-IP", "10.0.0.9")]),
            client: .init(address: "192.0.2.1", host: "h", tls: false, trustsIncomingChain: true)
        )
        #expect(trusted["x-forwarded-for"] == ["10.0.0.9, 192.0.2.1"])
        #expect(trusted["x-real-ip"] == ["10.0.0.9"])
        let chained = Self.upstream(
            HTTPHeaders([("Forwarded", "for=10.0.0.9"), ("X-Forwarded-Proto", "gopher"), ("Host", "h")]),
            client: .init(address: "2001:db8::1", host: "bad host", tls: false, trustsIncomingChain: true)
        )
        #expect(chained["forwarded"] == [#"for=10.0.0.9, for="[2001:db8::1]";proto=http"#])
        #expect(chained["x-forwarded-proto"] == ["http"])
        #expect(chained["x-forwarded-host"] == ["bad host"])
        #expect(chained["host"] == [])
    }

    @Test("underscore spellings of identity and forwarding fields are dropped unless the listener keeps them")
    func underscoreAliases() {
        let sent = HTTPHeaders([("X_Sluice_User", "admin"), ("x-sluice_user", "admin"), ("X_Forwarded_For", "1.2.3.4"), ("X_Real_IP", "1.2.3.4"), ("X_User_Id", "7"), ("X_Other", "kept")])
        let dropped = Self.upstream(sent, client: .init(address: "192.0.2.1", host: "h", tls: false))
        #expect(dropped.map(\.name).filter { $0.contains("_") } == ["X_Other"])
        let kept = Self.upstream(sent, client: .init(address: "192.0.2.1", host: "h", tls: false, keepsUnderscoreFields: true))
        #expect(kept.map(\.name).filter { $0.contains("_") }.count == 6)
    }

    @Test("credentials the route reads reach the backend only when they admitted the request, and only with forward_credentials")
    func credentials() {
        var auth = RouteAuthConfiguration()
        var jwt = JWTAuthConfiguration(algorithms: ["HS256"])
        jwt.cookie = "session"
        jwt.bearer = true
        auth.methods = [.jwt(jwt)]
        let client = ForwardedHeaders.Client(address: "192.0.2.1", host: "h", tls: false)
        let sent = HTTPHeaders([("Cookie", "theme=dark; session=alice; session=bob"), ("Authorization", "Bearer bob"), ("Cookie", "lang=fr")])
        let alice = Identity(user: "alice", headers: [], expiresAt: nil, method: "jwt", credential: .cookie("session"))
        let byCookie = Self.upstream(sent, client: client, auth: auth, identity: alice)
        #expect(byCookie["cookie"] == ["theme=dark; session=alice", "lang=fr"])
        #expect(byCookie["authorization"] == [])
        auth.forwardCredentials = false
        let stripped = Self.upstream(sent, client: client, auth: auth, identity: alice)
        #expect(stripped["cookie"] == ["theme=dark", "lang=fr"])
        let bob = Identity(user: "bob", headers: [], expiresAt: nil, method: "jwt", credential: .authorization)
        #expect(Self.upstream(sent, client: client, auth: auth, identity: bob)["authorization"] == [])
        auth.forwardCredentials = true
        let byBearer = Self.upstream(sent, client: client, auth: auth, identity: bob)
        #expect(byBearer["authorization"] == ["Bearer bob"])
        #expect(byBearer["cookie"] == ["theme=dark", "lang=fr"])
        // Forward auth judged Cookie and Authorization whole: they go through whole, or not at all.
        var forward = RouteAuthConfiguration()
        forward.methods = [.forward(ForwardAuthConfiguration(url: "http://127.0.0.1:1/auth", host: "127.0.0.1", port: 1, path: "/auth"))]
        let admitted = Identity(user: nil, headers: [], expiresAt: nil, method: "forward", credential: .forwardedFields)
        #expect(Self.upstream(sent, client: client, auth: forward, identity: admitted)["cookie"].count == 2)
        forward.forwardCredentials = false
        let none = Self.upstream(sent, client: client, auth: forward, identity: admitted)
        #expect(none["cookie"] == [] && none["authorization"] == [])
        // Public routes pass them as sent.
        #expect(Self.upstream(sent, client: client)["authorization"] == ["Bearer bob"])
    }

    static func backends(_ count: Int, _ balance: BalancingConfiguration) -> BackendSet {
        BackendSet(backends: (0..<count).map { index in
            Backend(url: try! BackendURL.parse("http://127.0.0.1:\(9000 + index)"), host: "127.0.0.1", port: 9000 + index, path: "/", tls: nil, serverName: nil)
        }, balance: balance)
    }

    @Test("client-address stickiness is consistent: adding a backend moves only the clients it wins")
    func rendezvous() {
        var balance = BalancingConfiguration()
        balance.sticky = .clientIP
        let three = Self.backends(3, balance)
        let four = Self.backends(4, balance)
        var moved = 0
        for last in 1...200 {
            let client = IPAddress("10.1.\(last / 256).\(last % 256)")!
            let before = three.candidates(attempts: 1, pin: .init(client: client))[0]
            let after = four.candidates(attempts: 1, pin: .init(client: client))[0]
            #expect(three.candidates(attempts: 1, pin: .init(client: client))[0] == before, "stable for the same client")
            if before != after {
                moved += 1
                #expect(after == 3, "a client moved to a backend other than the new one")
            }
        }
        #expect(moved > 20 && moved < 90, "about a quarter of the clients should move, moved \(moved)")
    }

    @Test("least connections prefers the idlest; max_fails failures eject a backend for the cool-down")
    func leastConnectionsAndHealth() {
        var balance = BalancingConfiguration()
        balance.policy = .leastConnections
        balance.maxFails = 2
        let set = Self.backends(3, balance)
        set.began(0)
        set.began(0)
        set.began(1)
        #expect(set.candidates(attempts: 3)[0] == 2)
        set.failed(2, reason: "refused")
        #expect(!set.isSkipped(2))
        set.failed(2, reason: "refused")
        #expect(set.isSkipped(2))
        #expect(!set.candidates(attempts: 3).contains(2))
        #expect(set.candidates(attempts: 3)[0] == 1)
        var cookie = BalancingConfiguration()
        cookie.sticky = .cookie(name: "sb")
        let sticky = Self.backends(3, cookie)
        #expect(sticky.candidates(attempts: 3, pin: .init(stickyCookie: sticky.stickyIDs[2]))[0] == 2)
        #expect(Set(sticky.stickyIDs).count == 3)
    }
}

@Suite("Path prefixes")
struct PathPrefixTests {
    @Test("strip_prefix and rewrite_prefix keep the rest of the path and the query")
    func rewrite() {
        var strip = HTTPProxySettings()
        strip.stripPrefix = true
        #expect(PathPrefix.rewrite("/app/a/b?x=1", matched: "/app", settings: strip) == "/a/b?x=1")
        #expect(PathPrefix.rewrite("/app", matched: "/app", settings: strip) == "/")
        #expect(PathPrefix.rewrite("/app?x=1", matched: "/app", settings: strip) == "/?x=1")
        var rewrite = HTTPProxySettings()
        rewrite.rewritePrefix = "/v2/api/"
        #expect(PathPrefix.rewrite("/app/a?x=1", matched: "/app", settings: rewrite) == "/v2/api/a?x=1")
        #expect(PathPrefix.rewrite("/app", matched: "/app", settings: rewrite) == "/v2/api")
        #expect(PathPrefix.rewrite("/app/a", matched: "/", settings: rewrite) == "/app/a")
        #expect(PathPrefix.rewrite("/app/a", matched: "/app", settings: HTTPProxySettings()) == "/app/a")
    }
}
