import ArgumentParser
import Sluice

/// Repeats one of the cost benchmarks' probes (`Benchmarks/SluiceCost`) in a plain process, for
/// profilers that cannot run beside the benchmark's malloc interposer (`perf record -e cpu-clock
/// sluice-bench probe --operation websocket-lifetime --count 100000`).
struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Repeat one cost-benchmark probe (for profilers).")

    enum Operation: String, ExpressibleByArgument, CaseIterable {
        case relayMessage = "relay-message"
        case admissionUpgrade = "admission-upgrade"
        case websocketLifetime = "websocket-lifetime"
        case proxyRequest = "proxy-request"
        case http2Request = "http2-request"
        case http2WireRequest = "http2-wire-request"
    }

    @Option(help: "The operation: \(Operation.allCases.map(\.rawValue).joined(separator: ", ")).")
    var operation: Operation

    @Option(help: "How many times, after 10 untimed warm-up runs.")
    var count = 1000

    func run() throws {
        let once: () throws -> Void
        switch operation {
        case .relayMessage:
            let probe = try RelayProbe(payloadSize: 64)
            once = { _ = try probe.exchange() }
        case .admissionUpgrade:
            let probe = try AdmissionProbe()
            once = { try probe.admitAndRelease() }
        case .websocketLifetime:
            let probe = try GatewayProbe()
            once = { try probe.webSocketLifetime() }
        case .proxyRequest:
            let probe = try GatewayProbe()
            once = { try probe.proxyRequest() }
        case .http2Request:
            let probe = try GatewayProbe()
            once = { try probe.http2Request() }
        case .http2WireRequest:
            let probe = try GatewayProbe()
            once = { try probe.http2Request(engine: .wire) }
        }
        for _ in 0..<(10 + count) { try once() }
    }
}
