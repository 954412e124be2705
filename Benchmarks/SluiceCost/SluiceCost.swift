import Benchmark
import Sluice

// What Sluice's hot paths allocate per operation, on embedded channels (no sockets, so the counts
// are the same on every run and every machine with this toolchain). Each sample is one operation;
// warm-up runs first, so the steady state is measured (pools filled, tables grown).
// `benchmarks/costs` runs this suite and checks it against Benchmarks/Thresholds: a count that
// grows fails CI. Only counts are measured: times on this noisy machine belong to benchmarks/compare.py.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.mallocCountTotal],
        warmupIterations: 50,
        scalingFactor: .one,
        maxDuration: .seconds(2),
        maxIterations: 2_000,
        thresholds: [.mallocCountTotal: .init(absolute: [.p90: 0])]
    )

    // A 64-byte binary message from the client to the backend and one back, relay running.
    probe("relay-message", warmUp: 10, { try RelayProbe(payloadSize: 64) }) { _ = try $0.exchange() }

    // An upgrade request screened (route, Origin, WebSocket fields, limits), its lease taken and
    // given back: what every WebSocket pays before its backend is dialed.
    probe("admission-upgrade", { try AdmissionProbe() }) { try $0.admitAndRelease() }

    // A whole WebSocket: client connection, upgrade, backend dialed and its 101, a 64-byte
    // message each way, the close handshake, both connections closed; then with the access log on.
    probe("websocket-lifetime", { try GatewayProbe() }) { try $0.webSocketLifetime() }
    probe("websocket-lifetime-logged", { try GatewayProbe(accessLog: .file("/dev/null")) }) { try $0.webSocketLifetime() }

    // One GET on a kept-alive client connection, proxied on a pooled backend connection (the
    // warm-up opens both); then with the access log on.
    probe("proxy-request", warmUp: 10, { try GatewayProbe() }) { try $0.proxyRequest() }
    probe("proxy-request-logged", warmUp: 10, { try GatewayProbe(accessLog: .file("/dev/null")) }) { try $0.proxyRequest() }

    // One GET on a client connection of its own (`Connection: close`): the connection's setup,
    // the request proxied on a pooled backend connection, the close.
    probe("proxy-request-new-connection", warmUp: 10, { try GatewayProbe() }) { try $0.proxyRequestOnNewConnection() }

    // One GET on a new stream of a kept HTTP/2 connection (h2c), proxied on a pooled backend
    // connection: the stream's child channel, admission, the exchange, the answer's frames.
    probe("http2-request", warmUp: 10, { try GatewayProbe() }) { try $0.http2Request() }
    // The same on Sluice's own HTTP/2 layer (`http2.engine: wire`): a stream with no channel.
    probe("http2-wire-request", warmUp: 10, { try GatewayProbe() }) { try $0.http2Request(engine: .wire) }
}

/// One benchmark: `make` builds the probe outside the measurement, `warmUp` operations run
/// unmeasured (pools filled, tables grown), then each sample is one operation.
func probe<Probe>(
    _ name: String, warmUp: Int = 1, _ make: @escaping @Sendable () throws -> Probe, _ operation: @escaping @Sendable (Probe) throws -> Void
) {
    Benchmark(name) { benchmark in
        let probe = try make()
        for _ in 0..<warmUp { try operation(probe) }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { try operation(probe) }
        benchmark.stopMeasurement()
    }
}
