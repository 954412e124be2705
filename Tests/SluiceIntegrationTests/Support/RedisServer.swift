import Foundation

/// A real `redis-server` on a loopback port, with nothing saved to disk; stopped with SIGKILL by
/// `stop()` or, if the test process dies first, by the watcher it is started beside.
final class RedisServer: @unchecked Sendable {
    static let executable = "/usr/bin/redis-server"
    private(set) var port = 0
    let password: String?
    /// A directory with `server.pem`, `server-key.pem` (for `localhost`) and `ca.pem`: the server
    /// then speaks TLS only.
    let tlsDirectory: String?
    private var process: ChildProcess?
    /// One per start: the watcher of each server reads its own (kept open while this lives).
    private var lifelines: [Pipe] = []

    init(password: String? = nil, tlsDirectory: String? = nil) async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.executable) else { throw PeerError(message: "needs redis-server (apt install redis-server)") }
        self.password = password
        self.tlsDirectory = tlsDirectory
        try await start(port: nil)
    }

    /// `redis://127.0.0.1:PORT/0`, or `rediss://localhost:PORT/0`.
    var url: String { tlsDirectory == nil ? "redis://127.0.0.1:\(port)/0" : "rediss://localhost:\(port)/0" }

    /// Starts the server (again, on the same port when given); retries another port when the
    /// chosen one was taken meanwhile.
    func start(port fixed: Int?) async throws {
        for _ in 0..<5 {
            let port = fixed ?? LocalPort.free()
            let process = ChildProcess()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            var arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"]
            if let directory = tlsDirectory {
                arguments[1] = "0"
                arguments += [
                    "--tls-port", "\(port)", "--tls-cert-file", "\(directory)/server.pem", "--tls-key-file", "\(directory)/server-key.pem",
                    "--tls-ca-cert-file", "\(directory)/ca.pem", "--tls-auth-clients", "no",
                ]
            }
            if let password { arguments += ["--requirepass", password] }
            process.arguments = ["-c", SluiceProcess.watcher, Self.executable] + arguments
            let lifeline = Pipe()
            lifelines.append(lifeline)
            process.standardInput = lifeline
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            self.process = process
            self.port = port
            for _ in 0..<100 {
                if (try? await command(["PING"])) == "PONG" { return }
                if !process.isRunning { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            stop()
            if fixed != nil { try await Task.sleep(for: .milliseconds(200)) }
        }
        throw PeerError(message: "redis-server did not start")
    }

    /// One command through `redis-cli`; its output, trimmed.
    func command(_ arguments: [String]) async throws -> String {
        let cli = ChildProcess()
        cli.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
        cli.arguments = ["-h", "127.0.0.1", "-p", "\(port)"] + (password.map { ["-a", $0, "--no-auth-warning"] } ?? [])
            + (tlsDirectory.map { ["--tls", "--cacert", "\($0)/ca.pem", "--sni", "localhost"] } ?? []) + arguments
        let output = Pipe()
        cli.standardOutput = output
        cli.standardError = FileHandle.nullDevice
        try cli.run()
        // Read while it runs (an answer larger than the pipe's buffer would otherwise hold it),
        // and bounded: a paused server would hold redis-cli for ever, and the end of file comes
        // once it exits or is killed.
        let reader = output.fileHandleForReading
        let reading = Task.detached { reader.readDataToEndOfFile() }
        cli.waitUntilExit(timeout: 30)
        let data = await reading.value
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func pause() { if let process { kill(process.processIdentifier, SIGSTOP) } }
    func resume() { if let process { kill(process.processIdentifier, SIGCONT) } }

    /// Kills it (its data is gone: nothing is saved).
    func stop() {
        process?.kill()
    }

    deinit { stop() }
}
