import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Sluice

/// `sluice-bench`: the load generator and echo backend Sluice is measured with.
///
/// Every run is bounded in time and refuses targets outside loopback.
@main
struct SluiceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice-bench",
        abstract: "Benchmark WebSocket relays on loopback.",
        subcommands: [Echo.self, Load.self, Hold.self, Tunnel.self, HTTP1Floor.self, HTTP2Floor.self, Churn.self, Probe.self]
    )

    static func main() async {
        // The floors run on the allocator settings the gateway runs on (`AllocatorTuning`), so
        // that what they cost is what Sluice's own layers would; the load generator and the
        // backends, which every target shares, keep glibc's defaults.
        if ["h1floor", "h2floor"].contains(CommandLine.arguments.dropFirst().first ?? "") { AllocatorTuning.applyByReexecuting() }
        // The load generator and the echo backend open thousands of descriptors from many
        // threads: without this, each doubling of their table stalls them for milliseconds and
        // the stall is measured as the gateway's latency (see DescriptorTable).
        DescriptorTable.reserve()
        do {
            var command = try parseAsRoot()
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// A WebSocket echo backend, the one every proxy gets in a comparison. It accepts
/// permessage-deflate when a client offers it (`load --deflate`).
struct Echo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve a WebSocket echo backend on loopback.")

    @OptionGroup var serve: ServeOptions

    func run() async throws {
        let target = try LoopbackTarget(hostPort: serve.listen)
        let backend = try await EchoBackend.start(group: MultiThreadedEventLoopGroup.singleton, host: target.host, port: target.port, deflate: true)
        FileHandle.standardOutput.write(Data("echo listening on \(target.host):\(backend.port)\n".utf8))
        try await Task.sleep(for: .seconds(serve.duration))
        await backend.stop()
    }
}

/// A host and port that must be on loopback.
struct LoopbackTarget {
    var host: String
    var port: Int

    init(hostPort: String) throws {
        guard let colon = hostPort.lastIndex(of: ":"), let port = Int(hostPort[hostPort.index(after: colon)...]) else {
            throw ValidationError("expected host:port, got \(hostPort)")
        }
        var host = String(hostPort[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        try Self.requireLoopback(host)
        self.host = host
        self.port = port
    }

    static func requireLoopback(_ host: String) throws {
        let isLoopback = host == "localhost" || host == "::1" || host.hasPrefix("127.")
        guard isLoopback else {
            throw ValidationError("sluice-bench only targets loopback (127.0.0.0/8, ::1, localhost), not \(host)")
        }
    }
}
