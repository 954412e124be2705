import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Sluice
import SluiceConfig
import UnixSignals

/// The `sluice` command: run the gateway, check a configuration, stop a running one.
@main
struct SluiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "A reverse proxy and WebSocket gateway.",
        version: SluiceVersion.current,
        subcommands: [Run.self, Check.self, Stop.self, Passwd.self],
        defaultSubcommand: Run.self
    )

    static let subcommandNames = ["run", "check", "stop", "passwd", "help"]

    /// `run` is the default, so a word that is no subcommand would reach `run` as an argument
    /// and get `run`'s usage back; it gets the list of subcommands instead.
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if let first = arguments.first, !first.hasPrefix("-"), !subcommandNames.contains(first) {
            printError("sluice: unknown subcommand '\(first)'; the subcommands are \(subcommandNames.dropLast().joined(separator: ", ")) (run is the default)\n")
            printError(helpMessage())
            Foundation.exit(64)
        }
        // The gateway itself (`run`, the default) gets glibc's per-thread cache sized for its
        // bursts of requests; the short-lived subcommands are not re-executed for it.
        if arguments.first.map({ $0 == "run" || $0.hasPrefix("-") }) ?? true { AllocatorTuning.applyByReexecuting() }
        await main(arguments)
    }
}

enum SluiceVersion {
    static let current = "0.1.0"
}

/// Options shared by the subcommands.
struct ConfigOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Path of the YAML configuration.")
    var config: String = "conf/sluice.yaml"

    @Option(name: .long, help: "Log level (trace, debug, info, notice, warning, error, critical); overrides the config, reloads included.")
    var logLevel: String?

    func load() throws -> Configuration {
        do {
            return try ConfigurationLoader.load(file: config)
        } catch {
            printError("sluice: invalid configuration:\n\(error.description)")
            throw ExitCode(1)
        }
    }

    func level(_ configuration: Configuration) throws -> Logger.Level {
        let name = logLevel ?? configuration.logLevel.rawValue
        guard let level = Logger.Level(rawValue: name) else {
            printError("sluice: unknown log level '\(name)'")
            throw ExitCode(1)
        }
        return level
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway (the default).")

    @OptionGroup var options: ConfigOptions

    @Option(help: "Event loop threads (default: one per core).")
    var eventLoopThreads: Int?

    func validate() throws {
        if let threads = eventLoopThreads, !(1...256).contains(threads) {
            throw ValidationError("--event-loop-threads must be 1...256")
        }
    }

    func run() async throws {
        // Every signal it answers is trapped before anything else: their default action ends the
        // process, and one that comes during startup waits here until the services run.
        let signals = await UnixSignalsSequence(trapping: .sighup, .sigusr1, .sigterm, .sigint)
        let configuration = try options.load()
        let control = LogLevelControl(try options.level(configuration), overridden: options.logLevel != nil)
        LoggingSystem.bootstrap { label in
            ControlledLogHandler(base: StreamLogHandler.standardError(label: label), control: control)
        }
        let logger = Logger(label: "sluice")
        // Before the event loops exist: the table's growths would stall them later (DescriptorTable).
        DescriptorTable.reserve()
        let group: any EventLoopGroup = eventLoopThreads.map { MultiThreadedEventLoopGroup(numberOfThreads: $0) } ?? MultiThreadedEventLoopGroup.singleton
        let notifier = ServiceManagerNotifier(environment: ProcessInfo.processInfo.environment)
        let gateway = Gateway(configuration: configuration, group: group, logger: logger, logLevel: control, notifier: notifier)
        do {
            try await gateway.start()
        } catch let error as ConfigError {
            printError("sluice: \(error.description)")
            throw ExitCode(1)
        } catch {
            printError("sluice: \(error)")
            throw ExitCode(1)
        }
        let serviceGroup = ServiceGroup(
            configuration: .init(services: gateway.parts(signals: signals), gracefulShutdownSignals: [], logger: logger)
        )
        gateway.onShutdownRequest { Task { await serviceGroup.triggerGracefulShutdown() } }
        notifier.notify("READY=1\nSTATUS=configuration \(gateway.configurationVersion)\nMAINPID=\(getpid())")
        do {
            try await serviceGroup.run()
        } catch {
            printError("sluice: \(error)")
            throw ExitCode(1)
        }
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate a configuration and print its listeners and routes.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let configuration = try options.load()
        do {
            try await Preflight.check(configuration)
        } catch {
            printError("sluice: invalid configuration:\n\(error.description)")
            throw ExitCode(1)
        }
        print(ConfigurationSummary.render(configuration))
        for warning in ConfigurationWarnings.compute(configuration) {
            print("warning: \(warning)")
        }
    }
}

struct Stop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drain and stop the gateway running on this configuration, through its admin listener (POST /drain)."
    )

    @OptionGroup var options: ConfigOptions

    @Flag(help: "Say the instance is restarting: live WebSockets get close code 1012 instead of 1001.")
    var restart = false

    @Option(help: "The admin listener's host:port, when the configuration's is not the bound one (port 0).")
    var admin: String?

    func run() async throws {
        let configuration = try options.load()
        guard let admin = configuration.admin else {
            printError("sluice: \(options.config) has no admin listener; stop the process with SIGTERM instead")
            throw ExitCode(1)
        }
        var headers: [String: String] = [:]
        if let file = admin.tokenFile {
            let token = (try? String(contentsOfFile: file, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            headers["Authorization"] = "Bearer \(token)"
        }
        var host = admin.address.host == "0.0.0.0" ? "127.0.0.1" : (admin.address.host == "::" ? "::1" : admin.address.host)
        var port = admin.address.port
        if let override = self.admin {
            guard let colon = override.lastIndex(of: ":"), let value = Int(override[override.index(after: colon)...]) else {
                printError("sluice: --admin takes host:port, got \(override)")
                throw ExitCode(1)
            }
            host = String(override[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            port = value
        }
        guard port != 0 else {
            printError("sluice: the admin listener's port is chosen by the OS (0); give it with --admin host:port")
            throw ExitCode(1)
        }
        let code = restart ? 1012 : 1001
        do {
            let answer = try await AdminRequest.post(host: host, port: port, path: "/drain?code=\(code)", headers: headers)
            print(answer.body.trimmingCharacters(in: .whitespacesAndNewlines))
            if answer.status != 202 { throw ExitCode(1) }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            printError("sluice: cannot reach the admin listener at \(admin.address): \(error)")
            throw ExitCode(1)
        }
    }
}

struct Passwd: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print an htpasswd line (bcrypt) for USER; the password is read from the terminal, or from stdin when piped."
    )

    @Argument(help: "The user name.")
    var user: String

    @Option(help: "bcrypt cost (2^cost rounds), 10...15.")
    var cost: Int = 12

    func validate() throws {
        guard !user.isEmpty, !user.contains(":"), !user.contains(where: \.isNewline) else {
            throw ValidationError("a user name cannot be empty or contain ':' or a newline")
        }
        guard (10...15).contains(cost) else { throw ValidationError("--cost must be 10...15") }
    }

    func run() throws {
        let password: String
        if isatty(STDIN_FILENO) != 0 {
            guard let first = PasswordPrompt.read("Password: "), let second = PasswordPrompt.read("Again: ") else { throw ExitCode(1) }
            guard first == second else {
                printError("sluice: the passwords differ")
                throw ExitCode(1)
            }
            password = first
        } else {
            guard let line = readLine(strippingNewline: true) else {
                printError("sluice: no password on stdin")
                throw ExitCode(1)
            }
            password = line
        }
        guard !password.isEmpty else {
            printError("sluice: empty password")
            throw ExitCode(1)
        }
        guard let hash = PasswordHasher.bcrypt(password: password, cost: cost) else {
            printError("sluice: libcrypt could not make a bcrypt hash")
            throw ExitCode(1)
        }
        print("\(user):\(hash)")
    }
}

/// Reads a line from the terminal with echo off.
enum PasswordPrompt {
    static func read(_ prompt: String) -> String? {
        FileHandle.standardError.write(Data(prompt.utf8))
        var saved = termios()
        tcgetattr(STDIN_FILENO, &saved)
        var silent = saved
        silent.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(STDIN_FILENO, TCSANOW, &silent)
        defer {
            tcsetattr(STDIN_FILENO, TCSANOW, &saved)
            FileHandle.standardError.write(Data("\n".utf8))
        }
        return readLine(strippingNewline: true)
    }
}
