#if canImport(Glibc)
import Glibc
#endif
import Prometheus

/// `process_*` gauges as Prometheus client libraries name them, read from `/proc/self` at
/// each scrape (Linux; elsewhere they stay 0).
final class ProcessMetrics: Sendable {
    private let residentMemory: Gauge
    private let virtualMemory: Gauge
    private let openFDs: Gauge
    private let maxFDs: Gauge
    private let cpuSeconds: Gauge
    private let startTime: Gauge

    init(registry: PrometheusCollectorRegistry) {
        func gauge(_ name: String, _ unit: String, _ help: String) -> Gauge {
            registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "process", metricName: name, unitName: unit, helpText: help))
        }
        residentMemory = gauge("resident_memory", "bytes", "Resident memory size in bytes.")
        virtualMemory = gauge("virtual_memory", "bytes", "Virtual memory size in bytes.")
        openFDs = gauge("open", "fds", "Number of open file descriptors.")
        maxFDs = gauge("max", "fds", "Maximum number of open file descriptors.")
        cpuSeconds = gauge("cpu_seconds", "total", "Total user and system CPU time spent in seconds.")
        startTime = gauge("start_time", "seconds", "Start time of the process since unix epoch in seconds.")
    }

    func update() {
        #if os(Linux)
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        if let stat = Self.read("/proc/self/stat"), let close = stat.lastIndex(of: ")") {
            // Fields after the command name; utime is field 14, stime 15, starttime 22,
            // vsize 23, rss 24 (1-based, counting pid and comm as 1 and 2).
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            func field(_ number: Int) -> Double { Double(fields[number - 3]) ?? 0 }
            if fields.count >= 22 {
                cpuSeconds.set((field(14) + field(15)) / ticks)
                virtualMemory.set(field(23))
                residentMemory.set(field(24) * pageSize)
                if let uptime = Self.read("/proc/uptime")?.split(separator: " ").first.flatMap({ Double($0) }) {
                    var now = timespec()
                    clock_gettime(CLOCK_REALTIME, &now)
                    let bootTime = Double(now.tv_sec) - uptime
                    startTime.set((bootTime + field(22) / ticks).rounded())
                }
            }
        }
        openFDs.set(Int64(Self.countOpenFiles()))
        var limit = rlimit()
        if getrlimit(Self.fileLimitResource, &limit) == 0 { maxFDs.set(Int64(clamping: limit.rlim_cur)) }
        #endif
    }

    #if os(Linux)
    private static let fileLimitResource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)

    private static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let count = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        return String(decoding: bytes[0..<count], as: UTF8.self)
    }

    private static func countOpenFiles() -> Int {
        guard let directory = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { $0.first == UInt8(ascii: ".") }
            if !isDot { count += 1 }
        }
        return max(0, count - 1)  // the directory handle itself
    }
    #endif
}
