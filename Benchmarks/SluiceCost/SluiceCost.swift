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
    Benchmark("relay-message") { benchmark in
        let probe = try RelayProbe(payloadSize: 64)
        for _ in 0..<10 { try probe.exchange() }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { blackHole(try probe.exchange()) }
        benchmark.stopMeasurement()
    }

    // An upgrade request screened (route, Origin, WebSocket fields, limits), its lease taken and
    // given back: what every WebSocket pays before its backend is dialed.
    Benchmark("admission-upgrade") { benchmark in
        let probe = try AdmissionProbe()
        try probe.admitAndRelease()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { try probe.admitAndRelease() }
        benchmark.stopMeasurement()
    }

    // A whole WebSocket: client connection, upgrade, backend dialed and its 101, a 64-byte
    // message each way, the close handshake, both connections closed; then with the access log on.
    Benchmark("websocket-lifetime") { benchmark in
        let probe = try GatewayProbe()
        try probe.webSocketLifetime()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { try probe.webSocketLifetime() }
        benchmark.stopMeasurement()
    }

    Benchmark("websocket-lifetime-logged") { benchmark in
        let probe = try GatewayProbe(accessLog: .file("/dev/null"))
        try probe.webSocketLifetime()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { try probe.webSocketLifetime() }
        benchmark.stopMeasurement()
    }

    // One GET on a kept-alive client connection, proxied on a pooled backend connection; then
    // with the access log on.
    Benchmark("proxy-request") { benchmark in
        let probe = try GatewayProbe()
        for _ in 0..<10 { try probe.proxyRequest() }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { try probe.proxyRequest() }
        benchmark.stopMeasurement()
    }

    Benchmark("proxy-request-logged") { benchmark in
        let probe = try GatewayProbe(accessLog: .file("/dev/null"))
        for _ in 0..<10 { try probe.proxyRequest() }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { try probe.proxyRequest() }
        benchmark.stopMeasurement()
    }
}
