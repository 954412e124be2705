import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Connections that fail at every step, at scale, through a `sluice` process of its own: the
/// fault matrix as a load. Starts a backend that fails or watches as each upgrade's path says,
/// runs sluice in front of it, opens `--connections` connections (each one cell of the mix, a
/// bounded number at once), and then checks that sluice holds exactly what it held before:
/// descriptors, live connections, WebSocket and connection gauges, limit counts.
struct Churn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Open connections that fail at every step through a sluice process, and report leaks.")

    @Option(help: "The sluice executable (default: the one beside sluice-bench).")
    var sluice: String?

    @Option(help: "Connections to open, each one cell of the fault mix.")
    var connections: Int = 20_000

    @Option(help: "Connections in flight at once.")
    var concurrency: Int = 256

    @Option(help: "The route's close_timeout, in seconds (cells that wait on it take that long).")
    var closeTimeout: Int = 1

    @Option(help: "Source addresses to spread over, 127.0.0.2 onwards.")
    var sourceAddresses: Int = 16

    @Flag(help: "Print one JSON object instead of lines.")
    var json = false

    func validate() throws {
        guard (1...200_000).contains(connections) else { throw ValidationError("--connections must be 1...200000") }
        guard (1...4096).contains(concurrency) else { throw ValidationError("--concurrency must be 1...4096") }
        guard (1...30).contains(closeTimeout) else { throw ValidationError("--close-timeout must be 1...30 seconds") }
        guard (1...250).contains(sourceAddresses) else { throw ValidationError("--source-addresses must be 1...250") }
    }

    func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let tally = ChurnTally()
        let backend = try await ChurnBackend.start(group: group, tally: tally)
        defer { backend.close(promise: nil) }
        let process = try SluiceUnderTest(executable: sluice ?? Self.besideMe("sluice"), backendPort: backend.localAddress!.port!, closeTimeout: closeTimeout)
        defer { process.stop() }

        // One clean connection first, so what the first one opens for good is in the baseline
        // (its outcome is not counted).
        try await Self.open(ChurnCell(side: .client, fault: .clean), id: -1, port: process.port, source: nil, group: group, tally: ChurnTally())
        let baseline = try await process.settled(to: nil)
        let rssBefore = process.residentBytes

        let sources = try (0..<sourceAddresses).map { try SocketAddress(ipAddress: "127.0.0.\(2 + $0)", port: 0) }
        let started = ContinuousClock.now
        var failedOpens = 0
        await withTaskGroup(of: Bool.self) { tasks in
            for index in 0..<connections {
                if index >= concurrency, let ok = await tasks.next(), !ok { failedOpens += 1 }
                let cell = ChurnCell.all[index % ChurnCell.all.count]
                let source = sources[index % sources.count]
                tasks.addTask {
                    do {
                        try await Self.open(cell, id: index, port: process.port, source: source, group: group, tally: tally)
                        return true
                    } catch {
                        return false
                    }
                }
            }
            for await ok in tasks where !ok { failedOpens += 1 }
        }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let after = try await process.settled(to: baseline)
        // Held now and not before is a leak; less than before is not (the baseline can catch a
        // descriptor the process had open for a moment, such as a config file being read).
        let leaks = baseline.keys.sorted().filter { (after[$0] ?? .infinity) > baseline[$0]! }.map {
            "\($0): \(Int(baseline[$0]!)) before, \(Int(after[$0] ?? -1)) after"
        }
        let summary = tally.summary(excluding: [-1])
        let unexpected = summary.values.reduce(0) { $0 + $1.unexpected.values.reduce(0, +) }
        var launched: [ChurnCell: Int] = [:]
        for index in 0..<connections { launched[ChurnCell.all[index % ChurnCell.all.count], default: 0] += 1 }
        let missingByCell = launched.compactMapValues { $0 }.map { cell, count in (cell, count - (summary[cell].map { $0.ok + $0.unexpected.values.reduce(0, +) } ?? 0)) }.filter { $0.1 > 0 && !$0.0.mayGoUnwatched }
        let missing = missingByCell.reduce(0) { $0 + $1.1 }

        let cells: [String: Any] = Dictionary(uniqueKeysWithValues: summary.map { cell, entry in
            (cell.description, ["ok": entry.ok, "unexpected": Dictionary(uniqueKeysWithValues: entry.unexpected.map { ("\($0.key)", $0.value) })] as [String: Any])
        })
        let report: [String: Any] = [
            "connections": connections, "seconds": seconds, "connections_per_second": Double(connections) / max(seconds, 0.001),
            "failed_opens": failedOpens, "unexpected_outcomes": unexpected, "missing_outcomes": missing,
            "missing_by_cell": Dictionary(uniqueKeysWithValues: missingByCell.map { ($0.0.description, $0.1) }),
            "leaks": leaks, "before": baseline, "after": after, "cells": cells,
            "sluice_rss_before": rssBefore, "sluice_rss_after": process.residentBytes,
        ]
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print(String(format: "churn: %d connections in %.1fs (%.0f/s), %d failed opens, %d unexpected outcomes, %d missing", connections, seconds, Double(connections) / max(seconds, 0.001), failedOpens, unexpected, missing))
            for (cell, entry) in summary.sorted(by: { $0.key.description < $1.key.description }) {
                let others = entry.unexpected.map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")
                print("  \(cell.description.padding(toLength: 22, withPad: " ", startingAt: 0)) \(entry.ok) as expected (\(cell.expected))\(others.isEmpty ? "" : "; also \(others)")")
            }
            for (cell, count) in missingByCell { print("  \(cell): \(count) without an outcome") }
            print(leaks.isEmpty ? "no leaks: sluice holds what it held before" : "LEAKS: " + leaks.joined(separator: "; "))
        }
        if !leaks.isEmpty || unexpected > 0 || missing > 0 { throw ExitCode(1) }
    }

    /// A file beside this executable.
    static func besideMe(_ name: String) -> String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent(name).path
    }

    /// Opens one connection for `cell` and waits (bounded) until it has closed.
    static func open(_ cell: ChurnCell, id: Int, port: Int, source: SocketAddress?, group: any EventLoopGroup, tally: ChurnTally) async throws {
        var bootstrap = ClientBootstrap(group: group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ChurnClientHandler(cell: cell, id: id, tally: tally))
                }
            }
        if let source { bootstrap = bootstrap.bind(to: source) }
        let channel = try await bootstrap.connect(host: "127.0.0.1", port: port).get()
        let guardTimer = channel.eventLoop.scheduleTask(in: .seconds(30)) { channel.close(promise: nil) }
        try? await channel.closeFuture.get()
        guardTimer.cancel()
    }
}

/// The `sluice` process a churn runs through, on a configuration written for it, and what it
/// holds, read from its admin listener and `/proc`.
final class SluiceUnderTest: @unchecked Sendable {
    private let process = Process()
    private let lifeline = Pipe()
    /// Runs `sluice` (by `exec`, so it keeps this shell's pid) beside a watcher that kills it
    /// when stdin (our pipe) closes. The watcher closes every other descriptor: Foundation sees
    /// a child exit only once no descendant holds the socket it gave the child.
    static let watcher = #"parent=$$; exec 3<&0; (for fd in /proc/self/fd/*; do n=${fd##*/}; [ "$n" -gt 3 ] && eval "exec $n>&-"; done; read _ <&3; kill -9 $parent) < /dev/null > /dev/null 2>&1 & exec "$0" "$@" 3<&-"#
    let port: Int
    let adminPort: Int
    private let directory: String

    init(executable: String, backendPort: Int, closeTimeout: Int) throws {
        directory = NSTemporaryDirectory() + "sluice-churn-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = "\(directory)/sluice.yaml"
        try """
            admin: { address: "127.0.0.1:0" }
            limits: { max_connections: 15000, max_connections_per_ip: 15000 }
            listeners: [ { name: churn, address: "127.0.0.1:0", backlog: 4096 } ]
            routes:
              - name: churn
                match: { path_prefix: /ws }
                backends: ["ws://127.0.0.1:\(backendPort)"]
                websocket: { close_timeout: \(closeTimeout)s, connect_timeout: 2s, handshake_timeout: 2s }
                limits: { max_websockets: 15000, max_websockets_per_ip: 15000 }
            """.write(toFile: config, atomically: true, encoding: .utf8)
        guard FileManager.default.isExecutableFile(atPath: executable) else { throw ValidationError("no sluice executable at \(executable); build it or pass --sluice") }
        // Through a shell that execs it beside a watcher of our pipe: should this process die
        // without stopping it, the pipe closes and the watcher kills it.
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", Self.watcher, executable, "run", "--config", config, "--log-level", "notice"]
        process.standardInput = lifeline
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var ports: [String: Int] = [:]
        var line = ""
        let handle = errors.fileHandleForReading
        while ports.count < 2 {
            let byte = handle.readData(ofLength: 1)
            if byte.isEmpty { break }
            if byte == Data("\n".utf8) {
                if line.contains("listening"), let range = line.range(of: #"127\.0\.0\.1:(\d+)"#, options: [.regularExpression, .backwards]) {
                    ports[line.contains("admin listening") ? "admin" : "churn"] = Int(line[range].split(separator: ":").last!)
                }
                line = ""
            } else {
                line += String(decoding: byte, as: UTF8.self)
            }
        }
        guard let port = ports["churn"], let adminPort = ports["admin"] else {
            process.terminate()
            throw ValidationError("sluice did not report its listeners")
        }
        self.port = port
        self.adminPort = adminPort
        // Keep reading what it logs, so a full pipe never blocks it.
        Thread.detachNewThread { while !handle.availableData.isEmpty {} }
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        for _ in 0..<200 where process.isRunning { usleep(10_000) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    var residentBytes: Int {
        guard let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return (line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0) * 1024
        }
        return 0
    }

    /// What the process holds now.
    func holdings() async throws -> [String: Double] {
        let metrics = try await AdminProbe.get(port: adminPort, path: "/metrics")
        let connections = try await AdminProbe.get(port: adminPort, path: "/connections")
        let listed = (try? JSONSerialization.jsonObject(with: Data(connections.utf8)) as? [String: Any])?["total"] as? Int ?? -1
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.processIdentifier)/fd").count) ?? -1
        var values: [String: Double] = ["registry": Double(listed), "descriptors": Double(descriptors)]
        for name in ["sluice_websockets_active", "sluice_connections_active", "sluice_limit_websockets", "sluice_limit_tracked", "sluice_limit_connections", "sluice_limit_connection_addresses"] {
            values[name] = AdminProbe.sum(name, in: metrics)
        }
        return values
    }

    /// Waits (up to 30 s) until nothing is in flight (no connection, no WebSocket, no count) and,
    /// given a `baseline`, until the process holds exactly that; returns what it holds then.
    func settled(to baseline: [String: Double]?) async throws -> [String: Double] {
        let deadline = ContinuousClock.now + .seconds(30)
        var now = try await holdings()
        func quiet(_ values: [String: Double]) -> Bool {
            values.filter { $0.key != "descriptors" }.allSatisfy { $0.value == 0 }
        }
        while ContinuousClock.now < deadline {
            if let baseline {
                if now.allSatisfy({ $0.value <= (baseline[$0.key] ?? 0) }) { break }
            } else if quiet(now) {
                break
            }
            try await Task.sleep(for: .milliseconds(100))
            now = try await holdings()
        }
        return now
    }
}

/// Plain GETs to sluice's admin listener.
enum AdminProbe {
    static func get(port: Int, path: String) async throws -> String {
        let collected = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: String.self)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(BodyCollector(promise: collected))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "127.0.0.1")
        headers.add(name: "Connection", value: "close")
        channel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timer = channel.eventLoop.scheduleTask(in: .seconds(10)) { collected.fail(ChannelError.connectTimeout(.seconds(10))) }
        defer {
            timer.cancel()
            channel.close(promise: nil)
        }
        return try await collected.futureResult.get()
    }

    /// The sum of every sample of `name` in a Prometheus text exposition.
    static func sum(_ name: String, in text: String) -> Double {
        var total = 0.0
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let metric = line.prefix { $0 != "{" && $0 != " " }
            guard metric == name[...], let value = line.split(separator: " ").last.flatMap({ Double($0) }) else { continue }
            total += value
        }
        return total
    }

    private final class BodyCollector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        private let promise: EventLoopPromise<String>
        private var body = ""

        init(promise: EventLoopPromise<String>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head: break
            case .body(let buffer): body += String(buffer: buffer)
            case .end: promise.succeed(body)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.fail(ChannelError.eof)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.fail(error)
            context.close(promise: nil)
        }
    }
}
