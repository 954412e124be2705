import Foundation
import NIOConcurrencyHelpers
import SluiceConfig
import Testing
@testable import Sluice

/// A clock whose sleeps return at once, moving its time to their deadline: the drain's waits
/// run in virtual time, and what happened when can be read off it.
final class JumpingClock: Clock, @unchecked Sendable {
    struct Instant: InstantProtocol {
        var offset: Duration
        func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
    }

    private let lock = NIOLock()
    private var current = Instant(offset: .zero)
    var now: Instant { lock.withLock { current } }
    var minimumResolution: Duration { .nanoseconds(1) }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        lock.withLock { if deadline > current { current = deadline } }
    }
}

@Suite("Lifecycle: drain, file watch, service manager, configuration")
struct LifecycleTests {
    /// What the drain's steps saw, with the virtual time of each.
    final class Record: @unchecked Sendable {
        private let lock = NIOLock()
        private var events: [(String, Duration)] = []
        func add(_ event: String, _ at: Duration) { lock.withLock { events.append((event, at)) } }
        var all: [(String, Duration)] { lock.withLock { events } }
    }

    static func settings(readiness: Duration = .seconds(2), window: Duration = .seconds(10), deadline: Duration = .seconds(30)) -> ShutdownConfiguration {
        var settings = ShutdownConfiguration()
        settings.readinessDelay = readiness
        settings.drainWindow = window
        settings.deadline = deadline
        return settings
    }

    @Test("a drain announces, waits the readiness delay, stops accepting, spreads the closes, and ends when nothing is left")
    func drainOrder() async {
        let clock = JumpingClock()
        let record = Record()
        // Connections end one by one, the last 7 s after the closes start.
        let outcome = await DrainProcedure(Self.settings(), clock: clock).run(DrainSteps(
            announce: { record.add("announce", clock.now.offset) },
            stopAccepting: { record.add("stop accepting", clock.now.offset) },
            closeWebSockets: { window in record.add("close within \(window)", clock.now.offset) },
            remaining: { clock.now.offset < .seconds(9) ? 3 : 0 },
            forceClose: { record.add("force", clock.now.offset) }
        ))
        #expect(outcome.forced == 0)
        #expect(record.all.map(\.0) == ["announce", "stop accepting", "close within 10.0 seconds"])
        #expect(record.all.map(\.1) == [.zero, .seconds(2), .seconds(2)])
        #expect(clock.now.offset >= .seconds(9) && clock.now.offset < .seconds(9) + .milliseconds(21))
    }

    @Test("what is still open at the deadline is closed then, counted from the start")
    func drainDeadline() async {
        let clock = JumpingClock()
        let record = Record()
        let outcome = await DrainProcedure(Self.settings(readiness: .seconds(1), window: .seconds(3), deadline: .seconds(6)), clock: clock).run(DrainSteps(
            announce: {}, stopAccepting: {}, closeWebSockets: { _ in },
            remaining: { 2 },
            forceClose: { record.add("force", clock.now.offset) }
        ))
        #expect(outcome.forced == 2)
        #expect(record.all.map(\.1) == [.seconds(6)])
    }

    @Test("a listener removed by a reload drains without the readiness delay")
    func removedListenerDrain() async {
        let clock = JumpingClock()
        let record = Record()
        _ = await DrainProcedure(Self.settings(), announced: false, clock: clock).run(DrainSteps(
            announce: {}, stopAccepting: { record.add("stop", clock.now.offset) }, closeWebSockets: { _ in }, remaining: { 0 }, forceClose: {}
        ))
        #expect(record.all.map(\.1) == [.zero])
    }

    @Test("the closes of a drain are spread over the window, never in one burst")
    func spread() {
        var generator = SystemRandomNumberGenerator()
        let offsets = DrainSchedule.offsets(count: 1000, window: .seconds(10), using: &generator)
        #expect(offsets.count == 1000)
        #expect(offsets.allSatisfy { $0 >= .zero && $0 < .seconds(10) })
        var buckets = [Int](repeating: 0, count: 10)
        for offset in offsets { buckets[Int(offset.components.seconds)] += 1 }
        // Uniform: about 100 a second; a burst would put most in one.
        #expect(buckets.allSatisfy { (40...180).contains($0) }, "\(buckets)")
        #expect(DrainSchedule.offsets(count: 3, window: .zero, using: &generator) == [.zero, .zero, .zero])
    }

    @Test("the file watcher reports a change once the files have stayed still for a poll")
    func fileWatcher() {
        var stamps: [String: FileWatcher.Stamp?] = ["a": .init(size: 1, modified: 1, inode: 1), "b": nil]
        let read = { (path: String) -> FileWatcher.Stamp? in stamps[path] ?? nil }
        var watcher = FileWatcher(files: ["a", "b"], stamp: read)
        var seen: [Bool] = []
        func poll() { seen.append(watcher.poll(stamp: read)) }
        poll()
        stamps["a"] = .init(size: 2, modified: 2, inode: 1)
        poll()  // seen; waits a poll in case it is still being written
        stamps["b"] = .init(size: 5, modified: 3, inode: 2)
        poll()  // changed again: waits again
        poll()  // still: reload
        poll()  // and only once
        stamps["a"] = nil  // a file removed is a change too
        poll()
        poll()
        #expect(seen == [false, false, false, true, false, false, true])
    }

    @Test("sd_notify messages reach the NOTIFY_SOCKET datagram socket; without one nothing is sent")
    func notify() throws {
        let path = NSTemporaryDirectory() + "sluice-notify-\(UUID().uuidString.prefix(8))"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer {
            close(fd)
            unlink(path)
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0)
        let notifier = ServiceManagerNotifier(environment: ["NOTIFY_SOCKET": path])
        #expect(notifier.notify("READY=1\nSTATUS=testing"))
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        #expect(String(decoding: buffer.prefix(max(0, count)), as: UTF8.self) == "READY=1\nSTATUS=testing")
        #expect(!ServiceManagerNotifier(environment: [:]).notify("READY=1"))
    }

    @Test("reload and shutdown settings decode, and a drain deadline shorter than its parts is refused")
    func configuration() throws {
        let base = "listeners: [ { name: a, address: \"127.0.0.1:0\" } ]\nroutes: [ { name: r, builtin: demo } ]\n"
        let parsed = try ConfigurationLoader.parse(yaml: base + "reload: { watch: true, watch_interval: 500ms }\nshutdown: { readiness_delay: 1s, drain_window: 5s, deadline: 20s }\n", baseDirectory: "/")
        #expect(parsed.reload.watch && parsed.reload.watchInterval == .milliseconds(500))
        #expect(parsed.shutdown.readinessDelay == .seconds(1) && parsed.shutdown.drainWindow == .seconds(5) && parsed.shutdown.deadline == .seconds(20))
        // A route without `match:` matches everything, as its fields' defaults do.
        #expect(parsed.routes[0].match.pathPrefix == "/" && parsed.routes[0].match.host == nil)
        #expect(throws: ConfigErrors.self) {
            try ConfigurationLoader.parse(yaml: base + "shutdown: { readiness_delay: 5s, drain_window: 10s, deadline: 12s }\n", baseDirectory: "/")
        }
        // The version follows the text.
        let again = try ConfigurationLoader.parse(yaml: base, baseDirectory: "/")
        #expect(again.version == (try ConfigurationLoader.parse(yaml: base, baseDirectory: "/")).version)
        #expect(again.version != parsed.version && again.version.count == 16)
    }

    @Test("the files a configuration reads are listed for the watch; the access log it writes is not")
    func referencedFiles() throws {
        let directory = NSTemporaryDirectory() + "sluice-files-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for name in ["a.pem", "a-key.pem"] { _ = FileManager.default.createFile(atPath: "\(directory)/\(name)", contents: Data("x".utf8)) }
        try "0123456789abcdef0123".write(toFile: "\(directory)/token", atomically: true, encoding: .utf8)
        let yaml = """
            access_log: \(directory)/sluice.jsonl
            admin: { address: "127.0.0.1:0", token_file: token }
            listeners:
              - name: a
                address: "127.0.0.1:0"
                tls: { certificates: [ { cert: a.pem, key: a-key.pem } ] }
            routes: [ { name: r, builtin: demo } ]
            """
        let parsed = try ConfigurationLoader.parse(yaml: yaml, baseDirectory: directory)
        #expect(parsed.referencedFiles == ["\(directory)/a-key.pem", "\(directory)/a.pem", "\(directory)/token"])
    }

    @Test("a certificate file that does not exist is reported with its key path and line")
    func missingCertificateLine() {
        let yaml = """
            listeners:
              - name: a
                address: "127.0.0.1:0"
                tls:
                  certificates:
                    - { cert: /nonexistent/a.pem, key: /nonexistent/a-key.pem }
            routes: [ { name: r, builtin: demo } ]
            """
        do {
            _ = try ConfigurationLoader.parse(yaml: yaml, baseDirectory: "/")
            Issue.record("accepted")
        } catch {
            let cert = error.errors.first { $0.path == "listeners[0].tls.certificates[0].cert" }
            #expect(cert?.line == 6, "\(error)")
            #expect(cert?.description.contains("line 6") == true || cert?.description.contains(":6") == true, "\(error)")
        }
    }

    @Test("the demo page is served at its prefix, not for every path under it")
    func demoPaths() {
        #expect(DemoPage.serves("/", prefix: "/"))
        #expect(DemoPage.serves("/index.html", prefix: "/"))
        #expect(!DemoPage.serves("/favicon.ico", prefix: "/"))
        #expect(DemoPage.serves("/demo", prefix: "/demo") && DemoPage.serves("/demo/index.html", prefix: "/demo"))
        #expect(!DemoPage.serves("/demo/x", prefix: "/demo"))
    }
}
