import Foundation
import Testing

/// Plain HTTP/1.1 proxying over loopback: curl and raw sockets as clients, Python's http.server
/// as backends.
@Suite("HTTP reverse proxy over loopback")
struct HTTPProxyTests {
    static func gateway(_ backends: [PythonPeer], route: [String] = [], prefix: String = "/app") async throws -> TestGateway {
        var lines = [
            "listeners: [ { name: plain, address: 127.0.0.1:0 } ]",
            "routes:",
            "  - name: app",
            "    match: { path_prefix: \(prefix) }",
            "    backends: [\(backends.map { "\"http://127.0.0.1:\($0.port)\"" }.joined(separator: ", "))]",
        ]
        lines += route.map { "    " + $0 }
        return try await TestGateway(yaml: lines.joined(separator: "\n"))
    }

    func url(_ gateway: TestGateway, _ path: String) -> String { "http://127.0.0.1:\(gateway.port("plain"))\(path)" }

    @Test("a request reaches the backend with end-to-end headers, forwarding headers and Via; hop-by-hop and spoofed identity headers are gone; the prefix can be stripped")
    func headers() async throws {
        let backend = try await PythonPeer(["http-backend", "one"])
        let gateway = try await Self.gateway([backend], route: ["http: { strip_prefix: true }"])
        let result = try await Curl.run([
            "-H", "X-Sluice-User: root", "-H", "Connection: keep-alive, X-Drop", "-H", "X-Drop: 1", "-H", "X-Keep: 2",
            "-H", "X-Forwarded-For: 10.9.9.9", url(gateway, "/app/a/../b?q=1"),
        ])
        await gateway.stop()
        backend.stop()
        #expect(result.status == 200)
        #expect(result.headers["via"] == "1.1 sluice")
        let seen = try #require(result.json, "\(result.body)")
        #expect(seen["path"] as? String == "/b?q=1")
        let headers = try #require(seen["headers"] as? [String: String])
        #expect(headers["x-keep"] == "2")
        #expect(headers["x-drop"] == nil)
        #expect(headers["x-sluice-user"] == nil)
        #expect(headers["x-forwarded-for"] == "127.0.0.1")
        #expect(headers["x-forwarded-proto"] == "http")
        #expect(headers["via"] == "1.1 sluice")
        #expect(result.headers["keep-alive"] == nil, "hop-by-hop response header passed through")
    }

    @Test("https backends: verified against a CA file with the configured name, refused (502) when the name does not match; rewrite_prefix; https all the way, chunked and kept alive")
    func httpsBackend() async throws {
        let directory = try Scratch.directory("sluice-https-")
        try TestCertificateAuthority.write(serverName: "app.test", in: directory)
        let backend = try await PythonPeer(["http-backend", "secure", "\(directory)/server.pem,\(directory)/server-key.pem"])
        let gateway = try await TestGateway(yaml: """
            listeners:
              - { name: plain, address: 127.0.0.1:0 }
              - { name: secure, address: 127.0.0.1:0, tls: { certificates: [ { cert: \(directory)/server.pem, key: \(directory)/server-key.pem } ] } }
            routes:
              - name: good
                match: { path_prefix: /good }
                backends: ["https://127.0.0.1:\(backend.port)"]
                backend_tls: { ca_file: \(directory)/ca.pem, server_name: app.test }
                http: { rewrite_prefix: /v2 }
              - name: wrong
                match: { path_prefix: /wrong }
                backends: ["https://127.0.0.1:\(backend.port)"]
                backend_tls: { ca_file: \(directory)/ca.pem, server_name: other.test }
            """)
        let good = try await Curl.run([url(gateway, "/good/x?y=1")])
        let wrong = try await Curl.run([url(gateway, "/wrong/x")])
        let port = gateway.port("secure")
        let secure = "https://app.test:\(port)"
        let both = try await Curl.run([], shell: """
            curl -s --cacert \(directory)/ca.pem --resolve app.test:\(port):127.0.0.1 -o /dev/null -o /dev/null \
              -w '%{http_code}:%{num_connects}:%{size_download} ' \(secure)/good/sse \(secure)/good/a
            """)
        await gateway.stop()
        backend.stop()
        // The SSE body: four events of 15 bytes, chunked by Sluice over TLS; then a second request on the same connection.
        #expect(both.body.hasPrefix("200:1:60 200:0:"), "\(both.body)")
        #expect(good.status == 200 && good.json?["backend"] as? String == "secure", "\(good.body)")
        #expect(good.json?["path"] as? String == "/v2/x?y=1")
        #expect(wrong.status == 502, "\(wrong.status) \(wrong.body)")
    }

    @Test("curl --http2 on a plain URL offers h2c: the offer is ignored, both requests answered over HTTP/1.1")
    func h2cOfferIgnored() async throws {
        let backend = try await PythonPeer(["http-backend", "one"])
        let gateway = try await Self.gateway([backend])
        // curl offers the upgrade on the first request of its connection and sends the second
        // after it: the second must not wait behind a decoder that stopped reading.
        let result = try await Curl.run([], shell: "curl -s --http2 --max-time 20 -w ' %{http_code}\\n' '\(url(gateway, "/app/1"))' '\(url(gateway, "/app/2"))'")
        await gateway.stop()
        backend.stop()
        let lines = result.body.split(separator: "\n")
        #expect(lines.count == 2 && lines.allSatisfy { $0.hasSuffix(" 200") }, "\(result.body)")
        #expect(!result.body.lowercased().contains("h2c") && !result.body.lowercased().contains("http2-settings"), "the upgrade reached the backend: \(result.body)")
    }

    @Test("keep-alive: pipelined requests are answered in order, over one reused backend connection")
    func pipelining() async throws {
        let backend = try await PythonPeer(["http-backend", "one"])
        let gateway = try await Self.gateway([backend])
        let requests = ((1...3).map { "GET /app/r\($0) HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" } + ["GET /app/stats HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"]).joined()
        let result = try await PythonPeer.run(["http-exchange", "127.0.0.1", "\(gateway.port("plain"))", requests, "4"])
        var responses = try #require(result["responses"] as? [[String: Any]])
        #expect(responses.count == 4)
        let stats = responses.popLast().flatMap { try? JSONSerialization.jsonObject(with: Data(($0["body"] as? String ?? "").utf8)) as? [String: Any] }
        let paths = responses.compactMap { response in
            (try? JSONSerialization.jsonObject(with: Data((response["body"] as? String ?? "").utf8)) as? [String: Any])?["path"] as? String
        }
        #expect(paths == ["/app/r1", "/app/r2", "/app/r3"])
        #expect(result["closed"] as? Bool == false, "keep-alive: the client connection stays open")
        #expect((stats?["connections"] as? Int) == 1, "one backend connection carried every request: \(String(describing: stats))")
        await gateway.stop()
        backend.stop()
    }

    @Test("1 GiB up and 1 GiB down stream through with the gateway's memory bounded; slow readers of sized and chunked bodies too", .loadTest)
    func largeBodies() async throws {
        let backend = try await PythonPeer(["http-backend", "one"])
        let gateway = try await Self.gateway([backend])
        let before = residentBytes()
        let upload = try await Curl.run([], shell: "head -c 1073741824 /dev/zero | curl -s --max-time 300 -T - -H 'Content-Type: application/octet-stream' \(url(gateway, "/app/upload"))", timeout: 300)
        let uploaded = try #require(try JSONSerialization.jsonObject(with: Data(upload.body.utf8)) as? [String: Any], "\(upload.body)")
        #expect(uploaded["received"] as? Int == 1 << 30)
        let afterUpload = residentBytes()
        let download = try await Curl.run([], shell: "curl -s --max-time 300 -o /dev/null -w '%{http_code} %{size_download}' \(url(gateway, "/app/download?bytes=1073741824"))", timeout: 300)
        let afterDownload = residentBytes()
        // Clients reading slower than the backend writes: the backend is read only as fast as
        // they take it, for a sized body and for a chunked one (re-chunked by Sluice).
        var slow: [String] = []
        var slowGrowth: [Int] = []
        for query in ["bytes=67108864", "bytes=67108864&chunked=1"] {
            let start = residentBytes()
            let result = try await Curl.run([], shell: "curl -s --max-time 300 --limit-rate 16M -o /dev/null -w '%{http_code} %{size_download}' '\(url(gateway, "/app/download?" + query))'", timeout: 300)
            slow.append(result.body)
            slowGrowth.append((residentBytes() - start) >> 20)
        }
        await gateway.stop()
        backend.stop()
        #expect(download.body == "200 1073741824", "\(download.body)")
        #expect(slow == ["200 67108864", "200 67108864"], "\(slow)")
        #expect(slowGrowth.allSatisfy { $0 < 24 }, "RSS grew \(slowGrowth) MiB while slow clients downloaded 64 MiB")
        #expect(afterUpload - before < 128 << 20, "RSS grew \((afterUpload - before) >> 20) MiB on upload")
        #expect(afterDownload - before < 128 << 20, "RSS grew \((afterDownload - before) >> 20) MiB on download")
    }

    @Test("server-sent events reach the client one by one, as the backend sends them")
    func serverSentEvents() async throws {
        let backend = try await PythonPeer(["http-backend", "one"])
        let gateway = try await Self.gateway([backend])
        // Each event is acknowledged to the backend directly as soon as the client has it; the
        // backend sends the next only then. Events held back by the proxy would never be
        // acknowledged, and the backend's last event says whether each one was.
        let script = """
            import socket, json, urllib.request
            s = socket.create_connection(("127.0.0.1", \(gateway.port("plain"))))
            s.sendall(b"GET /app/sse-acked HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
            seen, data = 0, b""
            while b"data: acked" not in data or not data.rstrip().endswith(b"0"):
                chunk = s.recv(4096)
                if not chunk: break
                data += chunk
                while b"data: event %d" % seen in data:
                    urllib.request.urlopen("http://127.0.0.1:\(backend.port)/ack?n=%d" % seen).read()
                    seen += 1
            line = data[data.index(b"data: acked") + 12:].split(b"\\n")[0]
            print(json.dumps({"seen": seen, "acked": json.loads(line)}))
            """
        let result = try await Curl.run([], shell: "python3 -c '\(script)'", timeout: 60)
        await gateway.stop()
        backend.stop()
        let answer = try #require(try? JSONSerialization.jsonObject(with: Data(result.body.utf8)) as? [String: Any], "\(result.body)")
        #expect(answer["seen"] as? Int == 4, "\(answer)")
        // Every event reached the client before the backend sent the next one.
        #expect(answer["acked"] as? [Bool] == [true, true, true, true], "events were held back: \(answer)")
    }

    @Test("502 for a refused backend or a malformed answer, 504 for a slow one, 413 over max_request_body, a backend dying mid-response cuts the client off")
    func errors() async throws {
        let backend = try await PythonPeer(["http-backend", "one"])
        let gateway = try await TestGateway(yaml: """
            listeners: [ { name: plain, address: 127.0.0.1:0 } ]
            routes:
              - name: app
                match: { path_prefix: /app }
                backends: ["http://127.0.0.1:\(backend.port)"]
                http: { max_request_body: 1KiB }
              # The backend sleeps 3 s on /slow; the other answers get the default timeout
              # (a loaded machine can take longer than 1 s over them).
              - name: hurried
                match: { path_prefix: /hurried }
                backends: ["http://127.0.0.1:\(backend.port)"]
                http: { response_timeout: 1s }
              - name: dead
                match: { path_prefix: /dead }
                backends: ["http://127.0.0.1:1"]
            """)
        let refused = try await Curl.run([url(gateway, "/dead/x")])
        #expect(refused.status == 502)
        #expect(refused.body.contains("backend unreachable"))
        let slow = try await Curl.run([url(gateway, "/hurried/slow")])
        #expect(slow.status == 504)
        let large = try await Curl.run(["-X", "POST", "--data-binary", String(repeating: "x", count: 4096), url(gateway, "/app/upload")])
        #expect(large.status == 413)
        let chunkedLarge = try await Curl.run([], shell: "head -c 100000 /dev/zero | curl -s -i -T - \(url(gateway, "/app/upload"))")
        #expect(chunkedLarge.status == 413)
        let small = try await Curl.run(["-X", "POST", "--data-binary", "hello", url(gateway, "/app/upload")])
        #expect(small.status == 200 && small.json?["received"] as? Int == 5)
        let garbage = try await Curl.run([url(gateway, "/app/garbage")])
        #expect(garbage.status == 502, "a malformed backend response: \(garbage.status)")
        let died = try await Curl.run([url(gateway, "/app/die")])
        #expect(died.status == 200 && died.exitCode != 0, "curl must see the response cut short (exit \(died.exitCode))")
        await gateway.stop()
        backend.stop()
    }

    @Test("responses are re-framed for the client: a body that runs until the backend closes reaches HTTP/1.1 clients chunked on a kept connection and HTTP/1.0 clients until close; interim 103s are passed over; bytes after a response are never the next one")
    func responseFraming() async throws {
        let backend = try await PythonPeer(["http-backend", "one"])
        let gateway = try await Self.gateway([backend])
        let unframed = try await Curl.run([url(gateway, "/app/unframed")])
        let kept = try await Curl.run([], shell: "curl -s -o /dev/null -o /dev/null -w '%{http_code}:%{num_connects} ' \(url(gateway, "/app/unframed")) \(url(gateway, "/app/a"))")
        let old = try await Curl.run(["--http1.0", url(gateway, "/app/unframed")])
        let early = try await Curl.run([url(gateway, "/app/early")])
        let extra = try await Curl.run([], shell: "curl -s \(url(gateway, "/app/extra")) \(url(gateway, "/app/after"))")
        await gateway.stop()
        backend.stop()
        #expect(unframed.status == 200 && unframed.body == "until close\n", "\(unframed.body)")
        #expect(unframed.headers["transfer-encoding"] == "chunked" && unframed.headers["connection"] == nil)
        #expect(kept.body == "200:1 200:0 ", "the client connection outlived the backend's: \(kept.body)")
        #expect(old.status == 200 && old.body == "until close\n" && old.headers["transfer-encoding"] == nil)
        #expect(old.headers["connection"] == "close")
        #expect(early.status == 200 && early.json?["path"] as? String == "/app/early", "\(early.status) \(early.body)")
        #expect(extra.body.hasPrefix("ok{") && !extra.body.contains("EVIL"), "the stray bytes were dropped with their connection: \(extra.body)")
        #expect(extra.body.contains("\"/app/after\""))
    }

    @Test("a body that stalls past idle_timeout: a request body gets a 504, a response body cuts the client off")
    func stalledBodies() async throws {
        let backend = try await PythonPeer(["http-backend", "one"])
        let gateway = try await Self.gateway([backend], route: ["http: { idle_timeout: 1s }"])
        let port = "\(gateway.port("plain"))"
        let request = try await PythonPeer.run([
            "http-exchange", "127.0.0.1", port, "POST /app/upload HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 100\\r\\n\\r\\nonly ten..", "1",
        ])
        // The backend stalls for 60 s, past the client's 10 s read timeout: only the gateway's
        // idle timeout can close the connection in time, however loaded the machine is.
        let response = try await PythonPeer.run(["http-exchange", "127.0.0.1", port, "GET /app/stall?s=60 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n", "1"])
        await gateway.stop()
        backend.stop()
        let answered = try #require(request["responses"] as? [[String: Any]])
        #expect(answered.first?["status"] as? Int == 504, "\(request)")
        #expect((answered.first?["body"] as? String)?.contains("stalled") == true)
        // The stalled response: its head and ten bytes went out, then the gateway closed the
        // connection, long before the backend's 60 s stall or the client's 10 s read timeout.
        #expect((response["responses"] as? [Any])?.isEmpty == true, "\(response)")
        #expect(response["closed"] as? Bool == true && response["timed_out"] as? Bool == false,
                "the stall ends at the 1 s idle timeout: \(response)")
    }

    @Test("plain requests: request_rate_per_ip answers 429 with Retry-After; a foreign Origin is 403, a missing one is fine")
    func requestLimitsAndOrigin() async throws {
        let backend = try await PythonPeer(["http-backend", "one"])
        let gateway = try await Self.gateway([backend], route: [
            "limits: { request_rate_per_ip: { rate: 1/m, burst: 2 } }", "origin: { allowed: [\"https://app.test\"] }",
        ])
        let foreign = try await Curl.run(["-H", "Origin: https://evil.test", "-X", "POST", "--data-binary", "x", url(gateway, "/app/upload")])
        let same = try await Curl.run(["-H", "Origin: https://app.test", url(gateway, "/app/a")])
        let none = try await Curl.run([url(gateway, "/app/b")])
        let limited = try await Curl.run([url(gateway, "/app/c")])
        await gateway.stop()
        backend.stop()
        #expect(foreign.status == 403)
        #expect(same.status == 200 && none.status == 200)
        #expect(limited.status == 429, "the third request from one address, past the burst of 2 (the 403 spent none)")
        #expect(limited.headers["retry-after"].flatMap(Int.init).map { $0 > 1 } == true)
    }

    @Test("a kept-alive backend connection found dead: an idempotent GET is sent again, a POST with a body is not (502)")
    func staleKeepAliveRetry() async throws {
        let backend = try await PythonPeer(["http-flaky"])
        let gateway = try await Self.gateway([backend])
        // One client connection (curl reuses it), so both requests use its event loop's pool.
        let gets = try await Curl.run([], shell: "curl -s \(url(gateway, "/app/first")) \(url(gateway, "/app/second")) -w ' %{http_code}'")
        #expect(gets.body.hasSuffix(" 200"), "\(gets.body)")
        #expect(gets.body.contains("GET /app/second"), "the second GET reached the backend on a fresh connection: \(gets.body)")
        let post = try await Curl.run([], shell: "curl -s -o /dev/null -w '%{http_code} ' \(url(gateway, "/app/third")) --next -s -o /dev/null -w '%{http_code}' -X POST --data-binary payload \(url(gateway, "/app/fourth"))")
        await gateway.stop()
        backend.stop()
        #expect(post.body == "200 502", "a POST whose connection died is not replayed: \(post.body)")
    }

    @Test(
        "a backend's Keep-Alive timeout bounds the pool: Node's announced timeout, less a second, is how long its connection is reused",
        .enabled(if: FileManager.default.fileExists(atPath: "/usr/bin/node"), "needs node (apt nodejs)")
    )
    func backendKeepAliveTimeout() async throws {
        /// The answers through Sluice to Node's server with this keep-alive, each step on one client
        /// connection (Python's http.client), so on one event loop's pool.
        func answers(keepAlive milliseconds: Int, _ steps: String) async throws -> [[String: Any]] {
            let script = PythonPeer.directory.appendingPathComponent("keepalive_server.js").path
            let backend = try await PythonPeer(executable: "/usr/bin/node", arguments: [script, "\(milliseconds)"])
            defer { backend.stop() }
            let gateway = try await Self.gateway([backend])
            let result = try await PythonPeer.run(["http-sequence", "127.0.0.1", "\(gateway.port("plain"))", steps])
            await gateway.stop()
            let answers = try #require(result["answers"] as? [[String: Any]], "\(result)")
            #expect(answers.map { $0["status"] as? Int } == [200, 200], "\(answers)")
            return answers
        }
        func onConnection(_ answer: [String: Any]) -> Int? { (answer["body"] as? [String: Any])?["onConnection"] as? Int }

        // Node's default, 5 s: back to back, the second request (a POST) reuses the connection.
        let reused = try await answers(keepAlive: 5000, #"[["GET", "/app/a", 0], ["POST", "/app/b", 0]]"#)
        #expect(reused.map(onConnection) == [1, 2], "the POST came on the GET's connection: \(reused)")
        // `Keep-Alive: timeout=1` leaves no second of margin: never kept, each request on its own.
        let fresh = try await answers(keepAlive: 1000, #"[["GET", "/app/a", 0], ["POST", "/app/b", 0]]"#)
        #expect(fresh.map(onConnection) == [1, 1], "a connection announced for 1 s is not pooled: \(fresh)")
        // `timeout=3`: kept 2 s. A POST 2.5 s later goes on a new connection, not on the one the
        // backend is about to close (were the wait past 3 s, Node would have closed it itself).
        let later = try await answers(keepAlive: 3000, #"[["GET", "/app/a", 0], ["POST", "/app/b", 2.5]]"#)
        #expect(later.map(onConnection) == [1, 1], "the pool let go of the connection before the backend's timeout: \(later)")
    }

    @Test("request smuggling shapes are refused with 400 and a closed connection")
    func smuggling() async throws {
        let backend = try await PythonPeer(["http-backend", "one"])
        let gateway = try await Self.gateway([backend])
        let port = "\(gateway.port("plain"))"
        let cases = [
            "POST /app/x HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 5\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n",
            "POST /app/x HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 5\\r\\nContent-Length: 6\\r\\n\\r\\nhello!",
            "POST /app/x HTTP/1.1\\r\\nHost: x\\r\\nTransfer-Encoding: gzip, chunked\\r\\n\\r\\n0\\r\\n\\r\\n",
            "POST /app/x HTTP/1.1\\r\\nHost: x\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\nzz\\r\\nhello\\r\\n0\\r\\n\\r\\n",
            "GET /app/x HTTP/1.1\\r\\nHost: x\\r\\nX-Folded: a\\r\\n  b\\r\\n\\r\\n",
        ]
        for payload in cases {
            let result = try await PythonPeer.run(["http-exchange", "127.0.0.1", port, payload, "1"])
            let status = (result["responses"] as? [[String: Any]])?.first?["status"] as? Int
            #expect(status == 400, "\(payload) → \(result)")
            #expect(result["closed"] as? Bool == true, "\(payload) left the connection open")
        }
        let stats = try await Curl.run([url(gateway, "/app/stats")])
        #expect((stats.json?["requests"] as? Int) == 1, "no smuggled request reached the backend: \(stats.body)")
        await gateway.stop()
        backend.stop()
    }

    @Test("HEAD, 204 and 304 carry no body; Expect: 100-continue is answered; a chunked upload is re-framed")
    func bodiless() async throws {
        let backend = try await PythonPeer(["http-backend", "one"])
        let gateway = try await Self.gateway([backend])
        let head = try await Curl.run(["-I", url(gateway, "/app/x")])
        #expect(head.status == 200 && head.body.isEmpty)
        let requests = "GET /app/204 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /app/304 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /app/after HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
        let result = try await PythonPeer.run(["http-exchange", "127.0.0.1", "\(gateway.port("plain"))", requests, "3"])
        let responses = try #require(result["responses"] as? [[String: Any]])
        #expect(responses.compactMap { $0["status"] as? Int } == [204, 304, 200], "\(result)")
        #expect((responses.last?["body"] as? String)?.contains("/app/after") == true)
        let expect = try await Curl.run(["-H", "Expect: 100-continue", "-X", "POST", "--data-binary", String(repeating: "y", count: 2000), url(gateway, "/app/upload")])
        #expect(expect.status == 200 && expect.json?["received"] as? Int == 2000)
        #expect((expect.json?["headers"] as? [String: String])?["expect"] == nil)
        let chunked = try await Curl.run(["-H", "Transfer-Encoding: chunked", "--data-binary", "abcdef", url(gateway, "/app/upload")])
        #expect(chunked.json?["received"] as? Int == 6)
        await gateway.stop()
        backend.stop()
    }

    @Test("a client that half-closes after pipelining its requests gets every answer, then the close; an idle half-close is closed")
    func halfClose() async throws {
        let backend = try await PythonPeer(["http-backend", "one"])
        let gateway = try await Self.gateway([backend])
        let port = "\(gateway.port("plain"))"
        // The first answer takes 0.4 s: the client's FIN arrives while it is being proxied.
        let requests = "GET /app/pause HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /nowhere HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /app/last HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
        let pipelined = try await PythonPeer.run(["http-exchange", "127.0.0.1", port, requests, "3", "half-close"])
        let idle = try await PythonPeer.run(["http-exchange", "127.0.0.1", port, "", "1", "half-close"])
        await gateway.stop()
        backend.stop()
        let responses = try #require(pipelined["responses"] as? [[String: Any]])
        #expect(responses.compactMap { $0["status"] as? Int } == [200, 404, 200], "\(pipelined)")
        #expect((responses.last?["body"] as? String)?.contains("/app/last") == true)
        #expect(pipelined["closed"] as? Bool == true)
        #expect((idle["responses"] as? [Any])?.isEmpty == true)
        #expect(idle["closed"] as? Bool == true)
    }

    @Test("balancing: round robin alternates, a cookie or the client address pins a backend, a dead backend is skipped")
    func balancing() async throws {
        let one = try await PythonPeer(["http-backend", "one"])
        let two = try await PythonPeer(["http-backend", "two"])
        let robin = try await Self.gateway([one, two])
        var seen: [String] = []
        for _ in 0..<4 { seen.append(try await Curl.run([url(robin, "/app/who")]).headers["x-backend"] ?? "?") }
        #expect(Set(seen) == ["one", "two"], "\(seen)")
        await robin.stop()

        let cookie = try await Self.gateway([one, two], route: ["balance: { sticky: cookie }"])
        let first = try await Curl.run([url(cookie, "/app/who")])
        let setCookie = try #require(first.headers["set-cookie"], "\(first.headers)")
        let value = String(setCookie.split(separator: ";")[0])
        for _ in 0..<4 {
            let again = try await Curl.run(["-H", "Cookie: \(value)", url(cookie, "/app/who")])
            #expect(again.headers["x-backend"] == first.headers["x-backend"])
            #expect(again.headers["set-cookie"] == nil)
        }
        await cookie.stop()

        let hashed = try await Self.gateway([one, two], route: ["balance: { sticky: ip }"])
        var pinned = Set<String>()
        for _ in 0..<4 { pinned.insert(try await Curl.run([url(hashed, "/app/who")]).headers["x-backend"] ?? "?") }
        #expect(pinned.count == 1)
        await hashed.stop()

        let withDead = try await TestGateway(yaml: """
            listeners: [ { name: plain, address: 127.0.0.1:0 } ]
            routes:
              - name: app
                match: { path_prefix: /app }
                backends: ["http://127.0.0.1:1", "http://127.0.0.1:\(one.port)"]
                balance: { policy: least_connections, max_fails: 1, cool_down: 30s }
            """)
        for _ in 0..<4 {
            #expect(try await Curl.run([url(withDead, "/app/who")]).headers["x-backend"] == "one")
        }
        await withDead.stop()
        one.stop()
        two.stop()
    }
}

/// python-socketio through Sluice: long-polling first, then the WebSocket upgrade, which must
/// reach the backend that holds the session.
@Suite("Socket.IO through Sluice")
struct SocketIOTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers/socketio_peer.py").path

    static func gateway(_ one: PythonPeer, _ two: PythonPeer, sticky: Bool) async throws -> TestGateway {
        try await TestGateway(yaml: """
            listeners: [ { name: plain, address: 127.0.0.1:0 } ]
            routes:
              - name: realtime
                match: { path_prefix: /socket.io }
                backends: ["http://127.0.0.1:\(one.port)", "http://127.0.0.1:\(two.port)"]
                balance: { sticky: \(sticky ? "cookie" : "none") }
            """)
    }

    @Test("with cookie stickiness a client polls, upgrades and talks to one backend; without it, two backends break the session")
    func stickiness() async throws {
        let one = try await PythonPeer(["server", "one"], script: Self.script)
        let two = try await PythonPeer(["server", "two"], script: Self.script)
        let sticky = try await Self.gateway(one, two, sticky: true)
        for _ in 0..<3 {
            // 20 s a request: beside the whole suite a poll has waited past 5.
            let result = try await PythonPeer.run(["client", "http://127.0.0.1:\(sticky.port("plain"))", "20"], script: Self.script, timeout: 180)
            #expect(result["error"] == nil, "\(result)")
            #expect(result["transport"] as? String == "websocket", "\(result)")
            #expect((result["servers"] as? [String])?.count == 1, "\(result)")
            #expect((result["server_transports"] as? [String]) == Array(repeating: "websocket", count: 5), "\(result)")
            #expect((result["echoes"] as? [String]) == (0..<5).map { "message \($0)" })
        }
        await sticky.stop()

        let loose = try await Self.gateway(one, two, sticky: false)
        var failures = 0
        for _ in 0..<3 {
            // A session split over two backends may also leave the client hanging (its threads
            // wait on a session the other backend never heard of): that is a break as well.
            guard let result = try? await PythonPeer.run(["client", "http://127.0.0.1:\(loose.port("plain"))"], script: Self.script, timeout: 30) else {
                failures += 1
                continue
            }
            if result["error"] != nil || (result["servers"] as? [String])?.count != 1 || result["transport"] as? String != "websocket" { failures += 1 }
        }
        #expect(failures > 0, "round robin over two Socket.IO backends should break sessions; stickiness is what prevents it")
        await loose.stop()
        one.stop()
        two.stop()
    }
}

/// Debian's node-sockjs server behind Sluice and Debian's sockjs-client in headless Chromium
/// through Sluice, each transport forced in turn. Needs chromium and node-sockjs (`.ci/run`
/// installs them); without them the suite says so and is skipped.
@Suite("SockJS through Sluice", .enabled(if: sockJSPeersInstalled(), "needs chromium, node, node-sockjs and node-sockjs-client (apt)"))
struct SockJSTests {
    static let browser = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Conformance/browser/browser_test.py").path


    @Test("websocket, xhr-streaming, xhr-polling and eventsource all echo; streamed pushes arrive one by one")
    func transports() async throws {
        // Debian's node modules live in /usr/share/nodejs, which a node not from Debian does not search.
        let server = try await PythonPeer(
            executable: "/usr/bin/node", arguments: [PythonPeer.directory.appendingPathComponent("sockjs_server.js").path],
            environment: ["NODE_PATH": "/usr/share/nodejs"]
        )
        let log = Scratch.path("sluice-sockjs-", suffix: ".log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let gateway = try await TestGateway(yaml: """
            access_log: \(log)
            listeners: [ { name: plain, address: 127.0.0.1:0 } ]
            routes:
              - name: app
                match: { path_prefix: / }
                backends: ["http://127.0.0.1:\(server.port)"]
            """)
        let result = try await PythonPeer.run(["--page", "http://127.0.0.1:\(gateway.port("plain"))/page"], script: Self.browser, timeout: 120)
        await gateway.stop()
        server.stop()
        // What the gateway answered, for a failure's message.
        let answers = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n")
            .map { line in line.split(separator: ",").filter { $0.contains("\"status\"") || $0.contains("\"path\"") || $0.contains("rejection") }.joined(separator: ",") }
        for transport in ["websocket", "xhr-streaming", "xhr-polling", "eventsource"] {
            let outcome = try #require(result[transport] as? [String: Any], "\(transport): \(result)")
            #expect(outcome["echo"] as? Bool == true, "\(transport): \(outcome); the gateway answered: \(answers.suffix(30))")
            #expect(outcome["used"] as? String == transport, "\(transport): \(outcome)")
            // Each push is sent only after the page acknowledged the one before it (Peers/
            // sockjs_server.js): three arriving means none was held back in a streamed response.
            let ticks = outcome["ticks"] as? [Int] ?? []
            #expect(ticks.count == 3, "\(transport): \(outcome)")
        }
    }
}

func sockJSPeersInstalled() -> Bool {
    ["/usr/bin/chromium", "/usr/bin/node", "/usr/share/nodejs/sockjs/index.js", "/usr/share/nodejs/sockjs-client/dist/sockjs.min.js"]
        .allSatisfy { FileManager.default.fileExists(atPath: $0) }
}
