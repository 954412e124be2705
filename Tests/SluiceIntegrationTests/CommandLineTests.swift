import Foundation
import Sluice
import Testing

/// The `sluice` command as an operator runs it.
@Suite("sluice command")
struct CommandLineTests {
    static var root: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// Runs `sluice` with `arguments`; returns the exit status and what it printed.
    static func run(_ arguments: [String], input: String? = nil) async throws -> (status: Int32, output: String) {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: SluiceProcess.executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let stdin = Pipe()
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        for _ in 0..<600 where process.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (process.terminationStatus, output)
    }

    @Test("check accepts every shipped config", arguments: ["conf/sluice.yaml", "conf/examples/websocket-backends.yaml", "conf/examples/app.yaml"])
    func checkShipped(path: String) async throws {
        let result = try await Self.run(["check", "--config", "\(Self.root)/\(path)"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("routes:"))
    }

    @Test("passwd prints an htpasswd line whose bcrypt hash libxcrypt verifies; a user name with ':' is refused")
    func passwd() async throws {
        let result = try await Self.run(["passwd", "alice", "--cost", "10"], input: "correct horse\n")
        #expect(result.status == 0, "\(result.output)")
        let line = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(line.hasPrefix("alice:$2b$10$"), "\(line)")
        let hash = String(line.dropFirst("alice:".count))
        #expect(PasswordHasher.verify(password: "correct horse", hash: hash))
        #expect(!PasswordHasher.verify(password: "correct horsE", hash: hash))
        #expect(try await Self.run(["passwd", "a:b"], input: "x\n").status != 0)
        #expect(try await Self.run(["passwd", "bob"], input: "").status != 0)
    }

    @Test("check refuses a broken config, naming the key path and line")
    func checkBroken() async throws {
        let result = try await Self.run(["check", "--config", "\(Self.root)/Tests/Fixtures/broken.yaml"])
        #expect(result.status == 1)
        #expect(result.output.contains("broken.yaml:8: routes[0].backends[0]: scheme must be http, https, ws or wss"))
    }

    @Test("a mistyped subcommand gets the list of subcommands, not run's usage")
    func mistypedSubcommand() async throws {
        let result = try await Self.run(["chek", "--config", "conf/sluice.yaml"])
        #expect(result.status == 64)
        #expect(result.output.contains("unknown subcommand 'chek'") && result.output.contains("SUBCOMMANDS:"), "\(result.output)")
        #expect(!result.output.contains("Unexpected argument"), "\(result.output)")
    }

    @Test("the startup log names addresses as operators write them, and the configuration's version")
    func startupLog() async throws {
        let sluice = try SluiceProcess(yaml: """
            admin: { address: "127.0.0.1:0" }
            listeners: [ { name: plain, address: "127.0.0.1:0" } ]
            routes: [ { name: demo, builtin: demo } ]
            """, waitingFor: ["admin"])
        defer { sluice.stop() }
        // Generous: a debug build starting beside a busy test run.
        #expect(await sluice.logged("configuration in force", timeout: .seconds(60)))
        #expect(await sluice.logged("address=127.0.0.1:\(sluice.port) listener=plain", timeout: .seconds(60)))
        #expect(sluice.log.first { $0.contains("[IPv4]") } == nil)
    }

    @Test(
        "run as an unprivileged user it serves pages and WebSockets: no socket option it sets needs a privilege",
        .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), "needs root to switch to nobody")
    )
    func unprivileged() async throws {
        let sluice = try SluiceProcess(yaml: """
            listeners: [ { name: plain, address: "127.0.0.1:0" } ]
            routes:
              - { name: echo, match: { path_prefix: /echo }, backends: ["builtin:echo"] }
              - { name: demo, match: { path_prefix: / }, builtin: demo }
            """, user: "nobody")
        defer { sluice.stop() }
        let page = try await Curl.run(["http://127.0.0.1:\(sluice.port)/"])
        #expect(page.status == 200, "curl exit \(page.exitCode)")
        // A 1 MiB message, not the echo scenario's 16 MiB: what is tested is that the socket
        // options work unprivileged, not how fast a debug build compresses.
        let result = try await PythonPeer.run(["client", "echo", "ws://127.0.0.1:\(sluice.port)/echo", #"{"big": 1048576}"#])
        #expect(result["error"] == nil, "\(result)")
        #expect(result["checks"] as? [Bool] == [true, true, true, true, true], "\(result)")
    }

    @Test("the gateway runs with glibc's per-thread cache sized for its bursts, in the same process; an operator's own count is kept")
    func allocatorTuning() async throws {
        let yaml = """
            listeners: [ { name: plain, address: "127.0.0.1:0" } ]
            routes: [ { name: demo, match: { path_prefix: / }, builtin: demo } ]
            """
        /// The environment the running gateway was started with by its last `execve`, as the
        /// kernel shows it: glibc's loader cuts `GLIBC_TUNABLES` there at its first `:` (it
        /// reads the list in place), and a variable the process unset later still shows.
        func environment(of pid: Int32) throws -> [String: String] {
            let raw = try Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ"))
            var result: [String: String] = [:]
            for entry in raw.split(separator: 0) {
                let text = String(decoding: entry, as: UTF8.self)
                guard let equals = text.firstIndex(of: "=") else { continue }
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            return result
        }
        // No tunables of the test run's own: the gateway adds its count to an empty list.
        let tuned = try SluiceProcess(yaml: yaml, environment: ["GLIBC_TUNABLES": ""])
        defer { tuned.stop() }
        // The port was reported by the process Foundation started: the re-executed one kept its id.
        let page = try await Curl.run(["http://127.0.0.1:\(tuned.port)/"])
        #expect(page.status == 200, "curl exit \(page.exitCode)")
        let tunedEnvironment = try environment(of: tuned.pid)
        #expect(tunedEnvironment["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=65535", "\(tunedEnvironment["GLIBC_TUNABLES"] ?? "unset")")
        // Set for the re-executed process, which unsets it at once (so nothing it starts inherits it).
        #expect(tunedEnvironment["SLUICE_ALLOCATOR_TUNED"] == "1")
        // Re-executed by its own path: still named sluice (`ps`, `pgrep sluice`), not "exe".
        let name = try String(contentsOfFile: "/proc/\(tuned.pid)/comm", encoding: .utf8)
        #expect(name.trimmingCharacters(in: .whitespacesAndNewlines) == "sluice")

        let operatorSet = try SluiceProcess(yaml: yaml, environment: ["GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"])
        defer { operatorSet.stop() }
        let second = try await Curl.run(["http://127.0.0.1:\(operatorSet.port)/"])
        #expect(second.status == 200, "curl exit \(second.exitCode)")
        let operatorEnvironment = try environment(of: operatorSet.pid)
        #expect(operatorEnvironment["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=7")
        #expect(operatorEnvironment["SLUICE_ALLOCATOR_TUNED"] == nil, "re-executed though the operator set the count")
    }

    @Test("--version prints the version")
    func version() async throws {
        let result = try await Self.run(["--version"])
        #expect(result.status == 0)
        #expect(result.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
    }

    @Test("SIGTERM stops the gateway cleanly")
    func sigterm() async throws {
        let sluice = try SluiceProcess(yaml: """
            listeners:
              - { name: plain, address: "127.0.0.1:0" }
            routes:
              - { name: demo, match: { path_prefix: / }, builtin: demo }
            """)
        kill(sluice.pid, SIGTERM)
        var exited = false
        for _ in 0..<200 {
            if kill(sluice.pid, 0) != 0 || sluice.hasExited { exited = true; break }
            try await Task.sleep(for: .milliseconds(25))
        }
        #expect(exited)
        #expect(sluice.exitStatus == 0)
    }
}
