import Logging
import Prometheus

/// Where a backend set's health changes go: `sluice_backend_up{route,backend}`, the check
/// latency histogram, ejections and retries counted, and a log line at each change of state.
struct BackendObserver: Sendable {
    let registry: PrometheusCollectorRegistry
    let logger: Logger

    static let checkBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5),
    ]

    private func labels(_ set: BackendSet, _ index: Int) -> [(String, String)] {
        [("route", set.routeName), ("backend", set.backend(index).url.text)]
    }

    /// Sets the `up` gauge of every backend of `set` (at start, and at each scrape).
    func publish(_ set: BackendSet) {
        for (index, view) in set.view().enumerated() {
            registry.namedGauge("sluice_backend_up", labels: labels(set, index), help: "1 when the backend takes new connections (not down, ejected or draining).")
                .set(Int64(view.state == .up ? 1 : 0))
        }
    }

    func checked(_ set: BackendSet, _ index: Int, latency: Duration) {
        registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(namespace: "sluice", metricName: "backend_check_duration", unitName: "seconds", helpText: "Time an active health check took, passed or failed."),
            labels: labels(set, index), buckets: Self.checkBuckets
        ).recordNanoseconds(latency.nanoseconds)
    }

    func changed(_ set: BackendSet, _ index: Int, up: Bool, reason: String) {
        publish(set)
        if up {
            logger.notice("backend up", metadata: ["route": "\(set.routeName)", "backend": "\(set.backend(index).url)"])
        } else {
            logger.warning("backend down", metadata: ["route": "\(set.routeName)", "backend": "\(set.backend(index).url)", "reason": "\(reason)"])
        }
    }

    func ejected(_ set: BackendSet, _ index: Int, for length: Duration, reason: String) {
        registry.namedCounter("sluice_backend_ejections_total", labels: labels(set, index), help: "Times passive health ejected the backend.").increment()
        publish(set)
        logger.warning("backend ejected", metadata: [
            "route": "\(set.routeName)", "backend": "\(set.backend(index).url)", "for": "\(length)", "reason": "\(reason)",
        ])
    }

    /// A request or upgrade was tried again on another backend, and why (`timeout`, `502`, …).
    func retried(_ set: BackendSet, _ index: Int, reason: String) {
        registry.namedCounter(
            "sluice_backend_retries_total", labels: labels(set, index) + [("reason", reason)],
            help: "Requests and upgrades tried again on another backend after this one failed before anything reached the client."
        ).increment()
    }
}
