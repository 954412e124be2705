import Foundation
import NIOPosix
import Sluice
import Testing

/// `sluice-bench` as the benchmarks run it, and the built-in echo backend's permessage-deflate,
/// each against peers over loopback.
@Suite("sluice-bench and compressed echo")
struct BenchToolTests {
    /// `sluice-bench` sits next to the test bundle in the build directory, like `sluice`.
    static var executable: String {
        URL(fileURLWithPath: SluiceProcess.executable).deletingLastPathComponent().appendingPathComponent("sluice-bench").path
    }

    /// Runs `sluice-bench` with `arguments` (bounded to a minute); its exit status, the JSON
    /// object it printed last (if any), and everything it printed.
    static func bench(_ arguments: [String]) async throws -> (status: Int32, json: [String: Any]?, output: String) {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        for _ in 0..<1200 where process.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        if process.isRunning { process.terminate() }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let last = text.split(separator: "\n").last { $0.hasPrefix("{") }
        let json = last.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        return (process.terminationStatus, json, text)
    }

    static func number(_ json: [String: Any]?, _ key: String) -> Double? {
        (json?[key] as? NSNumber)?.doubleValue
    }

    /// Starts a serving subcommand of `sluice-bench` (it stops by itself at its `--duration`)
    /// and reads its port from the line it prints once listening. The caller terminates it.
    static func serve(_ arguments: [String]) throws -> (process: ChildProcess, port: Int) {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        var line = ""
        while !line.contains("\n") {
            let data = output.fileHandleForReading.availableData
            if data.isEmpty { break }
            line += String(decoding: data, as: UTF8.self)
        }
        guard let port = line.split(separator: ":").last.flatMap({ Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) else {
            process.terminate()
            throw PeerError(message: "sluice-bench \(arguments.first ?? "") printed no port: \(line)")
        }
        return (process, port)
    }

    @Test("Python websockets negotiates permessage-deflate with the built-in echo through Sluice; every message shape round-trips")
    func compressedEchoWithRealClient() async throws {
        // Its own loop, and a 1 MiB large message rather than 16: compressing blocks the
        // echo's event loop, which must not stall the other tests' gateways.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let echo = try await EchoBackend.start(group: group, deflate: true)
        let gateway = try await TestGateway.relay(to: "ws://127.0.0.1:\(echo.port)")
        let result = try await PythonPeer.run(["client", "echo", "ws://127.0.0.1:\(gateway.port("plain"))/ws", #"{"big": 1048576}"#])
        await gateway.stop()
        await echo.stop()
        try await group.shutdownGracefully()
        #expect(result["error"] == nil, "\(result)")
        #expect(result["checks"] as? [Bool] == [true, true, true, true, true])
        #expect((result["extensions"] as? [String]) == ["PerMessageDeflate"])
        #expect(result["close_code"] as? Int == 4000)
    }

    @Test("load --deflate through Sluice: compressed messages flow with no errors; against a server without deflate it says so")
    func loadDeflate() async throws {
        let echo = try await EchoBackend.start(group: MultiThreadedEventLoopGroup.singleton, deflate: true)
        let plainEcho = try await EchoBackend.start(group: MultiThreadedEventLoopGroup.singleton)
        let gateway = try await TestGateway.relay(to: "ws://127.0.0.1:\(echo.port)")
        let url = "ws://127.0.0.1:\(gateway.port("plain"))/ws"
        // Open loop at a modest rate: a closed loop would take both cores from the tests running
        // beside this one (some of which time their events).
        // 5 s: beside the whole suite a debug build has completed no round trip in 2.
        let compressed = try await Self.bench(["load", "--url", url, "--connections", "4", "--duration", "5", "--rate", "200", "--deflate", "--json"])
        let open = try await Self.bench(["load", "--url", url, "--connections", "2", "--duration", "1", "--rate", "200", "--json"])
        let refused = try await Self.bench(["load", "--url", "ws://127.0.0.1:\(plainEcho.port)/", "--connections", "1", "--duration", "1", "--deflate"])
        let outside = try await Self.bench(["load", "--url", "ws://192.0.2.1:80/", "--duration", "1"])
        await gateway.stop()
        await echo.stop()
        await plainEcho.stop()

        #expect(compressed.status == 0, "\(compressed.output)")
        #expect(Self.number(compressed.json, "deflate") == 1)
        #expect((Self.number(compressed.json, "messages_per_second") ?? 0) > 0, "\(compressed.output)")
        #expect(Self.number(compressed.json, "errors") == 0)
        // Open loop at 200 msgs/s for a second: the schedule, not the replies, sets what is sent —
        // never more than it, and near it unless the machine stalls the sender (a loaded test run
        // can hold its 1 ms ticker back past the end).
        #expect(open.status == 0, "\(open.output)")
        #expect((100...201).contains(Self.number(open.json, "messages_sent") ?? 0), "\(open.output)")
        #expect(refused.status != 0)
        #expect(refused.output.contains("did not accept permessage-deflate"), "\(refused.output)")
        #expect(outside.status != 0)
        #expect(outside.output.contains("only targets loopback"), "\(outside.output)")
    }

    @Test("tunnel (NIO and io_uring engines) relays HTTP byte for byte to a real backend, two requests on one kept-alive connection; it refuses targets off loopback", arguments: ["nio", "uring"])
    func tunnel(engine: String) async throws {
        let backend = try await PythonPeer(["http-backend", "one"])
        defer { backend.stop() }
        let (process, port) = try Self.serve(["tunnel", "--engine", engine, "--backend", "127.0.0.1:\(backend.port)", "--duration", "300"])
        defer { process.terminate() }
        let probe = try await Curl.run(["-H", "X-Probe: 7", "http://127.0.0.1:\(port)/a?x=1"])
        #expect(probe.status == 200, "\(probe.body)")
        #expect(probe.json?["path"] as? String == "/a?x=1", "\(probe.body)")
        #expect((probe.json?["headers"] as? [String: String])?["x-probe"] == "7", "the request went through unchanged: \(probe.body)")
        // curl keeps the connection for the second URL: both answers come through it, in order.
        let both = try await Curl.run(["http://127.0.0.1:\(port)/a", "http://127.0.0.1:\(port)/b"])
        let first = both.body.range(of: #""path": "/a""#), second = both.body.range(of: #""path": "/b""#)
        #expect(both.status == 200 && first != nil && second != nil && first!.lowerBound < second!.lowerBound, "\(both.body)")
        // 100 KiB up and back through the engine's buffers, intact.
        let upload = try await Curl.run([], shell: "head -c 102400 /dev/urandom > /tmp/sluice-tunnel-\(engine).bin && curl -s -T /tmp/sluice-tunnel-\(engine).bin http://127.0.0.1:\(port)/upload")
        #expect((upload.json?["received"] as? Int) == 102_400, "\(upload.body)")
        let refused = try await Self.bench(["tunnel", "--engine", engine, "--backend", "192.0.2.1:80", "--duration", "1"])
        #expect(refused.status != 0 && refused.output.contains("loopback"), "\(refused.output)")
    }

    @Test("the floors answer: h1floor over HTTP/1.1, h2floor over h2 with a child channel per stream, on the connection's frames and on Sluice's own frame layer (with its checks and defences against real peers), and as a proxy through a keep-alive HTTP/1.1 backend on frames and on Sluice's layer (502 once it is gone, or when it does not answer in time)")
    func floors() async throws {
        let directory = try Scratch.directory("sluice-floors-")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try TestCertificateAuthority.write(serverName: "localhost", in: directory)
        // The floors serve for a bounded time and are stopped at the end; the bound is far past
        // what the test takes on a loaded machine (a 60 s bound once ended the backend early).
        let tls = ["--cert", "\(directory)/server.pem", "--key", "\(directory)/server-key.pem", "--duration", "600"]
        let h1 = try Self.serve(["h1floor", "--duration", "600"])
        defer { h1.process.terminate() }
        let plain = try await Curl.run(["--http1.1", "http://127.0.0.1:\(h1.port)/"])
        #expect(plain.status == 200 && plain.body.count == 64, "\(plain)")
        for mode in ["streams", "frames", "raw"] {
            let h2 = try Self.serve(["h2floor", "--mode", mode] + tls)
            defer { h2.process.terminate() }
            let answer = try await Curl.run(["-k", "--http2", "https://127.0.0.1:\(h2.port)/"])
            #expect(answer.status == 200 && answer.body.count == 64, "\(mode): \(answer)")
        }
        // The raw floor on Sluice's own frame layer: a header block past one frame comes in
        // CONTINUATION frames, and a second request on the same connection (its HPACK tables
        // kept) and many streams at once are answered too.
        let raw = try Self.serve(["h2floor", "--mode", "raw"] + tls)
        defer { raw.process.terminate() }
        let long = String(repeating: "x", count: 20_000)
        let continued = try await Curl.run([], shell: "curl -sk --http2 -H 'X-Long: \(long)' -o /dev/null -o /dev/null -w '%{http_code} %{size_download} %{num_connects}\\n' https://127.0.0.1:\(raw.port)/ https://127.0.0.1:\(raw.port)/again")
        #expect(continued.body == "200 64 1\n200 64 0\n", "\(continued.body)")
        let many = try await Curl.run([], shell: "h2load -n 200 -c 1 -m 10 https://127.0.0.1:\(raw.port)/ 2>&1")
        #expect(many.body.contains("200 succeeded, 0 failed"), "\(many.body)")
        // A malformed request (RFC 9113 §8.2.2: TE other than "trailers") is refused on its
        // stream, by nghttp, which no one here wrote.
        let malformed = try await Curl.run([], shell: "nghttp -v -H 'te: gzip' https://127.0.0.1:\(raw.port)/ 2>&1")
        #expect(malformed.body.contains("recv RST_STREAM") && malformed.body.contains("PROTOCOL_ERROR"), "\(malformed.body)")
        // The layer's defences against Python's h2 driven as an attacker (HTTP2Tests' peer): a
        // rapid-reset loop, a CONTINUATION flood and a PING flood each end in GOAWAY
        // ENHANCE_YOUR_CALM; a connection-specific field resets its stream; the floor serves on.
        for scenario in ["rapid-reset", "continuation-flood", "ping-flood"] {
            let attack = try await PythonPeer.run([scenario, "127.0.0.1", "\(raw.port)", #"{"count": 1000}"#], script: HTTP2Tests.peer)
            #expect((attack["goaway"] as? [String: Any])?["error"] as? Int == 11 && attack["closed"] as? Bool == true, "\(scenario): \(attack)")
        }
        let field = try await PythonPeer.run(["request", "127.0.0.1", "\(raw.port)", #"{"path": "/a", "headers": [["connection", "keep-alive"]]}"#], script: HTTP2Tests.peer)
        #expect(field["reset"] as? Int == 1, "\(field)")
        let served = try await PythonPeer.run(["request", "127.0.0.1", "\(raw.port)", #"{"path": "/a"}"#], script: HTTP2Tests.peer)
        #expect(served["status"] as? Int == 200, "\(served)")
        for mode in ["proxy", "raw-proxy"] {
            let proxy = try Self.serve(["h2floor", "--mode", mode, "--backend", "127.0.0.1:\(h1.port)"] + tls)
            defer { proxy.process.terminate() }
            // Many streams on few connections: each request reaches the backend and its answer
            // comes back on its own stream.
            let load = try await Curl.run([], shell: "h2load -n 400 -c 2 -m 20 https://127.0.0.1:\(proxy.port)/ 2>&1")
            #expect(load.body.contains("400 succeeded, 0 failed") && load.body.contains("400 2xx"), "\(mode): \(load.body)")
        }
        let proxy = try Self.serve(["h2floor", "--mode", "proxy", "--backend", "127.0.0.1:\(h1.port)"] + tls)
        defer { proxy.process.terminate() }
        h1.process.terminate()
        h1.process.waitUntilExit()
        let gone = try await Curl.run(["-k", "--http2", "https://127.0.0.1:\(proxy.port)/"])
        #expect(gone.status == 502, "\(gone)")
        // A backend that accepts, reads and never answers nor closes: the stream gets a 502 at
        // the floor's backend timeout.
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        defer { silent.close(promise: nil) }
        let waiting = try Self.serve(["h2floor", "--mode", "proxy", "--backend", "127.0.0.1:\(silent.localAddress!.port!)", "--backend-timeout", "1"] + tls)
        defer { waiting.process.terminate() }
        let late = try await Curl.run(["-k", "--http2", "https://127.0.0.1:\(waiting.port)/"], timeout: 20)
        #expect(late.status == 502, "\(late)")
        let refused = try await Self.bench(["h2floor", "--mode", "proxy"] + tls)
        #expect(refused.status != 0 && refused.output.contains("--backend"), "\(refused.output)")
    }

    @Test("churn runs every fault cell through a sluice process of its own: each outcome as expected, nothing held afterwards")
    func churn() async throws {
        let result = try await Self.bench(["churn", "--connections", "380", "--concurrency", "64", "--json"])
        #expect(result.status == 0, "\(result.output)")
        #expect((result.json?["leaks"] as? [String])?.isEmpty == true, "\(result.output)")
        #expect(Self.number(result.json, "unexpected_outcomes") == 0, "\(result.output)")
        #expect(Self.number(result.json, "missing_outcomes") == 0, "\(result.output)")
        #expect((result.json?["cells"] as? [String: Any])?.count == 19, "\(result.output)")
    }

    @Test("hold opens, holds and proves alive every connection through Sluice")
    func hold() async throws {
        let echo = try await EchoBackend.start(group: MultiThreadedEventLoopGroup.singleton)
        let gateway = try await TestGateway.relay(to: "ws://127.0.0.1:\(echo.port)")
        let result = try await Self.bench([
            "hold", "--url", "ws://127.0.0.1:\(gateway.port("plain"))/ws", "--connections", "50", "--duration", "2", "--interval", "1", "--json",
        ])
        await gateway.stop()
        await echo.stop()
        #expect(result.status == 0, "\(result.output)")
        #expect(Self.number(result.json, "opened") == 50, "\(result.output)")
        #expect(Self.number(result.json, "alive") == 50, "\(result.output)")
        #expect(Self.number(result.json, "failed") == 0, "\(result.output)")
    }
}
